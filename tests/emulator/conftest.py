"""The emulator's own tests get its fixture here; the rest of the suite imports it from fixtures.py."""
from tests.emulator.fixtures import runpod_emulator  # noqa: F401

"""What the stages log, as "LEVEL message" lines, for tests that check a warning was (or was not) given."""
import pytest
from loguru import logger


@pytest.fixture
def warnings():
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(str(m)), level="DEBUG", format="{level} {message}")
    yield seen
    logger.remove(sink)

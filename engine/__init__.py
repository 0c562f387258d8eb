"""lorapod's engine: config schema, validation, the stage runner, providers and transports."""
import engine.schema  # noqa: F401  (registers the config schemas before Hydra composes)
from engine.runner import exit_status, objective, run

__all__ = ["run", "exit_status", "objective"]

"""Every error lorapod raises on purpose. A leaf module: it imports nothing else of ours.

A message says what failed, why, and what to do next; `hint` carries the last part so the console can show
it on its own line. Causes are chained with `raise ... from`.
"""
from __future__ import annotations


class LorapodError(Exception):
    """Root of lorapod's errors; anything else escaping a stage is a bug and is reported as one."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  -> {self.hint}" if self.hint else self.message


class ConfigError(LorapodError):
    """The composed config is invalid. Raised before any side effect, listing every problem at once."""

    exit_code = 2

    def __init__(self, problems: list[str], hint: str | None = None):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config ({len(self.problems)} problem(s)):\n{lines}", hint)


class DatasetError(LorapodError):
    """The memories or dataset cannot be turned into something worth training on."""

    exit_code = 2


class ProviderError(LorapodError):
    """Renting, watching or deleting a machine failed."""


class CapacityError(ProviderError):
    """The provider has no machine of the requested kind right now; another GPU or cloud may have one."""


class TransportError(LorapodError):
    """Running a command on the pod or moving a file to or from it failed."""


class HostKeyError(TransportError):
    """The pod's SSH host key differs from the one pinned at first contact."""


class StageError(LorapodError):
    """A stage could not do its job for a reason it understands."""


class Interrupted(LorapodError):
    """Ctrl-C or SIGTERM arrived; the run stops and the always-stages still run."""

    exit_code = 130


class Detached(LorapodError):
    """Not a failure: the run returns on purpose with training going on (provider.detach=true); the pod keeps
    running, nothing after the raising stage runs, and `python -m engine.attach RUN_DIR` picks it up."""

    exit_code = 0

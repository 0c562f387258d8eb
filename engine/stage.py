"""What a stage is: a small object with a name, an `always` flag and run(ctx). No base class required.

Stages are listed in `pipeline.stages` by Hydra `_target_`, so any importable class with this shape can
be added, dropped or replaced from YAML or the command line.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from engine.context import RunContext


@runtime_checkable
class Stage(Protocol):
    name: str  # set by the engine from the key in pipeline.stages when the class leaves it empty
    always: bool  # runs even after an earlier failure or an interrupt (terminate)

    def run(self, ctx: RunContext) -> None: ...


class BaseStage:
    """Defaults for the protocol; stages may subclass it or not."""

    name = ""
    always = False

    def run(self, ctx: RunContext) -> None:  # pragma: no cover - the protocol's shape
        raise NotImplementedError

"""What a stage is: a small object with a name, an `always` flag and run(ctx). No base class required.

Stages are listed in `pipeline.stages` by Hydra `_target_`, so any importable class with this shape can
be added, dropped or replaced from YAML or the command line.
"""
from __future__ import annotations

import importlib
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


def pipeline_rents(cfg) -> bool:
    """Whether a stage of cfg's pipeline rents a machine (a class with `rents = True`, like deploy): only then does
    a provider need its credentials (pipeline=plan and pipeline=prepare need none). A stage that cannot be
    imported counts as renting: validation reports it anyway, and the harsher reading asks for the key."""
    for node in cfg.pipeline.stages.values():
        target = node.get("_target_") if hasattr(node, "get") else None
        module, _, attr = str(target or "").rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError):
            return True
        if getattr(cls, "rents", False):
            return True
    return False

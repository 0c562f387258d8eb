"""Sweeps: what spans the jobs of one multirun (parallel jobs, their stop, the final table)."""
from __future__ import annotations

from pathlib import Path


def folder() -> Path | None:
    """The folder of the multirun this job belongs to (absolute: hydra.job.chdir is false); None for a single run
    or a run outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return Path(hc.sweep.dir).absolute()

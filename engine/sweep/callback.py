"""The Hydra callback behind every sweep (conf/config.yaml: hydra.callbacks.sweep).

Hydra calls on_multirun_start and on_multirun_end in the sweep's main process, once per sweep, whatever the
launcher (basic, joblib) or sweeper (basic, Optuna: it launches several times into one sweep folder). Its state
lives in engine.sweep.outcome: Hydra pickles the callback to joblib's workers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from engine.sweep import outcome

        launcher = str(config.hydra.launcher.get("_target_", ""))
        # hydra.sweep.dir is relative to where run.py was started (hydra.job.chdir is false)
        outcome.start(Path(str(config.hydra.sweep.dir)).resolve(),
                      parallel_jobs="joblib" in launcher.lower() and _joblib_workers(config) > 1)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from engine.sweep import outcome

        outcome.finish()


def _joblib_workers(config: DictConfig) -> int:
    """How many processes joblib runs the jobs in. At 1 (n_jobs=1, or -1 on a one-CPU machine) joblib runs them
    in this process, one after another: then they hear Ctrl-C directly, as with the basic launcher, and the
    parallel sweep's signal guard, which blocks it here to forward it to workers, must stay off."""
    from joblib import effective_n_jobs

    n_jobs = config.hydra.launcher.get("n_jobs")
    try:
        return effective_n_jobs(-1 if n_jobs is None else int(n_jobs))
    except (TypeError, ValueError):
        return 2  # not a number joblib takes: it will say so; the guard is the safe side for many workers

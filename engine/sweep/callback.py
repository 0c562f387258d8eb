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
        outcome.start(Path(str(config.hydra.sweep.dir)).resolve(), parallel_jobs="joblib" in launcher.lower())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from engine.sweep import outcome

        outcome.finish()

"""The number a sweeper minimises: a run's eval loss after training, as its run-summary.json records it.

hydra-optuna-sweeper calls float() on what run.py's task returns; None cannot be cast, so Optuna records that
trial as FAIL. In hydra-optuna-sweeper 1.3.0 (_impl.py) that None is also counted among the batch's failures,
so with hydra.sweeper.max_failure_rate below the failed share (the default 0.0) each such batch logs an ERROR
"Failed [...] times"; the study still goes on, because the job itself COMPLETED and JobReturn.return_value
raises only for a job that crashed. conf/experiment/optuna_lr_rank.yaml sets max_failure_rate: 1.0 so a failed
run does not look like a crash. A run that did not succeed, or whose eval loss is missing or not finite (a diverged
run's NaN), is None: its number would not be comparable with the others'.
"""
from __future__ import annotations

import logging
import math

STUDY_LOGGER = "hydra_plugins.hydra_optuna_sweeper"  # where the sweeper says which trial failed and which won


def of(summary: dict) -> float | None:
    """eval_loss_after of a succeeded run's summary (engine/summary.py); None for any other run."""
    if summary.get("status") != "succeeded":
        return None
    loss = (summary.get("metrics") or {}).get("eval_loss_after")
    try:
        value = float(loss)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def show_study_lines() -> None:
    """Let the Optuna sweeper's INFO lines through (its best parameters and value, at the end of a study): the
    console hides Hydra's own INFO (hydra/hydra_logging: none), and engine/logs.py passes the rest to loguru."""
    logging.getLogger(STUDY_LOGGER).setLevel(logging.INFO)

"""The number run.py hands a sweeper: a succeeded run's eval loss after training, None for anything else."""
from __future__ import annotations

import pytest

from engine.sweep.objective import of


def summary(status="succeeded", **metrics):
    return {"status": status, "metrics": {"train_loss": 1.5, "eval_loss_before": 2.0, **metrics}}


def test_a_succeeded_run_gives_its_eval_loss_after_training():
    assert of(summary(eval_loss_after=1.25)) == 1.25


@pytest.mark.parametrize("status", ["failed", "interrupted", "refused", "detached"])
def test_a_run_that_did_not_succeed_gives_none_even_with_a_loss(status):
    assert of(summary(status, eval_loss_after=1.25)) is None


@pytest.mark.parametrize("loss", [None, float("nan"), float("inf"), "n/a"])
def test_a_missing_or_meaningless_loss_gives_none(loss):
    assert of(summary(eval_loss_after=loss)) is None


def test_a_run_that_never_trained_gives_none():
    assert of({"status": "succeeded", "metrics": None}) is None

"""train.report_to: passed to the trainer; TensorBoard's event files are written in out/ and come home."""
from __future__ import annotations

import json

from tests.conftest import run_lorapod


def test_tensorboard_writes_the_runs_losses_and_they_come_home(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = run_lorapod("train.max_steps=3", "train.report_to=[tensorboard]", run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    events = sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in run_dir.rglob("*"))
    result = json.loads((run_dir / "result.json").read_text())
    assert any(rel.startswith("tensorboard/") for rel in result["files"]), "listed, so fetch checks its sha256"
    # On the pod it was written in the run's out/ folder, whence it was fetched.
    remote = next((run_dir / "pod").rglob("out/tensorboard"))
    assert {p.name for p in remote.rglob("events.out.tfevents.*")} == {p.name for p in events}

    scalars = EventAccumulator(str(events[0].parent)).Reload()
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in logged if "loss" in r]
    assert len(train_losses) == 3
    assert [round(e.value, 4) for e in scalars.Scalars("train/loss")] == [round(v, 4) for v in train_losses]
    assert "eval/loss" in scalars.Tags()["scalars"]


def test_without_report_to_nothing_is_written_for_trackers(default_run):
    assert default_run.proc.returncode == 0, default_run.output
    assert not (default_run.run_dir / "tensorboard").exists()
    assert not list((default_run.run_dir / "pod").rglob("tfevents"))


def test_an_unknown_tracker_is_a_config_error_naming_the_key(run_dir):
    run = run_lorapod("train.report_to=[tensorboard,comet]", run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    assert "train.report_to" in run.output and "comet" in run.output
    assert "[command line: train.report_to=[tensorboard,comet]]" in run.output
    assert not (run_dir / "dataset").exists(), "nothing ran"
    both = run_lorapod("train.report_to=[none,wandb]", run_dir=run_dir.parent / "both")
    assert both.proc.returncode == 2 and "none cannot be combined" in both.output

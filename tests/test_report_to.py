"""train.report_to: passed to the trainer; TensorBoard's event files are written in out/ and come home."""
from __future__ import annotations

import json

import pytest

from tests.conftest import lorapod_env, run_lorapod


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


def test_a_tracker_missing_from_the_pods_closure_is_refused_before_anything_is_rented(run_dir):
    run = run_lorapod("gpu=rtx5090", "train.report_to=[tensorboard]", "provider.api_url=http://127.0.0.1:9/v2",
                      run_dir=run_dir, env=lorapod_env(RUNPOD_API_KEY="rpa_not_a_real_key"))
    assert run.proc.returncode == 2, run.output
    assert "train.report_to: tensorboard needs the tensorboard package on the pod" in run.output
    assert "remote_image/requirements.txt (image.requirements" in run.output
    assert set(run.summary["stages"]) == {"config"}, "nothing ran, nothing was rented"


def trackers_problems(*overrides: str) -> list:
    from engine.validate import _import_target, check_trackers
    from tests.test_config import composed

    cfg = composed(*overrides)
    return check_trackers(cfg, _import_target(cfg.provider._target_))


def test_a_closure_that_lists_the_trackers_package_passes_and_one_that_does_not_names_each(tmp_path):
    closure = tmp_path / "requirements.txt"
    closure.write_text("# a closure\ntorch==2.10.0\nTensorBoardX==2.6.2  # tensorboard's writer, either will do\n")
    ok = trackers_problems("gpu=rtx5090", "train.report_to=[tensorboard]", f"image.requirements={closure}")
    assert ok == []
    missing = trackers_problems("gpu=rtx5090", "train.report_to=[tensorboard,mlflow,wandb]",
                                f"image.requirements={closure}")
    assert [rule.split(" needs")[0] for key, rule in missing if key == "train.report_to"] == ["mlflow", "wandb"]
    assert all(str(closure) in rule and "add " in rule for _, rule in missing)


@pytest.mark.parametrize("overrides", [("gpu=rtx5090", "image=lorapod"), ("gpu=rtx5090", "remote.python=/opt/py"),
                                       ("train.max_steps=2",)])
def test_an_image_with_its_own_stack_or_your_own_machine_is_left_to_the_pods_backstop(overrides):
    # image.python / remote.python: the image's packages cannot be read from here; local: no closure is installed
    assert trackers_problems("train.report_to=[wandb]", *overrides) == []

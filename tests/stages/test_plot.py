"""The loss curve: <run>/loss.png from what came home, a real PNG that shows the run's own numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages import plot
from stages.train import EVENT_PREFIX

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode(path: Path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    return matplotlib.image.imread(path)  # (height, width, channels) floats


def write_metrics(folder: Path, losses: list[float], evals: dict[int, float]) -> None:
    lines = [json.dumps({"step": s, "eval_loss": v}) for s, v in evals.items()]
    lines += [json.dumps({"step": i + 1, "loss": v, "learning_rate": 1e-4}) for i, v in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_a_local_run_leaves_its_loss_curve(default_run):
    assert default_run.proc.returncode == 0, default_run.output
    path = default_run.run_dir / "loss.png"
    assert default_run.summary["paths"]["plot"] == str(path)
    image = decode(path)
    assert image.shape[:2] == (plot.SIZE_IN[1] * plot.DPI, plot.SIZE_IN[0] * plot.DPI)
    # Not a blank canvas: many distinct colours (two curves, axes, text), and the train curve's blue is there.
    pixels = image[..., :3].reshape(-1, 3)
    assert len({tuple(p) for p in (pixels * 255).round().astype(int)[::7]}) > 20
    blue = (abs(pixels[:, 0] - 0x1f / 255) < 0.05) & (abs(pixels[:, 1] - 0x77 / 255) < 0.05) & (abs(pixels[:, 2] - 0xb4 / 255) < 0.05)
    assert blue.sum() > 100
    assert "loss curve" in default_run.output


def test_two_runs_with_different_losses_draw_different_curves(tmp_path):
    images = []
    for name, losses in (("a", [3.0, 2.5, 2.0, 1.8]), ("b", [3.0, 3.2, 2.9, 3.1])):
        folder = tmp_path / name
        folder.mkdir()
        write_metrics(folder, losses, {0: 3.1, 4: losses[-1] + 0.1})
        train, evals, source = plot.curves(folder)
        assert source == "metrics.jsonl" and list(train.values()) == losses
        plot.draw(train, evals, folder / "loss.png", "same title")
        images.append(decode(folder / "loss.png"))
    assert images[0].shape == images[1].shape
    assert (abs(images[0] - images[1]) > 0.1).any()


def test_without_metrics_the_train_log_and_result_json_are_read(tmp_path):
    events = [{"event": "eval", "phase": "before", "eval_loss": 4.0}, {"event": "step", "step": 1, "loss": 3.5},
              {"event": "step", "step": 2, "loss": "not a number"}, {"event": "step", "step": 3, "loss": 3.0},
              {"event": "eval", "phase": "after", "eval_loss": 3.2}]
    lines = ["some pod output"] + [EVENT_PREFIX + json.dumps(e) for e in events] + [EVENT_PREFIX + "{broken"]
    (tmp_path / "train.log").write_text("\n".join(lines) + "\n")
    train, evals, source = plot.curves(tmp_path)
    assert (train, evals, source) == ({1: 3.5, 3: 3.0}, {0: 4.0, 3: 3.2}, "train.log")

    only_result = tmp_path / "result-only"
    only_result.mkdir()
    (only_result / "result.json").write_text(json.dumps({"steps": 7, "eval_loss_before": 2.0, "eval_loss_after": 1.5}))
    assert plot.curves(only_result) == ({}, {0: 2.0, 7: 1.5}, "train.log")


@pytest.mark.parametrize("content", [None, "", "{not json\n", json.dumps({"step": 1, "loss": float("nan")})])
def test_nothing_to_draw_is_quiet(tmp_path, content):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    train, evals, _ = plot.curves(tmp_path)
    assert train == {} and evals == {}


def test_a_plot_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path, warnings):
    from omegaconf import OmegaConf

    from engine.context import RunContext
    from engine.state import RunState

    write_metrics(tmp_path, [3.0, 2.0], {0: 3.1})
    (tmp_path / plot.FILENAME).mkdir()  # a folder where the PNG goes: the final rename fails with an OSError
    ctx = RunContext(cfg=OmegaConf.create({"model": {"name": "tiny"}, "lora": {"r": 4}}), run_dir=tmp_path,
                     state=RunState(run_id="t"), provider=None)
    plot.Plot().run(ctx)  # must not raise
    assert "plot" not in ctx.state.outputs
    told = [w for w in warnings if w.startswith("WARNING") and "no loss curve" in w]
    assert len(told) == 1 and "IsADirectoryError" in told[0], warnings
    assert not (tmp_path / (plot.FILENAME + ".tmp")).exists()

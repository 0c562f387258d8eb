"""plot: the loss curve, <run>/loss.png — train loss and eval loss over optimizer steps.

An always-stage after terminate: a run that failed half-way still shows how far its loss got, and the pod is
gone before we spend time drawing. It reads what came home, best source first:

- metrics.jsonl (fetched): every trainer log record; `loss` is a train point, `eval_loss` an eval point
  (train_unsloth.py evaluates before and after training, so step 0 and the last step);
- train.log (streamed home as it ran, so it exists even when fetch did not): the `step` and `eval` events;
  an eval event names its phase, not its step: before is step 0, after the last step seen;
- result.json: eval_loss_before/after, when nothing above had eval points.

No points at all (a run that never trained): nothing is drawn, quietly. matplotlib is imported here, inside
run(), with the Agg backend (no display), never on the run.py import path.
"""
from __future__ import annotations

import json
from pathlib import Path

from loguru import logger

from engine.context import RunContext
from engine.numbers import finite
from engine.stage import BaseStage
from stages.train import EVENT_PREFIX

FILENAME = "loss.png"
SIZE_IN = (8.0, 4.5)  # figure size in inches; at DPI that is 800 x 450 pixels
DPI = 100


def _lines(path: Path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            yield from fh
    except OSError:
        return


def from_metrics(path: Path) -> tuple[dict[int, float], dict[int, float]]:
    train, evals = {}, {}
    for line in _lines(path):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        if (loss := finite(record.get("loss"))) is not None:
            train[record["step"]] = loss
        if (loss := finite(record.get("eval_loss"))) is not None:
            evals[record["step"]] = loss
    return train, evals


def from_train_log(path: Path) -> tuple[dict[int, float], dict[int, float]]:
    train, phases = {}, {}
    for line in _lines(path):
        if not line.startswith(EVENT_PREFIX):
            continue
        try:
            event = json.loads(line[len(EVENT_PREFIX):])
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == "step" and isinstance(event.get("step"), int):
            if (loss := finite(event.get("loss"))) is not None:
                train[event["step"]] = loss
        elif event.get("event") == "eval" and event.get("phase") in ("before", "after"):
            if (loss := finite(event.get("eval_loss"))) is not None:
                phases[event["phase"]] = loss
    last = max(train, default=0)
    evals = {0 if phase == "before" else last: loss for phase, loss in phases.items()}
    return train, evals


def from_result(path: Path) -> dict[int, float]:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(result, dict):
        return {}
    steps = result.get("steps") if isinstance(result.get("steps"), int) else 0
    evals = {}
    if (loss := finite(result.get("eval_loss_before"))) is not None:
        evals[0] = loss
    if (loss := finite(result.get("eval_loss_after"))) is not None:
        evals[steps] = loss
    return evals


def curves(run_dir: Path) -> tuple[dict[int, float], dict[int, float], str]:
    """(train points, eval points, where they came from): step -> loss."""
    train, evals = from_metrics(run_dir / "metrics.jsonl")
    source = "metrics.jsonl"
    if not train:
        train, log_evals = from_train_log(run_dir / "train.log")
        evals = evals or log_evals
        source = "train.log"
    if not evals:
        evals = from_result(run_dir / "result.json")
    return train, evals, source


def draw(train: dict[int, float], evals: dict[int, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: a pod, a CI box, an SSH session
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    try:
        if train:
            steps = sorted(train)
            ax.plot(steps, [train[s] for s in steps], label="train loss", color="tab:blue", linewidth=1.2)
        if evals:
            steps = sorted(evals)
            # Two evals (before and after) are two measurements, not a trend: points. More make a curve.
            style = {"linestyle": "-", "marker": "o"} if len(evals) > 2 else {"linestyle": "none", "marker": "o"}
            ax.plot(steps, [evals[s] for s in steps], label="eval loss", color="tab:orange", markersize=6, **style)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, format="png")
        tmp.replace(path)  # never a half-written PNG
    finally:
        plt.close(fig)


class Plot(BaseStage):
    always = True

    def run(self, ctx: RunContext) -> None:
        train, evals, source = curves(ctx.run_dir)
        if not train and not evals:
            logger.debug("no loss values came home: no plot")
            return
        path = ctx.run_dir / FILENAME
        try:
            draw(train, evals, path, f"{ctx.cfg.model.name} r={ctx.cfg.lora.r} — run {ctx.run_id}")
        except ImportError as exc:  # a picture is not worth failing a run that trained: say what to install
            logger.warning(f"no loss curve: {exc} (pip install matplotlib)")
            return
        except Exception as exc:  # nor is any other plotting or disk error: register/export must still run
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
            logger.warning(f"no loss curve at {path}: {type(exc).__name__}: {exc}")
            return
        ctx.state.outputs["plot"] = str(path)
        logger.info(f"loss curve ({len(train)} train, {len(evals)} eval points from {source}): {path}")

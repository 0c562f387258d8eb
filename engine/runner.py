"""The engine: validate, then run the configured stages in order; terminate is guaranteed.

A stage that raises marks the run failed and the later stages skipped, except the `always` ones. Ctrl-C or
SIGTERM marks it interrupted, and the always-stages run shielded from further signals. Whatever happened,
a pod that was created and not yet terminated is terminated here, even if the pipeline lists no stage
that would do it.
"""
from __future__ import annotations

import secrets
import shlex
import time
import traceback
from pathlib import Path

from loguru import logger
from omegaconf import DictConfig

from engine import logs, signals, summary, teardown
from engine.sweep import objective as sweep_objective
from engine.context import RunContext
from engine.errors import Detached, Interrupted, LorapodError
from engine.providers.base import make_provider
from engine.secrets import load_dotenv, redact
from engine.state import RunState, StageRecord, now
from engine.sweep import outcome, parallel
from engine.validate import validate

_exit_codes: list[int] = []  # one per job run in this process: a sweep exits non-zero when any of its runs failed
_objective: float | None = None  # the last run's (engine/sweep/objective.py): what run.py hands a sweeper such as Optuna


def exit_status() -> int:
    """The process's exit code: the worst of its own jobs' and, in a sweep's main process, of every job in the
    sweep folder (a parallel sweep's jobs run in other processes) and of the sweep's own end (signal, reaper)."""
    return max([*_exit_codes, outcome.sweep_exit_code()], default=0)


def objective() -> float | None:
    """The last run's eval loss after training; None when it did not succeed (Optuna: a failed trial)."""
    return _objective


def _hydra_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise ValueError("engine.run(cfg) outside @hydra.main needs run_dir=")
    return Path(HydraConfig.get().runtime.output_dir)


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def build_stages(cfg: DictConfig) -> list[tuple[str, object]]:
    from hydra.utils import instantiate

    stages = []
    for name, node in cfg.pipeline.stages.items():
        stage = instantiate(node)
        if not getattr(stage, "name", ""):
            stage.name = name
        stage.always = bool(getattr(stage, "always", False))
        stages.append((name, stage))
    return stages


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LorapodError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by Ctrl-C"
    return f"{type(exc).__name__}: {exc}"


def _run_stage(ctx: RunContext, name: str, stage) -> BaseException | None:
    """Run one stage, record how it ended; returns what it raised (the first failure sets the exit code)."""
    if stage.always:
        with signals.shielded():  # cleanup must finish even if Ctrl-C is pressed again
            return _run_stage_unshielded(ctx, name, stage)
    return _run_stage_unshielded(ctx, name, stage)


def _run_stage_unshielded(ctx: RunContext, name: str, stage) -> BaseException | None:
    error = None
    record = StageRecord(status="running", started_at=now())
    ctx.state.stages[name] = record
    ctx.stage = name
    ctx.save()
    started = time.monotonic()
    with logger.contextualize(stage=name):
        try:
            stage.run(ctx)
            record.status = "succeeded"
        except Detached as exc:  # on purpose: the stage is left for `python -m engine.attach` to finish
            record.status, ctx.state.status = "detached", "detached"
            logger.info(str(exc))
        except (KeyboardInterrupt, Interrupted) as exc:
            error = exc
            record.status, record.error = "interrupted", _describe(exc)
            ctx.state.status = "interrupted"
            logger.warning(f"{record.error}: stopping after cleanup")
        except Exception as exc:
            error = exc
            record.status, record.error = "failed", redact(_describe(exc))
            if ctx.state.status == "running":
                ctx.state.status = "failed"
            logger.error(f"{name} failed: {record.error}")
            if not isinstance(exc, LorapodError):
                logger.debug(redact(traceback.format_exc()))  # an unexpected error: the traceback is for run.log
        finally:
            record.ended_at = now()
            record.seconds = round(time.monotonic() - started, 3)
            ctx.save()
    return error


def _ensure_terminated(ctx: RunContext) -> None:
    """The guarantee behind `terminate`: no pod outlives the run, whatever the pipeline listed."""
    if not teardown.needs_terminate(ctx):
        return
    with logger.contextualize(stage="terminate"):
        pod = ctx.state.pod
        what = f"pod {pod['id']} is" if pod else f"a pod named {ctx.pod_name} may be"
        logger.warning(f"{what} still up after the pipeline ended: terminating it")
        try:
            teardown.terminate_run(ctx)
        except Exception as exc:
            logger.error(_describe(exc))
            ctx.state.status = "failed"


def run(cfg: DictConfig, run_dir: Path | None = None) -> int:
    """Run one job; returns its exit code (0 succeeded or detached, 1 failed, 2 bad config or data). An
    interrupted run raises SystemExit(130) once cleanup is done, so a sweep stops too."""
    global _objective
    _objective = None  # a job that ends early never reports the previous job's number
    run_dir = Path(run_dir or _hydra_run_dir()).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    logs.setup(run_dir)
    load_dotenv()
    ctx = RunContext(cfg=cfg, run_dir=run_dir, state=RunState(run_id=new_run_id()))
    logger.info(f"run {ctx.run_id} -> {run_dir}")

    try:
        validate(cfg)
        stages = build_stages(cfg)
        ctx.provider = make_provider(ctx)
    except LorapodError as exc:
        return _finish(ctx, "failed", first=exc, stage="config")
    return drive(ctx, stages)


def drive(ctx: RunContext, stages: list[tuple[str, object]], resume: bool = False) -> int:
    """Run the stages in order, then guarantee the pod is gone and write the summary. resume=True (engine.attach)
    leaves the stages that already succeeded as they are: a resumed run does not redo them."""
    errors: list[BaseException | None] = []
    parallel.enter_job(ctx.save)
    with signals.interruptible():
        try:
            for name, stage in stages:
                done = ctx.state.stages.get(name)
                if resume and done is not None and done.status == "succeeded":
                    continue
                if ctx.state.status == "detached":
                    break  # nothing after a detach runs, not even terminate: the pod trains on
                if ctx.state.status != "running" and not stage.always:
                    ctx.state.stages[name] = StageRecord(status="skipped")
                    continue
                if not stage.always:
                    parallel.raise_if_stopped(ctx, name)  # a parallel sweep that was stopped starts nothing more
                errors.append(_run_stage(ctx, name, stage))
        except (KeyboardInterrupt, Interrupted):  # between two stages
            ctx.state.status = "interrupted"
            for name, stage in stages:
                if stage.always and ctx.state.stages.get(name, StageRecord()).status in ("pending", "skipped"):
                    errors.append(_run_stage(ctx, name, stage))
        finally:
            with signals.shielded():  # from here on nothing may cut the cleanup or the summary short
                if ctx.state.status == "detached":
                    teardown.let_go(ctx)
                else:
                    _ensure_terminated(ctx)
                status = "succeeded" if ctx.state.status == "running" else ctx.state.status
                code = _finish(ctx, status, first=next((e for e in errors if e is not None), None))
    if status == "interrupted" and not parallel.in_worker():
        # Ctrl-C means stop: not only this job but a whole sweep, and without a traceback. A parallel sweep's job
        # returns instead: an exception in a worker makes joblib SIGKILL the other jobs mid-cleanup.
        signals.ignore_for_good()
        raise SystemExit(code)
    return code


def _detached_guard(ctx: RunContext) -> str:
    """What happens to a detached pod nobody attaches to: only its deadline deletes it, adapter and all, and it
    bills until then (training done or not)."""
    deadline = ctx.state.outputs.get("deadline") or {}
    if not deadline.get("armed"):
        return "nothing deletes it meanwhile"
    if not deadline.get("deletes_at"):
        return "its own deadline deletes it meanwhile"
    price = float((ctx.state.pod or {}).get("price_per_hour") or 0.0)
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(deadline["deletes_at"]))
    return (f"its own deadline deletes it at {when}, with whatever training made on it; until then it bills, "
            f"training or idle: at most ${deadline['max_runtime_s'] / 3600 * price:.2f} at ${price:.2f}/h. "
            "Attach before then")


def _finish(ctx: RunContext, status: str, first: BaseException | None = None, stage: str | None = None) -> int:
    global _objective
    ctx.state.status = status
    ctx.state.ended_at = now()
    if stage is not None:  # the run failed before any stage: the config or its checks
        ctx.state.stages[stage] = StageRecord(status="failed", error=redact(str(first)))
        logger.bind(stage=stage).error(str(first))
    code = {"succeeded": 0, "detached": 0, "interrupted": 130}.get(status, getattr(first, "exit_code", 1))
    ctx.state.outputs["exit_code"] = code
    ctx.save()
    result = summary.write(ctx)
    _objective = sweep_objective.of(result)
    _exit_codes.append(code)
    adapter = result["paths"]["adapter"]
    if status == "detached":
        pod = (ctx.state.pod or {}).get("id")
        guard = _detached_guard(ctx)
        logger.success(f"detached: training goes on on pod {pod} ({guard}); pick it up with:\n"
                       f"    python -m engine.attach {shlex.quote(str(ctx.run_dir))}")
        return code
    line = f"{status} in {result['seconds']:.1f}s; " + (f"adapter: {adapter}" if adapter else f"details: {ctx.run_dir / 'run.log'}")
    (logger.success if status == "succeeded" else logger.error)(line)
    return code


__all__ = ["run", "exit_status", "objective"]

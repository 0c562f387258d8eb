"""Pick a run up again: `python -m engine.attach RUN_DIR`.

For a run whose process died while the pod trained on (the laptop slept, the terminal was killed, SIGKILL) and
for a run detached on purpose (provider.detach=true). It reads RUN_DIR/state.json and the run's own composed
config (RUN_DIR/.hydra/config.yaml: exactly what the run ran, whatever conf/ says today; secrets come from the
environment or .env, as in a run), then, as the stage `attach`:

  * asks the provider whether the pod is still there; a pod that is gone (deleted from the console, or by its
    own deadline) is said, the run is marked failed with that reason, and the run folder is kept as it is;
  * connects to the endpoint in state.json, trusting only the host key the run pinned (RUN_DIR/ssh/known_hosts);
  * restarts the heartbeat and the pod's watchdog (provider=runpod) and tells the watchdog the run is attached
    again (engine/deadline.py), so the heartbeat protects the pod again;

and then runs the rest of the pipeline with engine.runner, as a resume: the stages that succeeded are not rerun,
train follows the log from where state.json says the run's follower stopped (no progress line lost or twice),
or finds training finished; then fetch, terminate, cost and the rest. Terminate stays guaranteed: Ctrl-C,
SIGTERM and failures end in it, as in run.py. Exit codes are run.py's: 0 succeeded, 1 failed, 2 a bad run
folder or config, 130 interrupted.

A run that already ended has nothing to attach to: that is said, and the exit code is its own (0 when it
succeeded) -- unless its pod is still recorded as up (a delete that failed), which is then deleted. A run still
followed by a live process on this machine is refused. A run that stopped before training was launched on its
pod cannot be picked up (its upload and probe would have to be redone on a pod in an unknown state): its pod is
deleted and the run marked failed; run it again. run-summary.json records each attach under "attach": when,
which host and pid, from which stage, and the run's status before.
"""
from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
from pathlib import Path

from loguru import logger

from engine import budget, logs, process, runner, teardown
from engine.context import RunContext
from engine.deadline import mark_attached
from engine.errors import ConfigError, LorapodError, StageError
from engine.providers.base import Endpoint, current_pod, make_provider
from engine.secrets import load_dotenv
from engine.stage import BaseStage
from engine.state import RunState, StageRecord, now
from engine.transport.base import open_transport
from engine.validate import validate

FINISHED = {"succeeded": 0, "failed": 1, "interrupted": 130, "refused": 2}  # how a finished run exits again
STAGE = "attach"
STOPPED = ("EXITED", "ERROR")  # a pod that exists, holds its disk and bills for it, but runs nothing (runpod.md)


class Attach(BaseStage):
    """The stage an attach runs first: find the pod, connect with the pinned host key, restart the heartbeat."""

    name = STAGE

    def run(self, ctx: RunContext) -> None:
        deleted = "pod_terminated" in ctx.state.marks or (ctx.state.pod or {}).get("terminated")
        if deleted and "terminate" in ctx.state.stages:
            # The run died after its own terminate (in cost's billing wait, settle, register...): the adapter is
            # home and the pod deleted; the stages after terminate are what is left, and the delete time stands.
            logger.info("the run's pod was already deleted by the run itself: finishing the stages after terminate")
            return
        if "train_launched" not in ctx.state.marks:
            where = ctx.state.outputs["attach"][-1]["from_stage"]
            raise StageError(f"the run stopped before training was launched on its pod (at stage {where}): there is "
                             "no training to pick up", "its pod is deleted now; run it again")
        pod = current_pod(ctx)
        status = _pod_status(ctx, pod)
        if status is None:
            # Nothing left to delete: terminate must not try. The bill stopped when it went, not now, so a delete
            # time already recorded stays (only a missing one is filled in).
            ctx.state.pod["terminated"] = True
            if "pod_terminated" not in ctx.state.marks:
                ctx.state.mark("pod_terminated")
            ctx.save()
            raise StageError(f"pod {pod.id} is gone (deleted from the console, or by its own deadline once nobody "
                             "followed the run): the training on it and whatever it made are lost",
                             f"the run folder is kept as it was ({ctx.run_dir}); run again to train anew")
        if status in STOPPED:
            # A stopped pod still exists and bills for its disk: terminate (always) deletes it after this.
            raise StageError(f"pod {pod.id} stopped ({status}) while nobody followed the run: the training on it "
                             "ended with it; the pod is deleted now (a stopped pod still bills for its disk)",
                             f"the run folder is kept as it was ({ctx.run_dir}); run again to train anew")
        if not ctx.state.endpoint:
            raise StageError("state.json has no endpoint for the pod", "run again")
        endpoint = Endpoint(**ctx.state.endpoint)
        ctx.transport = open_transport(endpoint, ctx)  # the run's known_hosts: a changed host key stops here
        after_connect = getattr(ctx.provider, "after_connect", None)
        if after_connect is not None:  # runpod: the heartbeat first, then the watchdog, as at probe
            after_connect(ctx)
        mark_attached(ctx)  # a detached run's watchdog counts the heartbeat again (the beat is fresh first)
        budget.watch(ctx)  # budget.max_usd holds again from here, as the budget stage had it before
        logger.info(f"attached to pod {pod.id}" + (f" at {endpoint.host}:{endpoint.port}" if endpoint.host else ""))


def _pod_status(ctx: RunContext, pod) -> str | None:
    """The pod's status as the provider tells it; None when it is gone (deleted); "RUNNING" for a provider that
    cannot tell (local, ssh: the connection says the rest)."""
    pod_status = getattr(ctx.provider, "pod_status", None)
    if pod_status is not None:
        return pod_status(pod)
    is_alive = getattr(ctx.provider, "is_alive", None)
    return None if is_alive is not None and not is_alive(pod) else "RUNNING"


def first_unfinished(state: RunState, names: list[str]) -> str | None:
    return next((n for n in names if (state.stages.get(n) or StageRecord()).status != "succeeded"), None)


def _owner_alive(state: RunState) -> int | None:
    """The pid of a process on this machine still following the run, if any (a reused pid is not it)."""
    owner = state.owner or {}
    if state.status != "running" or owner.get("pid") == os.getpid():
        return None
    return owner["pid"] if process.alive(owner, state.started_at) else None


def load_run(run_dir: Path):
    """(the run's composed config, its state); a folder that is not a run raises ConfigError."""
    from omegaconf import OmegaConf

    import engine.schema  # noqa: F401  (the schemas, as in run.py)

    problems = [f"{run_dir / name}: is missing; is {run_dir} a lorapod run folder (hydra.run.dir)?"
                for name in ("state.json", ".hydra/config.yaml") if not (run_dir / name).is_file()]
    if problems:
        raise ConfigError(problems, "give the run folder run.py printed (run <id> -> <folder>)")
    try:
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        state = RunState.load(run_dir / "state.json")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError([f"{run_dir}: cannot read its config or state.json ({exc})"],
                          "the run folder is damaged; delete its pod with python -m engine.reap") from exc
    return cfg, state


def attach(run_dir: Path) -> int:
    run_dir = Path(run_dir).resolve()
    logs.setup(run_dir if (run_dir / "state.json").is_file() else None)
    load_dotenv()
    try:
        cfg, state = load_run(run_dir)
    except ConfigError as exc:
        logger.error(str(exc))
        return exc.exit_code
    ctx = RunContext(cfg=cfg, run_dir=run_dir, state=state)
    pod = (state.pod or {}).get("id")
    live = _owner_alive(state)
    if live is not None:
        logger.error(f"run {state.run_id} is still followed by process {live} on this machine: nothing to attach "
                     f"(stop that one first, or wait for it)")
        return 1
    try:
        validate(cfg)
        stages = runner.build_stages(cfg)
        ctx.provider = make_provider(ctx)
    except LorapodError as exc:
        logger.error(str(exc))
        return exc.exit_code
    if state.status in FINISHED and not teardown.needs_terminate(ctx):
        logger.info(f"run {state.run_id} already {state.status}" + (f" (pod {pod} deleted)" if pod else "") +
                    ": nothing to attach to, nothing to do" + (f"; see {run_dir / 'run-summary.json'}"))
        return FINISHED[state.status]

    names = [n for n, _ in stages]
    record = {"at": now(), "host": socket.gethostname(), "pid": os.getpid(), "previous_status": state.status,
              "from_stage": first_unfinished(state, names), "command": f"python -m engine.attach {shlex.quote(str(run_dir))}"}
    state.outputs.setdefault("attach", []).append(record)
    state.owner = process.owner()
    if state.status in FINISHED:  # ended with its pod still up (a delete that failed): only cleanup is left
        logger.warning(f"run {state.run_id} already {state.status}, but pod {pod} is recorded as still up: deleting it")
        state.ended_at = None
        cleanup = [(n, s) for n, s in stages if s.always]
        # The always-stages after the failed one (terminate) ran on a pod still up: cost read no final bill,
        # settle kept the reservation. They run again once the pod is deleted.
        names = [n for n, _ in cleanup]
        failed = first_unfinished(state, names)
        for name in names[names.index(failed):] if failed else []:
            state.stages.pop(name, None)
        return runner.drive(ctx, cleanup, resume=True)
    logger.info(f"attaching to run {state.run_id} ({state.status}; from stage {record['from_stage']}), pod {pod}")
    state.status, state.ended_at = "running", None
    state.stages.pop(STAGE, None)
    ctx.save()
    return runner.drive(ctx, [(STAGE, Attach()), *stages], resume=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.attach", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the run's folder (hydra.run.dir): holds state.json and .hydra/")
    args = parser.parse_args(argv)
    return attach(args.run_dir)


if __name__ == "__main__":
    sys.exit(main())

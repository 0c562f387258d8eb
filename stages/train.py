"""train: start training detached on the pod, follow its log home, and read its exit code.

The training runs in its own session with a log, pid and exit-code file, so a dropped connection (or a
dead laptop) does not kill it: following (remote_image/follow_log.py) resumes from the last line seen. Lines that start with
EVENT_PREFIX are progress events (see remote_image/train_unsloth.py) and drive the progress bar; every line
is also written to <run_dir>/train.log as it arrives (secrets redacted), so the log is home even if the pod is not.

Where the following stands (lines received, bytes of the home train.log) goes into state.json as it goes
(outputs.train_follow, at most every FOLLOW_SAVE_S and at each progress event). A run that picks training up
again (`python -m engine.attach`, after the laptop died or a detach) finds "train_launched" in its marks, launches
nothing, cuts the home train.log back to the recorded size and follows from the recorded line: the lines received
after the last save are received again, so no progress line is lost and none is there twice.

provider.detach=true: the stage follows until training has started (its "start" event), tells the pod's watchdog
the run is detached (engine/deadline.py: only the deadline counts from then on) and returns; the run ends
"detached" and nothing is terminated. Training that ends before it has started is followed to the end as usual,
and so is training on a pod whose deadline is not armed (nothing would delete that pod if nobody attached).

An SSH session starts with a fresh environment, so the image's ENV lines never reach training: the launch
command exports the training process's own (engine/pod_env.py). HF_HOME, TRITON_CACHE_DIR,
TORCHINDUCTOR_CACHE_DIR and UNSLOTH_COMPILE_LOCATION go under remote.cache_dir (made mode 700), which on
RunPod defaults to <workdir>/.cache, the network volume when one is mounted: the next run on that volume finds
the model and the compiled kernels. ssh and local leave the machine's own caches alone unless it is set.
Always: PYTHONUNBUFFERED=1, HF_XET_HIGH_PERFORMANCE=1, the interpreter's folder first on PATH, remote.env,
and HF_TOKEN_PATH when upload placed a token (the token itself is in no environment and no command line).
"""
from __future__ import annotations

import json
import shlex
import time
from collections import deque

from loguru import logger

from engine.context import RunContext
from engine.deadline import mark_detached
from engine.errors import Detached, ProviderError, StageError, TransportError
from engine.numbers import finite
from engine.pod_env import check_config as check_pod_env
from engine.pod_env import launch_exports, private_dir_command, training_env
from engine.progress import ProgressBar
from engine.providers.base import current_pod
from engine.secrets import redact
from engine.stage import BaseStage
from stages.upload import FOLLOWER_NAME, SCRIPT_NAME

FOLLOW_SAVE_S = 1.0  # how often, at most, where the following stands goes into state.json between events
VANISHED = 3  # follow_log.py's status when training ended without writing an exit code
EVENT_PREFIX = "@@lorapod "  # the same constant as in remote_image/train_unsloth.py (a test keeps them equal)


def training_processes(cfg) -> int:
    """One training process per GPU; gpu.count=0 (gpu=cpu) is one process on the CPU, and gpu=cpu with
    gpu.count=N > 1 is N CPU processes (gloo), which is how data-parallel training is tested without a GPU."""
    return max(1, int(cfg.gpu.count or 0))


def trainer_command(python: str, processes: int) -> str:
    # torchrun through `-m` with the run's interpreter: the console script may be missing from PATH or belong
    # to another Python. --standalone: a one-machine rendezvous on a free local port, nothing to configure.
    head = shlex.quote(python)
    if processes > 1:
        head += f" -m torch.distributed.run --standalone --nproc_per_node={processes}"
    return f"{head} {SCRIPT_NAME} config.json"


def launch_command(rdir: str, python: str, env: dict[str, str] | None = None, cache_dir: str | None = None,
                   processes: int = 1) -> str:
    # The exports live inside the job, so they reach the training process and nothing else of the session.
    exports = launch_exports(env or {}, python)
    job = (f"{exports}; " if exports else "") + \
        f"{trainer_command(python, processes)} > train.log 2>&1; echo $? > exit_code.tmp; " \
        "mv exit_code.tmp exit_code; rm -f train.pid"
    private = f"{private_dir_command(cache_dir)} && " if cache_dir else ""
    # Only the setsid'd job goes to the background (a backgrounded `a && b &` list would hold our stdout
    # open until training ends); its own session keeps it alive when the connection drops.
    return (f"{private}cd {shlex.quote(rdir)} && rm -f exit_code && "
            f"{{ setsid nohup bash -c {shlex.quote(job)} > /dev/null 2>&1 < /dev/null & echo $! > train.pid; }} "
            f"&& echo launched")


def follow_command(rdir: str, python: str, from_line: int) -> str:
    return f"cd {shlex.quote(rdir)} && {shlex.quote(python)} {FOLLOWER_NAME} train.log {from_line} train.pid exit_code"


class Train(BaseStage):
    def __init__(self, reconnect_s: float = 600.0):
        self.reconnect_s = reconnect_s  # how long to keep trying to reach the pod again after a drop

    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        return check_pod_env(cfg)

    def run(self, ctx: RunContext) -> None:
        if ctx.transport is None:
            raise StageError("no connection to the pod", "the pipeline needs a probe stage before train")
        rdir = ctx.remote_dir
        resuming = "train_launched" in ctx.state.marks
        if resuming:  # an earlier process launched it: pick it up, never start a second training
            logger.info(f"training was launched by an earlier process: following {rdir}/train.log from line "
                        f"{(ctx.state.outputs.get('train_follow') or {}).get('lines', 0) + 1}")
        else:
            self._launch(ctx, rdir)
        detach = bool(ctx.cfg.provider.get("detach")) and not resuming
        deadline = ctx.state.outputs.get("deadline")
        if detach and deadline is not None and not deadline.get("armed"):
            # Detached, this pod would have nobody to delete it if the user never attaches.
            logger.warning("provider.detach=true, but the pod's deadline is not armed (see above): nothing would "
                           "delete the pod if you never attached, so this run follows training to the end instead")
            detach = False

        follower = _Follower(ctx, resume=resuming, until_started=detach)
        try:
            code = self._follow(ctx, follower)
        finally:
            follower.close()
            ctx.state.outputs["pod_output"] = follower.report()
            ctx.save()
        if code is None:  # detached: training has started and goes on without us
            mark_detached(ctx)
            raise Detached(f"training has started on the pod and goes on without this process "
                           f"(provider.detach=true; log: {rdir}/train.log)")
        ctx.state.mark("train_exited")
        ctx.save()
        if code != 0:
            tail = "\n    ".join(follower.last_lines)
            raise StageError(f"training exited with code {code}; last lines of train.log:\n    {tail}",
                             f"full log: {ctx.run_dir / 'train.log'}")
        logger.info(f"training finished: {follower.summary()}")

    def _launch(self, ctx: RunContext, rdir: str) -> None:
        out: list[str] = []
        processes = training_processes(ctx.cfg)
        command = launch_command(rdir, ctx.remote_python, training_env(ctx), ctx.remote_cache_dir, processes)
        if ctx.transport.exec(command, on_line=out.append) != 0:
            raise StageError(f"could not start training on the pod: {' '.join(out)[-300:]}")
        ctx.state.mark("train_launched")
        ctx.save()
        logger.info(f"training started on the pod (log: {rdir}/train.log)"
                    + (f", {processes} data-parallel processes (torchrun)" if processes > 1 else ""))

    def _follow(self, ctx: RunContext, follower: _Follower) -> int | None:
        """The training's exit code, or None when the follower stopped on purpose once training started (detach)."""
        rdir, lost_at = ctx.remote_dir, None
        while True:
            try:
                try:
                    status = ctx.transport.exec(follow_command(rdir, ctx.remote_python, follower.lines_seen + 1),
                                                on_line=follower.line)
                except _Started:
                    return None
                code = _read_exit_code(ctx, rdir)
                if code is not None:
                    return code
                if status == VANISHED:
                    raise StageError("the training process vanished without an exit code (killed? out of memory?)",
                                     f"see {ctx.run_dir / 'train.log'}")
                raise StageError(f"following the training log failed (exit status {status})",
                                 f"see {ctx.run_dir / 'train.log'} and {rdir}/train.log on the pod")
            except TransportError as exc:
                lost_at = lost_at or time.monotonic()
                if time.monotonic() - lost_at > self.reconnect_s:
                    raise StageError(f"lost the pod for over {self.reconnect_s:.0f}s: {exc}") from exc
                reconnect = getattr(ctx.transport, "reconnect", None)
                if reconnect is None:
                    raise
                _check_pod_alive(ctx, exc)
                logger.warning(f"connection lost at line {follower.lines_seen} ({exc}); training goes on, reconnecting")
                time.sleep(1.0)
                try:
                    reconnect()
                    lost_at = None
                except TransportError as again:
                    logger.warning(f"reconnect failed: {again}")


def _check_pod_alive(ctx: RunContext, exc: Exception) -> None:
    """A pod deleted from the console (or by its own deadline) must end the run, not a reconnect loop."""
    is_alive = getattr(ctx.provider, "is_alive", None)
    try:
        gone = is_alive is not None and not is_alive(current_pod(ctx))
    except ProviderError as api_down:  # no answer is not "gone": keep trying to reach the pod
        logger.debug(f"cannot ask the provider about the pod: {api_down}")
        return
    if gone:
        raise StageError(f"the pod is gone (deleted or stopped outside this run) while training: {exc}",
                         "the dataset and logs are in the run folder; run again when ready") from exc


def _read_exit_code(ctx: RunContext, rdir: str) -> int | None:
    out: list[str] = []
    ctx.transport.exec(f"cat {shlex.quote(rdir)}/exit_code 2>/dev/null", on_line=out.append)
    try:
        return int(out[0].strip()) if out else None
    except ValueError:
        return None


POD_OUTPUT_IN_RUN_LOG = 8 * 1024 * 1024  # bytes of the pod's plain lines copied into run.log (`pod| `)
HOME_TRAIN_LOG_MAX = 1024 * 1024 * 1024  # bytes of train.log kept at home; the pod's own copy has the rest


def _read_event(payload: str) -> tuple[dict | None, str | None]:
    """(event, None), or (None, what is wrong with it): the problem names a kind, so each kind is told once."""
    try:
        event = json.loads(payload)
    except (json.JSONDecodeError, RecursionError):
        return None, "not valid JSON"
    if not isinstance(event, dict):
        return None, f"a JSON {type(event).__name__}, not an object"
    kind = event.get("event")
    if not isinstance(kind, str):
        return None, "no \"event\" name"
    wanted = {"step": ("step", "total"), "start": (), "eval": ("eval_loss",), "done": ()}.get(kind, ())
    for key in wanted:
        if finite(event.get(key)) is None:
            return None, f"{kind!r} event with {key!r} = {event.get(key)!r}, not a number"
    return event, None


class _Started(Exception):
    """Raised from the line callback to stop following once training has started (provider.detach=true)."""


class _Follower:
    """Turns streamed log lines into the progress bar, run.log lines and a home copy of train.log.

    What the pod prints is not trusted: a progress event that cannot be read is reported once per kind of
    problem (with its line in train.log) and ignored, so training goes on; the pod's plain lines go into run.log
    up to POD_OUTPUT_IN_RUN_LOG bytes, and into the home train.log up to HOME_TRAIN_LOG_MAX (each line is at
    most engine.transport.base.MAX_LINE long: the transport cut it)."""

    def __init__(self, ctx: RunContext, run_log_budget: int = POD_OUTPUT_IN_RUN_LOG,
                 home_log_budget: int = HOME_TRAIN_LOG_MAX, resume: bool = False, until_started: bool = False):
        self.ctx = ctx
        self.lines_seen = 0
        self.last_lines: deque[str] = deque(maxlen=20)
        self.bar = ProgressBar()
        self.events: dict[str, dict] = {}
        path = ctx.run_dir / "train.log"
        if resume:  # back to where state.json says we were: what came after is received again
            where = ctx.state.outputs.get("train_follow") or {}
            self.lines_seen, kept = int(where.get("lines") or 0), int(where.get("bytes") or 0)
            if path.exists() and path.stat().st_size > kept:
                with open(path, "r+b") as fh:
                    fh.truncate(kept)
            home_log_budget -= kept
        self.log = open(path, "a", encoding="utf-8")
        self.until_started = until_started
        self._saved_at = 0.0
        self.run_log_budget, self.home_log_budget = run_log_budget, home_log_budget
        self.bad_events: dict[str, int] = {}  # problem -> how many lines had it
        self.longest_line = 0  # in characters: what the transport let through

    def line(self, text: str) -> None:
        self.lines_seen += 1
        self.longest_line = max(self.longest_line, len(text))
        self._keep(redact(text))  # a library on the pod may print what it should not
        if not text.startswith(EVENT_PREFIX):
            self.last_lines.append(text)
            self._to_run_log(text)
            self._record_position()
            return
        self._event(text)
        self._record_position(now=True)
        if self.until_started and "start" in self.events:
            raise _Started()

    def _record_position(self, now: bool = False) -> None:
        """state.json learns how far the following got: what a later attach resumes from (lines received, and
        the home train.log's size after them, written together)."""
        moment = time.monotonic()
        if not now and moment - self._saved_at < FOLLOW_SAVE_S:
            return
        self._saved_at = moment
        self.log.flush()
        self.ctx.state.outputs["train_follow"] = {"lines": self.lines_seen, "bytes": self.log.tell()}
        self.ctx.save()

    def _event(self, text: str) -> None:
        event, problem = _read_event(text[len(EVENT_PREFIX):])
        if problem is not None:
            self.bad_events[problem] = self.bad_events.get(problem, 0) + 1
            if self.bad_events[problem] == 1:
                logger.warning(f"ignored a progress event the pod printed (train.log line {self.lines_seen}): "
                               f"{problem}; training goes on, and further events like it are counted, not shown")
            return
        kind = event["event"]
        self.events[kind if kind != "eval" else f"eval_{event.get('phase')}"] = event
        if kind == "step":
            self.bar.update(event["step"], event["total"], finite(event.get("loss")))
        elif kind == "start":
            self.ctx.state.mark("train_started")
            logger.info(f"{event.get('total')} steps with {event.get('backend')} on {event.get('device')}")
        elif kind == "eval":
            self.bar.close()
            logger.info(f"eval loss {event.get('phase')} training: {event['eval_loss']:.4f}")

    def _keep(self, text: str) -> None:
        if self.home_log_budget <= 0:
            return
        self.home_log_budget -= len(text) + 1
        if self.home_log_budget <= 0:
            text = (f"[lorapod: train.log kept at home is full ({HOME_TRAIN_LOG_MAX} bytes); the rest is in "
                    f"{self.ctx.remote_dir}/train.log on the pod]")
        self.log.write(text + "\n")
        self.log.flush()

    def _to_run_log(self, text: str) -> None:
        if self.run_log_budget <= 0:
            return
        self.run_log_budget -= len(text) + 6
        if self.run_log_budget > 0:
            logger.debug(f"pod| {text}")
        else:
            logger.info(f"the pod's output is too much for run.log: the rest of it is only in "
                        f"{self.ctx.run_dir / 'train.log'}")

    def report(self) -> dict:
        """What came from the pod, for state.json: the longest line received, the events ignored."""
        return {"lines": self.lines_seen, "longest_line": self.longest_line, "bad_events": dict(self.bad_events),
                "run_log_full": self.run_log_budget <= 0}

    def summary(self) -> str:
        done = self.events.get("done", {})
        loss = finite(done.get("train_loss"))
        return f"{done.get('steps')} steps, train loss " + (f"{loss:.4f}" if loss is not None else "?")

    def close(self) -> None:
        self.bar.close()
        if not self.log.closed:
            self._record_position(now=True)
        self.log.close()

"""The pod's own deadline: a watchdog on the pod deletes it when the run overstays or lorapod goes quiet.

RunPod does not enforce terminateAfter, so lorapod does not rely on it: the deadline travels in the pod's
environment (the image's start script starts remote_image/watchdog.py from boot), lorapod uploads and
(re)starts the same watchdog right after connecting — so it also runs on images that do not start it —
and touches a heartbeat file over SSH while it is alive. A laptop that dies mid-run stops the heartbeat,
and the pod deletes itself with the pod-scoped key RunPod put in its container; the user's key never
leaves this machine.
"""
from __future__ import annotations

import posixpath
import shlex
import threading

from loguru import logger

from engine.context import PROJECT_ROOT, RunContext
from engine.errors import StageError, TransportError

WATCHDOG = PROJECT_ROOT / "remote_image" / "watchdog.py"


def heartbeat_file(ctx: RunContext) -> str:
    return posixpath.join(ctx.remote_dir, "heartbeat")


def deadline_env(ctx: RunContext) -> dict[str, str]:
    p = ctx.cfg.provider
    started = ctx.state.marks.get("pod_requested") or ctx.state.mark("pod_requested")
    return {
        "LORAPOD_MAX_RUNTIME_S": str(int(p.max_runtime_s)),
        "LORAPOD_STARTED_AT": str(int(started)),
        "LORAPOD_HEARTBEAT_FILE": heartbeat_file(ctx),
        "LORAPOD_HEARTBEAT_TIMEOUT_S": str(int(p.heartbeat_timeout_s)),
        "LORAPOD_API_URL": str(p.api_url),
    }


def start_watchdog(ctx: RunContext) -> None:
    """Upload the watchdog and start it detached; the newest copy on a pod replaces the boot one."""
    remote = posixpath.join(ctx.remote_dir, "watchdog.py")
    ctx.transport.put(WATCHDOG, remote)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in deadline_env(ctx).items())
    log = posixpath.join(ctx.remote_dir, "watchdog.log")
    command = (f"touch {shlex.quote(heartbeat_file(ctx))} && {{ {env} setsid nohup {shlex.quote(ctx.remote_python)} "
               f"{shlex.quote(remote)} > {shlex.quote(log)} 2>&1 < /dev/null & }} && echo started")
    out: list[str] = []
    if ctx.transport.exec(command, on_line=out.append) != 0:
        raise StageError(f"could not start the pod's watchdog: {' '.join(out)[-300:]}",
                         "without it a pod could outlive a crashed lorapod; the run stops here")
    logger.info(f"pod deadline armed: deleted after {ctx.cfg.provider.max_runtime_s}s, or "
                f"{ctx.cfg.provider.heartbeat_timeout_s}s without a heartbeat from here")


class Heartbeat:
    """Touches the heartbeat file every interval from a daemon thread until stopped."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        p = ctx.cfg.provider
        # At least three beats per timeout, so one missed beat never lets the watchdog fire.
        self.interval = min(float(p.heartbeat_interval_s), p.heartbeat_timeout_s / 3)
        self.command = f"touch {shlex.quote(heartbeat_file(ctx))}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lorapod-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            transport = self.ctx.transport
            if transport is None:
                continue
            try:
                transport.exec(self.command, timeout=30)
            except (TransportError, OSError) as exc:  # a reconnect is under way; the next beat will tell
                logger.debug(f"heartbeat missed: {exc}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

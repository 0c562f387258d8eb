"""The pod's own deadline: a watchdog on the pod deletes it when the run overstays or lorapod goes quiet.

RunPod does not enforce terminateAfter, so lorapod does not rely on it. What protects a pod, and from when:

  * from container start, on images that start remote_image/watchdog.py themselves (image=lorapod's
    start.sh): the deadline travels in the pod's environment, and a heartbeat that never starts counts
    as stale too, so a lorapod that dies before it ever connects still has its pod deleted;
  * from probe on, on every image: lorapod uploads the same watchdog, starts it, reads back whether it
    is armed (which credential it found, and whether that credential could read its own pod), and touches
    a heartbeat file over SSH while it is alive.

The watchdog deletes its pod with the pod-scoped key RunPod put in the container, and, when
provider.watchdog_api_key_env names one, with a key the user made for this purpose (sent over SFTP into a
root-only file, never in an environment, a command line or a log). The user's main key never leaves this
machine. A deadline that is not armed is said loudly; provider.require_deadline stops the run instead.
"""
from __future__ import annotations

import json
import os
import posixpath
import shlex
import threading
import time

from loguru import logger

from engine import budget
from engine.closure import stdlib_python
from engine.context import PROJECT_ROOT, RunContext
from engine.errors import StageError, TransportError
from engine.pod_env import private_dir_command
from engine.secrets import add_secret_name, redact

WATCHDOG = PROJECT_ROOT / "remote_image" / "watchdog.py"
POD_STATE_DIR = "/run/lorapod"  # watchdog.py's DEFAULT_DIR and start.sh's: the pod's own /run
EXTRA_KEY = "watchdog-key"  # watchdog.py's EXTRA_KEY
STATUS_WAIT_S = 60.0  # longer than the watchdog's own budget for reading its pod (VERIFY_BUDGET_S, 40 s)
WATCHDOG_PID = posixpath.join(POD_STATE_DIR, "watchdog.pid")  # the one in charge (watchdog.py's take_over)
GONE = "lorapod-watchdog-gone"  # what a heartbeat prints when the watchdog in charge is not running


def heartbeat_file(ctx: RunContext) -> str:
    return posixpath.join(ctx.remote_dir, "heartbeat")


def detached_file(ctx: RunContext) -> str:
    """While this file exists on the pod, its watchdog counts only the deadline, not the heartbeat: the run was
    detached on purpose (provider.detach=true) and nobody beats until `python -m engine.attach` picks it up."""
    return posixpath.join(ctx.remote_dir, "detached")


def mark_detached(ctx: RunContext) -> None:
    """Tell the pod's watchdog the run is detached; said loudly when that fails, since the heartbeat stops next
    and the watchdog would then delete the pod (with the training on it) after provider.heartbeat_timeout_s."""
    out: list[str] = []
    if ctx.transport.exec(f"touch {shlex.quote(detached_file(ctx))}", on_line=out.append) != 0:
        raise StageError(f"could not tell the pod's watchdog that the run is detached: {' '.join(out)[-200:]}",
                         "without it the pod is deleted once the heartbeat goes stale; run without "
                         "provider.detach=true")


def mark_attached(ctx: RunContext) -> None:
    """The heartbeat counts again: touched first, so the watchdog never sees a stale one once the marker goes."""
    command = f"touch {shlex.quote(heartbeat_file(ctx))} && rm -f {shlex.quote(detached_file(ctx))}"
    out: list[str] = []
    if ctx.transport.exec(command, on_line=out.append) != 0:
        raise StageError(f"could not tell the pod's watchdog that the run is attached again: {' '.join(out)[-200:]}")


def max_runtime_s(ctx: RunContext) -> int:
    """provider.max_runtime_s, capped by the pipeline's own limit (pipeline=preflight: a few minutes) and by
    what the run's budget buys at the dearest price its pod may have (engine/budget.py): the pod deletes itself
    before it can spend past budget.max_usd, even when this machine is dead."""
    caps = [int(ctx.cfg.provider.max_runtime_s)]
    if ctx.cfg.pipeline.max_runtime_s:
        caps.append(int(ctx.cfg.pipeline.max_runtime_s))
    bought = budget.seconds_left(ctx)
    if bought is not None:
        caps.append(bought)
    return min(caps)


def deadline_env(ctx: RunContext) -> dict[str, str]:
    p = ctx.cfg.provider
    started = ctx.state.marks.get("pod_requested") or ctx.state.mark("pod_requested")
    return {
        "LORAPOD_MAX_RUNTIME_S": str(max_runtime_s(ctx)),
        "LORAPOD_STARTED_AT": str(int(started)),
        "LORAPOD_HEARTBEAT_FILE": heartbeat_file(ctx),
        "LORAPOD_HEARTBEAT_TIMEOUT_S": str(int(p.heartbeat_timeout_s)),
        "LORAPOD_DETACHED_FILE": detached_file(ctx),
        "LORAPOD_API_URL": str(p.api_url),
        "LORAPOD_WATCHDOG_POLL_S": f"{float(p.watchdog_poll_s):g}",
    }


def _put_private(ctx: RunContext, value: str, remote: str) -> None:
    """A secret into a root-only file on the pod, written from memory over the connection: the folder is
    private before the file exists."""
    folder = posixpath.dirname(remote)
    out: list[str] = []
    if ctx.transport.exec(private_dir_command(folder), on_line=out.append) != 0:
        raise StageError(f"cannot make {folder} on the pod: {' '.join(out)[-200:]}")
    ctx.transport.write_private(remote, value.encode())


def start_watchdog(ctx: RunContext) -> dict:
    """Upload the watchdog (and the user's watchdog key), start it detached, and return what it reports:
    {armed, credential, read, methods, reason}. Recorded in state.json and run-summary.json as `deadline`."""
    p = ctx.cfg.provider
    key_env = p.watchdog_api_key_env
    if key_env:
        add_secret_name(key_env)
        if os.environ.get(key_env):
            _put_private(ctx, os.environ[key_env], posixpath.join(POD_STATE_DIR, EXTRA_KEY))
    remote = posixpath.join(ctx.remote_dir, "watchdog.py")
    ctx.transport.put(WATCHDOG, remote)
    # The pod id too: a watchdog that finds no RunPod variables can still delete with your watchdog key.
    launch_env = {**deadline_env(ctx), "LORAPOD_POD_ID": str((ctx.state.pod or {}).get("id") or "")}
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in launch_env.items())
    log = posixpath.join(ctx.remote_dir, "watchdog.log")
    # Not ctx.remote_python: on an image whose closure probe installs, that venv does not exist yet (the pod
    # must be protected during the install). The watchdog is stdlib only: the image's python3 runs it.
    python = stdlib_python(ctx)
    command = (f"touch {shlex.quote(heartbeat_file(ctx))} && {{ {env} setsid nohup {shlex.quote(python)} "
               f"{shlex.quote(remote)} > {shlex.quote(log)} 2>&1 < /dev/null & echo \"watchdog pid $! at $(date +%s)\"; }}")
    out: list[str] = []
    launched = out[-1].split() if ctx.transport.exec(command, on_line=out.append) == 0 and out else []
    if len(launched) != 5 or launched[:2] != ["watchdog", "pid"] or not (launched[2] + launched[4]).isdigit():
        raise StageError(f"could not start the pod's watchdog: {' '.join(out)[-300:]}",
                         "without it a pod could outlive a crashed lorapod; the run stops here")
    status = _read_status(ctx, int(launched[2]), int(launched[4]), log)
    deadline = {k: status.get(k) for k in ("armed", "credential", "read", "methods", "reason")}
    deadline["armed"] = bool(deadline["armed"])
    deadline["reason"] = redact(str(deadline["reason"])) if deadline["reason"] else None
    deadline["extra_key"] = bool(key_env and os.environ.get(key_env))
    # The cap the watchdog was given (not provider.max_runtime_s alone): what a detached run's message tells.
    deadline["max_runtime_s"] = int(launch_env["LORAPOD_MAX_RUNTIME_S"])
    deadline["deletes_at"] = int(launch_env["LORAPOD_STARTED_AT"]) + deadline["max_runtime_s"]
    ctx.state.outputs["deadline"] = deadline
    ctx.save()
    _report(ctx, deadline)
    return deadline


def _read_status(ctx: RunContext, pid: int, launched_at: int, log: str) -> dict:
    """The status file of the watchdog we started (written since we started it: a pid of an earlier boot
    may repeat), or of the one it left in charge."""
    deadline, launched, seen = time.monotonic() + STATUS_WAIT_S, pid, {pid}
    while time.monotonic() < deadline:
        status = _cat_json(ctx, posixpath.join(POD_STATE_DIR, f"status-{pid}.json"))
        if pid == launched and int(status.get("started") or 0) < launched_at - 2:
            status = {}  # an earlier boot's: not written yet
        if status.get("state") == "deferred":
            holder = status.get("deferred_to")
            if not isinstance(holder, int) or holder in seen:
                why = f"deferred to a watchdog it could not name ({holder!r})"
                break
            pid = holder
            seen.add(pid)
            continue
        if status.get("state") not in (None, "verifying"):
            return status
        if not status and ctx.transport.exec(f"kill -0 {pid}") != 0:
            why = "exited without a word"  # e.g. a configuration it refused: its log says which
            break
        time.sleep(0.5)
    else:
        why = f"said nothing within {STATUS_WAIT_S:.0f}s"
    tail: list[str] = []
    ctx.transport.exec(f"tail -n 5 {shlex.quote(log)}", on_line=tail.append)
    return {"armed": False, "reason": f"the watchdog {why}; its log ends: " + " | ".join(tail)[-400:]}


def _cat_json(ctx: RunContext, path: str) -> dict:
    lines: list[str] = []
    ctx.transport.exec(f"cat {shlex.quote(path)} 2>/dev/null", on_line=lines.append)
    try:
        found = json.loads("\n".join(lines)) if lines else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _report(ctx: RunContext, deadline: dict) -> None:
    p = ctx.cfg.provider
    if deadline["armed"]:
        logger.info(f"pod deadline armed: the {deadline['credential']} can read the pod ({deadline['read']}); "
                    f"it is deleted after {max_runtime_s(ctx)}s, or {p.heartbeat_timeout_s}s without a heartbeat "
                    f"from here (ways: {', '.join(deadline['methods'] or [])})")
        return
    pod = ctx.state.pod or {}
    message = (f"THE POD'S DEADLINE IS NOT ARMED: {deadline['reason']}. If this machine dies, sleeps or loses its "
               f"network from now on, nothing deletes pod {pod.get('id')} and it bills "
               f"${pod.get('price_per_hour') or 0:.2f}/h until you delete it.")
    if deadline.get("extra_key"):
        fix = (f"the key in {p.watchdog_api_key_env} (provider.watchdog_api_key_env) could not read the pod either: "
               "give it read and write access to pods in the RunPod console (Settings > API Keys); ")
    else:
        fix = ("create a RunPod API key restricted to pods (console > Settings > API Keys), put it in .env as "
               "LORAPOD_WATCHDOG_KEY=... and run with provider.watchdog_api_key_env=LORAPOD_WATCHDOG_KEY; ")
    fix += "set provider.require_deadline=true to stop before training whenever this happens"
    if p.require_deadline:
        raise StageError(message + " provider.require_deadline is set, so the run stops before training.", fix)
    logger.warning(f"{message}\n  To fix: {fix}.\n  Until then keep this machine awake and online, and check "
                   "the RunPod console after the run.")


class Heartbeat:
    """Touches the heartbeat file every interval from a daemon thread until stopped. Nothing it meets stops
    it: every failure is logged and the next beat is tried. Each beat also asks whether the watchdog in charge
    still runs: once the deadline was armed, a watchdog that died is said loudly (once)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        p = ctx.cfg.provider
        # At least three beats per timeout, so one missed beat never lets the watchdog fire.
        self.interval = min(float(p.heartbeat_interval_s), p.heartbeat_timeout_s / 3)
        self.command = (f"touch {shlex.quote(heartbeat_file(ctx))} && {{ kill -0 \"$(cat {WATCHDOG_PID} 2>/dev/null)\" "
                        f"2>/dev/null || echo {GONE}; }}")
        self._warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lorapod-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except TransportError as exc:  # a reconnect is under way; the next beat will tell
                logger.debug(f"heartbeat missed: {exc}")
            except Exception as exc:  # noqa: BLE001 - a dead heartbeat would let the watchdog delete a live run
                logger.warning(f"heartbeat missed ({type(exc).__name__}: {exc}); trying again in {self.interval:g}s")

    def beat(self) -> None:
        transport = self.ctx.transport
        if transport is None:
            return
        said: list[str] = []
        transport.exec(self.command, on_line=said.append, timeout=30)
        armed = (self.ctx.state.outputs.get("deadline") or {}).get("armed")
        if GONE in said and armed and not self._warned:
            self._warned = True
            pod = self.ctx.state.pod or {}
            logger.error(f"THE POD'S WATCHDOG IS NO LONGER RUNNING (pod {pod.get('id')}): from now on nothing on the "
                         "pod deletes it if this machine dies. The run goes on; keep this machine awake and online, "
                         f"and see {posixpath.join(self.ctx.remote_dir, 'watchdog.log')} on the pod.")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

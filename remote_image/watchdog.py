#!/usr/bin/env python3
"""lorapod's pod watchdog: the pod deletes itself when its run overstays, even if lorapod is gone.

RunPod does not enforce a pod's terminateAfter, so a pod whose orchestrator died keeps billing. This
process, started from boot by start.sh and again by lorapod after it connects, deletes its own pod through
RunPod's API with the pod-scoped key RunPod puts in the container (never the user's key) when

  * the deadline passes: LORAPOD_MAX_RUNTIME_S seconds after LORAPOD_STARTED_AT (or after its own start), or
  * the heartbeat goes stale: LORAPOD_HEARTBEAT_FILE, which lorapod touches over SSH, has not been touched
    for LORAPOD_HEARTBEAT_TIMEOUT_S seconds (counted only once the file exists).

Standard library only, so it runs on any image that has python3 (lorapod's or Unsloth's). Run --help for
its environment variables.

One watchdog per pod, the newest wins: a starting watchdog takes the lock file in LORAPOD_WATCHDOG_DIR and
stops the one holding it (SIGTERM), so the copy lorapod uploads replaces the boot copy. A watchdog whose
configuration is invalid exits before touching the lock, leaving the running one in charge.

Log lines go to stdout as `<UTC time> lorapod-watchdog[<pid>]: <message>`. The API key is never printed.
Exit status: 0 after deleting the pod (or, outside RunPod, after saying it would), or when replaced;
2 for an invalid configuration; 1 when the running watchdog could not be replaced.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Optional

DEFAULT_API_URL = "https://api.runpod.io/v2"
DEFAULT_POLL_S = 15.0
DEFAULT_DIR = "/tmp/lorapod-watchdog"
# Where a process started over SSH finds what RunPod put in the container's environment: sshd does not
# pass it on, and images differ in whether they export it to login shells.
CONTAINER_ENVIRON = "/proc/1/environ"
RUNPOD_VARS = ("RUNPOD_POD_ID", "RUNPOD_API_KEY")
MAX_RETRY_DELAY_S = 60.0
REPLACE_WAIT_S = 10.0

ENV_HELP = """environment:
  LORAPOD_MAX_RUNTIME_S        delete the pod this many seconds after the start time
  LORAPOD_STARTED_AT           the start time, epoch seconds (default: when this watchdog started)
  LORAPOD_HEARTBEAT_FILE       a file lorapod touches while it is alive (optional)
  LORAPOD_HEARTBEAT_TIMEOUT_S  delete the pod when that file is this many seconds old; no file, no timeout
  LORAPOD_API_URL              RunPod's REST API (default: https://api.runpod.io/v2)
  LORAPOD_WATCHDOG_POLL_S      seconds between checks (default: 15)
  LORAPOD_WATCHDOG_DIR         holds watchdog.lock and watchdog.pid (default: /tmp/lorapod-watchdog)
  RUNPOD_POD_ID, RUNPOD_API_KEY
                               set by RunPod in the container; read from /proc/1/environ when this process
                               was started without them (over SSH); set but empty: not read from there.
                               No pod id: the watchdog only logs.
At least one of LORAPOD_MAX_RUNTIME_S and LORAPOD_HEARTBEAT_FILE is required."""


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    max_runtime_s: Optional[float]
    started_at: float
    heartbeat_file: Optional[str]
    heartbeat_timeout_s: Optional[float]
    api_url: str
    poll_s: float
    workdir: str
    pod_id: Optional[str]
    api_key: Optional[str]


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} lorapod-watchdog[{os.getpid()}]: {message}", flush=True)


def container_environ(path: str = CONTAINER_ENVIRON) -> dict[str, str]:
    """RunPod's variables from the container's first process; empty when unreadable (not root, not Linux)."""
    try:
        with open(path, "rb") as fh:
            entries = fh.read().split(b"\0")
    except OSError:
        return {}
    pairs = (e.decode(errors="replace").partition("=") for e in entries if b"=" in e)
    return {k: v for k, _, v in pairs if k in RUNPOD_VARS}


def _seconds(env: dict[str, str], name: str, positive: bool = True) -> Optional[float]:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if positive and value <= 0:
        raise ConfigError(f"{name}={raw!r} must be > 0")
    return value


def load_config(env: dict[str, str], now: float, fallback: dict[str, str]) -> Config:
    """The configuration from the environment; `fallback` fills RunPod's variables that `env` lacks."""
    max_runtime = _seconds(env, "LORAPOD_MAX_RUNTIME_S")
    started_at = _seconds(env, "LORAPOD_STARTED_AT", positive=False)
    heartbeat_file = env.get("LORAPOD_HEARTBEAT_FILE") or None
    heartbeat_timeout = _seconds(env, "LORAPOD_HEARTBEAT_TIMEOUT_S")
    poll = _seconds(env, "LORAPOD_WATCHDOG_POLL_S")
    if max_runtime is None and heartbeat_file is None:
        raise ConfigError("nothing to watch: set LORAPOD_MAX_RUNTIME_S and/or LORAPOD_HEARTBEAT_FILE")
    if heartbeat_file is not None and heartbeat_timeout is None:
        raise ConfigError("LORAPOD_HEARTBEAT_FILE needs LORAPOD_HEARTBEAT_TIMEOUT_S")
    # A variable set in our own environment wins even when empty: RUNPOD_POD_ID= means "not on RunPod".
    pod_id = (env["RUNPOD_POD_ID"] if "RUNPOD_POD_ID" in env else fallback.get("RUNPOD_POD_ID")) or None
    api_key = (env["RUNPOD_API_KEY"] if "RUNPOD_API_KEY" in env else fallback.get("RUNPOD_API_KEY")) or None
    if pod_id and not api_key:
        raise ConfigError(f"RUNPOD_POD_ID is {pod_id} but RUNPOD_API_KEY is not set: the pod could not delete "
                          "itself. RunPod sets both in every pod; run this where they are visible")
    return Config(
        max_runtime_s=max_runtime,
        started_at=now if started_at is None else started_at,
        heartbeat_file=heartbeat_file,
        heartbeat_timeout_s=heartbeat_timeout,
        api_url=(env.get("LORAPOD_API_URL") or DEFAULT_API_URL).rstrip("/"),
        poll_s=DEFAULT_POLL_S if poll is None else poll,
        workdir=env.get("LORAPOD_WATCHDOG_DIR") or DEFAULT_DIR,
        pod_id=pod_id,
        api_key=api_key,
    )


def heartbeat_mtime(cfg: Config) -> Optional[float]:
    if cfg.heartbeat_file is None:
        return None
    try:
        return os.stat(cfg.heartbeat_file).st_mtime
    except FileNotFoundError:
        return None


def reason_to_delete(cfg: Config, now: float, beat: Optional[float]) -> Optional[str]:
    """Why the pod must go now, or None. `beat` is the heartbeat file's mtime (None: no file yet)."""
    if cfg.max_runtime_s is not None and now >= cfg.started_at + cfg.max_runtime_s:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cfg.started_at))
        return f"deadline passed: LORAPOD_MAX_RUNTIME_S={cfg.max_runtime_s:g} counted from {started}"
    if beat is not None and now - beat > cfg.heartbeat_timeout_s:
        return (f"heartbeat stale: {cfg.heartbeat_file} last touched {now - beat:.0f}s ago "
                f"(LORAPOD_HEARTBEAT_TIMEOUT_S={cfg.heartbeat_timeout_s:g})")
    return None


def _running_watchdog(pid_file: str) -> Optional[int]:
    """The pid in the pid file, if that process is a watchdog: never signal a stranger that reused the pid."""
    try:
        with open(pid_file) as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return pid if b"watchdog" in fh.read() else None
    except (OSError, ValueError):
        return None


def take_over(workdir: str) -> None:
    """Hold the lock for the rest of this process's life (the fd is never closed), stopping its holder."""
    os.makedirs(workdir, exist_ok=True)
    lock_path, pid_path = os.path.join(workdir, "watchdog.lock"), os.path.join(workdir, "watchdog.pid")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        old = _running_watchdog(pid_path)
        if old is not None:
            log(f"replacing the watchdog already running (pid {old})")
            os.kill(old, signal.SIGTERM)
        deadline = time.monotonic() + REPLACE_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log(f"the watchdog holding {lock_path} did not stop; it stays in charge")
                    sys.exit(1)
                time.sleep(0.1)
    with open(pid_path, "w") as fh:
        fh.write(f"{os.getpid()}\n")


def delete_pod(cfg: Config) -> None:
    """DELETE the pod until the API answers 2xx or 404 (already gone). Every other outcome is retried."""
    url = f"{cfg.api_url}/pods/{urllib.parse.quote(cfg.pod_id, safe='')}"
    headers = {"Authorization": f"Bearer {cfg.api_key}", "User-Agent": "lorapod-watchdog"}
    attempt = 0
    while True:
        request = urllib.request.Request(url, method="DELETE", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                log(f"DELETE {url} -> {response.status}: pod {cfg.pod_id} is being deleted")
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                log(f"DELETE {url} -> 404: pod {cfg.pod_id} is already gone")
                return
            problem = f"HTTP {exc.code} {_detail(exc)}"
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        delay = min(MAX_RETRY_DELAY_S, cfg.poll_s * 2 ** attempt)
        attempt += 1
        log(f"DELETE {url} failed ({problem.replace(cfg.api_key, '***')}); retrying in {delay:g}s")
        time.sleep(delay)


def _detail(exc: urllib.error.HTTPError) -> str:
    """The problem+json title/detail RunPod answers with, short; raw text when it is not JSON."""
    try:
        body = exc.read(2000).decode(errors="replace")
    except OSError:
        return ""
    try:
        problem = json.loads(body)
        return " ".join(str(problem[k]) for k in ("title", "detail") if problem.get(k))[:300]
    except (ValueError, AttributeError):
        return body.strip()[:300]


def _stop(signum, frame) -> None:
    log("stopped by SIGTERM (replaced by a newer watchdog, or the container is stopping)")
    sys.exit(0)


def main(argv: Optional[list[str]] = None) -> int:
    argparse.ArgumentParser(
        prog="watchdog.py", description=__doc__.split("\n\n")[0], epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    try:
        cfg = load_config(dict(os.environ), time.time(), container_environ())
    except ConfigError as exc:
        log(f"not started: {exc}")
        return 2
    signal.signal(signal.SIGTERM, _stop)
    take_over(cfg.workdir)
    watching = []
    if cfg.max_runtime_s is not None:
        watching.append(f"deadline {cfg.max_runtime_s:g}s")
    if cfg.heartbeat_file is not None:
        watching.append(f"heartbeat {cfg.heartbeat_file} (timeout {cfg.heartbeat_timeout_s:g}s)")
    where = f"pod {cfg.pod_id}" if cfg.pod_id else "no RUNPOD_POD_ID: not on RunPod, will only log"
    log(f"watching {' and '.join(watching)}; {where}")

    while (reason := reason_to_delete(cfg, time.time(), heartbeat_mtime(cfg))) is None:
        time.sleep(cfg.poll_s)
    log(reason)
    if not cfg.pod_id:
        log("would delete the pod now, but RUNPOD_POD_ID is not set: not on RunPod, nothing to delete")
        return 0
    delete_pod(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())

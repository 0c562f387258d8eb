#!/usr/bin/env python3
"""lorapod's pod watchdog: the pod deletes itself when its run overstays, even if lorapod is gone.

RunPod does not enforce a pod's terminateAfter, so a pod whose orchestrator died keeps billing. This
process, started from boot by start.sh and again by lorapod after it connects, deletes its own pod when

  * the deadline passes: LORAPOD_MAX_RUNTIME_S seconds after LORAPOD_STARTED_AT (or after its own start), or
  * the heartbeat goes stale: LORAPOD_HEARTBEAT_FILE, which lorapod touches over SSH, has not been touched
    for LORAPOD_HEARTBEAT_TIMEOUT_S seconds. Before the file exists, the watchdog's own start counts as the
    last beat: a lorapod that died before it ever connected stops the pod too. While LORAPOD_DETACHED_FILE
    exists, the run was detached on purpose (provider.detach=true: nobody beats until `python -m engine.attach`
    picks the run up), so only the deadline counts; attach touches the heartbeat, then removes that file.

Credentials. RunPod puts the pod id and a pod-scoped key into the container's environment, which only PID 1
has: an SSH session starts with a fresh one, and an image whose PID 1 is sshd loses it from /proc/1/environ
(sshd writes its process title over it). So the watchdog takes them from, in order: its own environment
(the boot copy start.sh starts), the file start.sh saves before it execs anything (<dir>/credentials),
/proc/1/environ (images whose PID 1 is a shell), and /etc/rp_environment (where RunPod's official images
export them for login shells). A key the user made for this purpose (a RunPod restricted
key) may be in <dir>/watchdog-key, uploaded by lorapod; it is tried after the pod key.

Deleting. What a pod-scoped key may do is not documented (one report from a real pod: REST refused with 403
while GraphQL worked), so every way is tried, in order, with each key until one works: REST
DELETE /pods/{id}; REST POST /pods/{id}/action terminate; GraphQL podTerminate (the API URL's /v2 replaced
by /graphql); `runpodctl remove pod` when the image has it. 401/403 mean "try the next way"; network
errors, 5xx and 429 are retried with backoff.

Armed means verified. At start the watchdog reads its own pod with each key (REST, then GraphQL) and writes
what it found to <dir>/status-<pid>.json, which lorapod reads: the credential, the read that worked, the
ways it will try, and `armed` — true only when an authenticated read of its own pod succeeded.

One watchdog per pod, the newest wins: a starting watchdog takes the lock file in <dir> and stops the one
holding it (SIGTERM) — except that a copy without credentials never replaces one that has them. A
watchdog whose configuration is invalid exits before touching the lock. Nothing read from the heartbeat
file or the network ever stops it: each check that fails is logged and the loop goes on.

Standard library only, so it runs on any image that has python3. Log lines go to stdout as
`<UTC time> lorapod-watchdog[<pid>]: <message>`; no key is ever printed. Exit status: 0 after deleting the
pod (or, outside RunPod, after saying it would), when replaced, or when it left a running one in charge;
2 for an invalid configuration; 1 when the running watchdog could not be replaced.
"""
from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Optional

DEFAULT_API_URL = "https://api.runpod.io/v2"
DEFAULT_POLL_S = 15.0
# The pod's own /run: not on a network volume, private to the container, gone with it.
DEFAULT_DIR = "/run/lorapod"
CREDENTIALS = "credentials"  # written by start.sh, KEY=VALUE lines, root only
EXTRA_KEY = "watchdog-key"  # the user's own key for this purpose, uploaded by lorapod, root only
CONTAINER_ENVIRON = "/proc/1/environ"
# RunPod's official images export RUNPOD_* here for login shells (runpod/containers, container-template/start.sh:
# `printenv | grep -E '^RUNPOD_|...' | awk ... >> /etc/rp_environment`, lines `export NAME="value"`).
RP_ENVIRONMENT = "/etc/rp_environment"
RUNPOD_VARS = ("RUNPOD_POD_ID", "RUNPOD_API_KEY")
MAX_RETRY_DELAY_S = 60.0
REPLACE_WAIT_S = 10.0
HTTP_TIMEOUT_S = 30.0
VERIFY_BUDGET_S = 40.0  # engine/deadline.py waits STATUS_WAIT_S (longer) for the verdict
CONFIRM_S = 120.0  # after an accepted delete, how long to read whether the pod went before sending it again

ENV_HELP = f"""environment:
  LORAPOD_MAX_RUNTIME_S        delete the pod this many seconds after the start time
  LORAPOD_STARTED_AT           the start time, epoch seconds (default: when this watchdog started)
  LORAPOD_HEARTBEAT_FILE       a file lorapod touches while it is alive (optional)
  LORAPOD_HEARTBEAT_TIMEOUT_S  delete the pod when that file is this many seconds old (while it does not
                               exist yet: this many seconds after the watchdog started)
  LORAPOD_DETACHED_FILE        while this file exists the run is detached on purpose: the heartbeat is not
                               checked, only LORAPOD_MAX_RUNTIME_S (optional)
  LORAPOD_API_URL              RunPod's REST API (default: {DEFAULT_API_URL}); GraphQL is beside it
  LORAPOD_WATCHDOG_POLL_S      seconds between checks (default: {DEFAULT_POLL_S:g})
  LORAPOD_WATCHDOG_DIR         lock, pid and status files, {CREDENTIALS} and {EXTRA_KEY} (default: {DEFAULT_DIR})
  RUNPOD_POD_ID, RUNPOD_API_KEY
                               set by RunPod in the container; when this process was started without them
                               (over SSH), read from $LORAPOD_WATCHDOG_DIR/{CREDENTIALS}, else from
                               {CONTAINER_ENVIRON}, else {RP_ENVIRONMENT}. Set but empty: looked for
                               nowhere else.
                               No pod id: the watchdog only logs.
At least one of LORAPOD_MAX_RUNTIME_S and LORAPOD_HEARTBEAT_FILE is required."""


class ConfigError(ValueError):
    pass


@dataclass
class Key:
    label: str  # what it is and where it came from, for logs and the status file; never the key
    value: str


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
    keys: list[Key] = field(default_factory=list)
    watch_start: float = 0.0  # this process's start: the last beat while the heartbeat file does not exist
    runpodctl: Optional[str] = None  # LORAPOD_RUNPODCTL: a runpodctl binary to use whatever the API URL
    detached_file: Optional[str] = None  # LORAPOD_DETACHED_FILE: while it exists only the deadline counts

    def detached(self) -> bool:
        """Whether the run is detached on purpose now; a file that cannot be checked counts as not detached, so
        the heartbeat still protects the pod."""
        try:
            return bool(self.detached_file) and os.path.isfile(self.detached_file)
        except (OSError, ValueError):
            return False

    @property
    def graphql_url(self) -> str:
        """GraphQL beside the REST API: https://api.runpod.io/v2 -> https://api.runpod.io/graphql."""
        base = self.api_url[:-3] if self.api_url.endswith("/v2") else self.api_url
        return base + "/graphql"

    def hide(self, text: str) -> str:
        for key in self.keys:
            text = text.replace(key.value, "***").replace(urllib.parse.quote(key.value, safe=""), "***")
        return text


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        print(f"{stamp} lorapod-watchdog[{os.getpid()}]: {message}", flush=True)
    except (OSError, ValueError):  # a full disk or a closed stream: the pod must still be deleted
        pass


# ---------------------------------------------------------------------------------------------- configuration

def read_pairs(path: str, separator: bytes) -> dict[str, str]:
    """RunPod's variables from a file of KEY=VALUE entries; empty when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            entries = fh.read().split(separator)
    except OSError:
        return {}
    pairs = (e.decode(errors="replace").strip("\r\n").removeprefix("export ").partition("=") for e in entries
             if b"=" in e)
    return {k: v.strip('"') for k, _, v in pairs if k in RUNPOD_VARS and v.strip('"')}


def find_credentials(env: dict[str, str], workdir: str, environ_path: str = CONTAINER_ENVIRON,
                     rp_environment: str = RP_ENVIRONMENT) -> tuple[Optional[str], Optional[str], str]:
    """(pod id, pod key, where they came from), in the order the module docstring gives."""
    if env.get("RUNPOD_POD_ID") and env.get("RUNPOD_API_KEY"):
        return env["RUNPOD_POD_ID"], env["RUNPOD_API_KEY"], "this process's environment"
    if "RUNPOD_POD_ID" in env and not env["RUNPOD_POD_ID"]:
        return None, None, "nowhere: RUNPOD_POD_ID is set empty, meaning not on RunPod"
    saved = os.path.join(workdir, CREDENTIALS)
    for found, source in ((read_pairs(saved, b"\n"), saved), (read_pairs(environ_path, b"\0"), environ_path),
                          (read_pairs(rp_environment, b"\n"), rp_environment)):
        if found.get("RUNPOD_POD_ID"):
            return found["RUNPOD_POD_ID"], found.get("RUNPOD_API_KEY"), source
    return None, None, "nowhere"


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


def load_config(env: dict[str, str], now: float, environ_path: str = CONTAINER_ENVIRON,
                rp_environment: str = RP_ENVIRONMENT) -> Config:
    max_runtime = _seconds(env, "LORAPOD_MAX_RUNTIME_S")
    started_at = _seconds(env, "LORAPOD_STARTED_AT", positive=False)
    heartbeat_file = env.get("LORAPOD_HEARTBEAT_FILE") or None
    heartbeat_timeout = _seconds(env, "LORAPOD_HEARTBEAT_TIMEOUT_S")
    poll = _seconds(env, "LORAPOD_WATCHDOG_POLL_S")
    detached_file = env.get("LORAPOD_DETACHED_FILE") or None
    if detached_file is not None and max_runtime is None:
        raise ConfigError("LORAPOD_DETACHED_FILE needs LORAPOD_MAX_RUNTIME_S: a detached pod is protected by its "
                          "deadline alone")
    if max_runtime is None and heartbeat_file is None:
        raise ConfigError("nothing to watch: set LORAPOD_MAX_RUNTIME_S and/or LORAPOD_HEARTBEAT_FILE")
    if heartbeat_file is not None and heartbeat_timeout is None:
        raise ConfigError("LORAPOD_HEARTBEAT_FILE needs LORAPOD_HEARTBEAT_TIMEOUT_S")
    workdir = env.get("LORAPOD_WATCHDOG_DIR") or DEFAULT_DIR
    pod_id, pod_key, source = find_credentials(env, workdir, environ_path, rp_environment)
    if not pod_id and "RUNPOD_POD_ID" not in env:
        pod_id = env.get("LORAPOD_POD_ID") or None  # lorapod knows which pod it rented: enough for a key of yours
    keys = [Key(f"pod key (from {source})", pod_key)] if pod_id and pod_key else []
    try:
        with open(os.path.join(workdir, EXTRA_KEY), encoding="utf-8") as fh:
            extra = fh.read().strip()
    except OSError:
        extra = ""
    if pod_id and extra:
        keys.append(Key(f"your watchdog key (from {os.path.join(workdir, EXTRA_KEY)})", extra))
    return Config(
        max_runtime_s=max_runtime,
        started_at=now if started_at is None else started_at,
        heartbeat_file=heartbeat_file,
        heartbeat_timeout_s=heartbeat_timeout,
        api_url=(env.get("LORAPOD_API_URL") or DEFAULT_API_URL).rstrip("/"),
        poll_s=DEFAULT_POLL_S if poll is None else poll,
        workdir=workdir,
        pod_id=pod_id,
        keys=keys,
        watch_start=now,
        runpodctl=env.get("LORAPOD_RUNPODCTL") or None,
        detached_file=detached_file,
    )


# ---------------------------------------------------------------------------------------------- when to delete

class Heartbeat:
    """The heartbeat file's last known mtime. A read that fails for any reason but "no file yet" (a
    permission change, EIO on a network volume) keeps the last value: the beat only ages, so a file that
    stays unreadable ends in a deletion rather than a pod that bills forever."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.last: Optional[float] = None
        self._error: Optional[str] = None

    def read(self) -> Optional[float]:
        if self.cfg.heartbeat_file is None:
            return None
        try:
            self.last = os.stat(self.cfg.heartbeat_file).st_mtime
            self._error = None
        except FileNotFoundError:
            pass
        except OSError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._error:
                log(f"cannot read the heartbeat file ({problem}); counting from its last known time")
                self._error = problem
        return self.last


def reason_to_delete(cfg: Config, now: float, beat: Optional[float], detached: bool = False) -> Optional[str]:
    """Why the pod must go now, or None. `beat` is the heartbeat file's mtime (None: no file seen yet);
    `detached`: the run was detached on purpose, so the heartbeat does not count, only the deadline."""
    if cfg.max_runtime_s is not None and now >= cfg.started_at + cfg.max_runtime_s:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cfg.started_at))
        return f"deadline passed: LORAPOD_MAX_RUNTIME_S={cfg.max_runtime_s:g} counted from {started}"
    if cfg.heartbeat_file is None or detached:
        return None
    if beat is None and now - cfg.watch_start > cfg.heartbeat_timeout_s:
        return (f"no heartbeat: {cfg.heartbeat_file} was never touched in the {now - cfg.watch_start:.0f}s since "
                f"this watchdog started (LORAPOD_HEARTBEAT_TIMEOUT_S={cfg.heartbeat_timeout_s:g})")
    if beat is not None and now - beat > cfg.heartbeat_timeout_s:
        return (f"heartbeat stale: {cfg.heartbeat_file} last touched {now - beat:.0f}s ago "
                f"(LORAPOD_HEARTBEAT_TIMEOUT_S={cfg.heartbeat_timeout_s:g})")
    return None


# ---------------------------------------------------------------------------------------------- the API

DONE, GONE, REFUSED, FAILED = "done", "gone", "refused", "failed"  # outcomes of one attempt


@dataclass
class Outcome:
    kind: str  # DONE, GONE, REFUSED (401/403: try the next way) or FAILED (retry later)
    detail: str


def _http(method: str, url: str, key: str, body: Optional[dict] = None,
          timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
    """(status, body) of one request; raises OSError (URLError included) when no answer came."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "User-Agent": "lorapod-watchdog"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(100_000)
    except urllib.error.HTTPError as exc:
        try:
            text = exc.read(2000)
        except OSError:
            text = b""
        return exc.code, text


def _problem(raw: bytes) -> str:
    """RunPod's problem+json title/detail (or GraphQL's error messages), short; raw text otherwise."""
    text = raw.decode(errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
        return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in doc["errors"])[:300]
    if isinstance(doc, dict):
        return " ".join(str(doc[k]) for k in ("title", "detail") if doc.get(k))[:300]
    return text.strip()[:300]


def _judge(status: int, raw: bytes, ok: str) -> Outcome:
    if 200 <= status < 300:
        return Outcome(DONE, f"{status}: {ok}")
    if status == 404:
        return Outcome(GONE, "404: the pod is already gone")
    kind = REFUSED if status in (401, 403) else FAILED
    return Outcome(kind, f"HTTP {status} {_problem(raw)}".strip())


def _graphql(cfg: Config, key: str, query: str, variables: dict, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, dict, bytes]:
    # RunPod documents the key as the api_key query parameter; public scripts send a Bearer header: both go.
    url = f"{cfg.graphql_url}?api_key={urllib.parse.quote(key, safe='')}"
    status, raw = _http("POST", url, key, {"query": query, "variables": variables}, timeout)
    try:
        doc = json.loads(raw.decode(errors="replace")) if raw else {}
    except ValueError:
        doc = {}
    return status, doc if isinstance(doc, dict) else {}, raw


def _pod_url(cfg: Config) -> str:
    return f"{cfg.api_url}/pods/{urllib.parse.quote(cfg.pod_id, safe='')}"


def rest_delete(cfg: Config, key: str) -> Outcome:
    status, raw = _http("DELETE", _pod_url(cfg), key)
    return _judge(status, raw, "the pod is being deleted")


def rest_action(cfg: Config, key: str) -> Outcome:
    status, raw = _http("POST", _pod_url(cfg) + "/action", key, {"action": "terminate"})
    return _judge(status, raw, "the pod is being terminated")


def graphql_terminate(cfg: Config, key: str) -> Outcome:
    status, doc, raw = _graphql(cfg, key, "mutation Terminate($input: PodTerminateInput!) "
                                          "{ podTerminate(input: $input) }", {"input": {"podId": cfg.pod_id}})
    if status == 200 and not doc.get("errors") and "data" in doc:
        return Outcome(DONE, "podTerminate accepted: the pod is being terminated")
    if status == 200:  # GraphQL answers a refusal with 200 and `errors`: this way does not work for this key
        return Outcome(REFUSED, f"podTerminate refused: {_problem(raw)}")
    return _judge(status, raw, "")


def runpodctl(cfg: Config) -> Optional[str]:
    """runpodctl talks to RunPod itself, whatever LORAPOD_API_URL says: used only against RunPod's own API,
    unless LORAPOD_RUNPODCTL names the binary explicitly."""
    if cfg.runpodctl:
        return cfg.runpodctl
    return shutil.which("runpodctl") if cfg.api_url == DEFAULT_API_URL else None


def runpodctl_remove(cfg: Config, key: str) -> Outcome:
    tool = runpodctl(cfg)
    if tool is None:
        return Outcome(REFUSED, "no runpodctl here (or LORAPOD_API_URL is not RunPod's own)")
    try:  # the key in its environment, as runpodctl reads it: never on a command line that `ps` shows
        done = subprocess.run([tool, "remove", "pod", cfg.pod_id], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "RUNPOD_API_KEY": key}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Outcome(FAILED, f"runpodctl failed: {exc}")
    said = (done.stdout + done.stderr).strip().replace("\n", " ")[-300:]
    return Outcome(DONE if done.returncode == 0 else REFUSED, f"runpodctl exit {done.returncode}: {said}")


WAYS: list[tuple[str, Callable[[Config, str], Outcome]]] = [
    ("rest-delete", rest_delete), ("rest-action", rest_action), ("graphql", graphql_terminate),
    ("runpodctl", runpodctl_remove),
]


def methods(cfg: Config) -> list[str]:
    """The ways this watchdog will try, in order (runpodctl only when the image has it)."""
    return [name for name, _ in WAYS if name != "runpodctl" or runpodctl(cfg)]


def rest_read(cfg: Config, key: str) -> Outcome:
    status, raw = _http("GET", _pod_url(cfg), key, timeout=10)
    outcome = _judge(status, raw, "read its own pod")
    if outcome.kind == DONE and b'"TERMINATED"' in raw:
        try:
            if json.loads(raw).get("status") == "TERMINATED":
                return Outcome(GONE, "the pod is terminated")
        except (ValueError, AttributeError):
            pass
    return outcome


def graphql_read(cfg: Config, key: str) -> Outcome:
    status, doc, raw = _graphql(cfg, key, "query Pod($input: PodFilter!) { pod(input: $input) { id desiredStatus } }",
                                {"input": {"podId": cfg.pod_id}}, timeout=10)
    pod = (doc.get("data") or {}).get("pod") if status == 200 else None
    if isinstance(pod, dict) and pod.get("id") == cfg.pod_id:
        if pod.get("desiredStatus") == "TERMINATED":
            return Outcome(GONE, "the pod is terminated")
        return Outcome(DONE, "read its own pod")
    if status == 200 and not doc.get("errors") and "data" in doc:
        return Outcome(GONE, "no such pod")
    if status == 200:
        return Outcome(REFUSED, f"pod query refused: {_problem(raw)}")
    return _judge(status, raw, "")


READS = (("rest", rest_read), ("graphql", graphql_read))


def attempt(cfg: Config, way: Callable[[Config, str], Outcome], key: Key) -> Outcome:
    """One try; any exception is an outcome too (FAILED), so nothing the network does stops the watchdog."""
    try:
        outcome = way(cfg, key.value)
    except Exception as exc:  # noqa: BLE001 - a watchdog that dies on a surprise leaves the pod billing
        outcome = Outcome(FAILED, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
    outcome.detail = cfg.hide(outcome.detail)
    return outcome


def verify(cfg: Config) -> dict:
    """Whether a key of ours can read this pod (REST, else GraphQL): what lorapod reports as armed. Bounded by
    VERIFY_BUDGET_S, so lorapod (which waits a little longer) always hears the answer."""
    if not cfg.pod_id:
        return {"armed": False, "credential": None, "read": None,
                "reason": "no RUNPOD_POD_ID: not on RunPod, nothing to delete"}
    if not cfg.keys:
        return {"armed": False, "credential": None, "read": None,
                "reason": f"pod {cfg.pod_id} but no key: not in this environment, {CREDENTIALS}, /proc/1/environ, "
                          f"{RP_ENVIRONMENT} or {EXTRA_KEY}"}
    give_up = time.monotonic() + VERIFY_BUDGET_S
    problems: list[str] = []
    for round_ in itertools.count():
        problems, transient = [], False
        for key in cfg.keys:
            for name, read in READS:
                if time.monotonic() > give_up:
                    problems.append(f"no answer within {VERIFY_BUDGET_S:g}s")
                    return {"armed": False, "credential": None, "read": None, "reason": "; ".join(problems)}
                outcome = attempt(cfg, read, key)
                if outcome.kind == DONE:
                    return {"armed": True, "credential": key.label, "read": name, "reason": None}
                problems.append(f"{name} with the {key.label}: {outcome.detail}")
                transient = transient or outcome.kind == FAILED
        if not transient:
            break
        time.sleep(min(cfg.poll_s * 2 ** round_, 5.0, max(0.0, give_up - time.monotonic())))
    return {"armed": False, "credential": None, "read": None, "reason": "; ".join(problems)}


def is_gone(cfg: Config) -> bool:
    """Whether a read with any of our keys shows the pod gone. A refusal proves nothing: some APIs answer a
    key they will not serve with 404, so "404 on delete" alone is never taken for "gone"."""
    for key in cfg.keys:
        for _, read in READS:
            if attempt(cfg, read, key).kind == GONE:
                return True
    return False


def delete_pod(cfg: Config) -> None:
    """Every way with every key, in order, until one deletes the pod (or finds it gone, confirmed by a read).
    Transient failures are retried with backoff; when every way was refused, the next round waits the
    longest delay. An accepted request is checked too: until a read shows the pod gone, it is sent again."""
    for round_ in itertools.count():
        refused_all, accepted = True, False
        for key in cfg.keys:
            for name, way in WAYS:
                outcome = attempt(cfg, way, key)
                log(f"{name} with the {key.label}: {outcome.detail}")
                if outcome.kind == GONE:
                    if is_gone(cfg):
                        return
                    log("  ... but a read still shows the pod: trying the next way")
                    outcome.kind = REFUSED
                if outcome.kind == DONE:
                    accepted = True
                    break
                refused_all = refused_all and outcome.kind == REFUSED
            if accepted:
                break
        if accepted:
            if _wait_gone(cfg):
                log(f"pod {cfg.pod_id} is gone")
                return
            delay = 0.0
            log(f"pod {cfg.pod_id} is still there after the delete was accepted; sending it again")
        elif refused_all:
            delay = MAX_RETRY_DELAY_S
            log(f"every way to delete pod {cfg.pod_id} was refused: it keeps billing until someone deletes it; "
                f"trying again in {delay:g}s")
        else:
            delay = min(MAX_RETRY_DELAY_S, cfg.poll_s * 2 ** round_)
            log(f"could not reach RunPod; trying again in {delay:g}s")
        time.sleep(delay)


def _wait_gone(cfg: Config) -> bool:
    """A pod whose delete was accepted goes within moments, and this process with it (it runs on the pod).
    Whether it went, read for up to CONFIRM_S; a read that is refused counts as gone, since nothing better
    can be known with these keys and the delete itself was accepted."""
    give_up = time.monotonic() + CONFIRM_S
    while True:
        seen = False
        for key in cfg.keys:
            for _, read in READS:
                kind = attempt(cfg, read, key).kind
                if kind == GONE:
                    return True
                seen = seen or kind == DONE
        if not seen:
            return True
        if time.monotonic() > give_up:
            return False
        time.sleep(min(cfg.poll_s * 4, 5.0))


# ---------------------------------------------------------------------------------------------- one per pod

def status_path(workdir: str, pid: int) -> str:
    return os.path.join(workdir, f"status-{pid}.json")


def write_status(cfg: Config, **fields) -> None:
    """What lorapod reads to tell whether the pod's deadline is armed; never a key."""
    doc = {"pid": os.getpid(), "started": int(cfg.watch_start), "pod_id": cfg.pod_id, "has_credentials": bool(cfg.keys),
           "methods": methods(cfg) if cfg.keys else [], **fields}
    path = status_path(cfg.workdir, os.getpid())
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(path + ".tmp", path)
    except OSError as exc:
        log(f"cannot write {path}: {exc}")


def _running_watchdog(pid_file: str) -> Optional[int]:
    """The pid in the pid file, if that process is a watchdog: never signal a stranger that reused the pid."""
    try:
        with open(pid_file) as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return pid if b"watchdog" in fh.read() else None
    except (OSError, ValueError):
        return None


def _has_credentials(workdir: str, pid: int) -> bool:
    try:
        with open(status_path(workdir, pid), encoding="utf-8") as fh:
            return bool(json.load(fh).get("has_credentials"))
    except (OSError, ValueError, AttributeError):
        return False


def take_over(cfg: Config) -> bool:
    """Hold the lock for the rest of this process's life (the fd is never closed), stopping its holder.
    False when this copy has no credentials and the holder has: the holder stays in charge."""
    os.makedirs(cfg.workdir, mode=0o700, exist_ok=True)
    lock_path, pid_path = os.path.join(cfg.workdir, "watchdog.lock"), os.path.join(cfg.workdir, "watchdog.pid")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        old = _running_watchdog(pid_path)
        if old is not None and not cfg.keys and _has_credentials(cfg.workdir, old):
            log(f"no credentials here, and the running watchdog (pid {old}) has them: it stays in charge")
            write_status(cfg, state="deferred", deferred_to=old, armed=False)
            return False
        if old is not None:
            log(f"replacing the watchdog already running (pid {old})")
            try:
                os.kill(old, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):  # it exited meanwhile: the lock comes free
                pass
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
    return True


def _stop(signum, frame) -> None:
    log("stopped by SIGTERM (replaced by a newer watchdog, or the container is stopping)")
    sys.exit(0)


def watch(cfg: Config) -> str:
    """Sleeps until the pod must go; returns why. A check that raises is logged and the loop goes on."""
    beat = Heartbeat(cfg)
    was_detached = False
    while True:
        try:
            detached = cfg.detached()
            if detached != was_detached:
                log(f"run detached ({cfg.detached_file} exists): only the deadline counts until it is attached"
                    if detached else "run attached again: the heartbeat counts again")
                was_detached = detached
            reason = reason_to_delete(cfg, time.time(), beat.read(), detached)
            if reason is not None:
                return reason
        except Exception as exc:  # noqa: BLE001 - see the docstring: nothing stops the watchdog
            log(f"check failed ({type(exc).__name__}: {exc}); going on")
        time.sleep(cfg.poll_s)


def main(argv: Optional[list[str]] = None) -> int:
    argparse.ArgumentParser(
        prog="watchdog.py", description=__doc__.split("\n\n")[0], epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    try:
        cfg = load_config(dict(os.environ), time.time())
    except ConfigError as exc:
        log(f"not started: {exc}")
        return 2
    signal.signal(signal.SIGTERM, _stop)
    if not take_over(cfg):
        return 0
    write_status(cfg, state="verifying", armed=False)
    found = verify(cfg)
    write_status(cfg, state="watching", **found)
    watching = []
    if cfg.max_runtime_s is not None:
        watching.append(f"deadline {cfg.max_runtime_s:g}s")
    if cfg.heartbeat_file is not None:
        watching.append(f"heartbeat {cfg.heartbeat_file} (timeout {cfg.heartbeat_timeout_s:g}s)")
    if found["armed"]:
        where = f"pod {cfg.pod_id}, armed: the {found['credential']} can read it ({found['read']}); " \
                f"will try {', '.join(methods(cfg))}"
    else:
        where = f"NOT ARMED: {found['reason']}"
    log(f"watching {' and '.join(watching)}; {where}")

    reason = watch(cfg)
    log(reason)
    if not cfg.pod_id:
        log("would delete the pod now, but RUNPOD_POD_ID is not set: not on RunPod, nothing to delete")
        return 0
    while not cfg.keys:  # a key may still turn up (your watchdog key, uploaded late): look again, never give up
        log(f"pod {cfg.pod_id} must go, but no key was found; looking again in {MAX_RETRY_DELAY_S:g}s")
        time.sleep(MAX_RETRY_DELAY_S)
        try:
            cfg.keys = load_config(dict(os.environ), time.time()).keys
        except ConfigError:
            pass
    write_status(cfg, state="deleting", **found)
    delete_pod(cfg)
    write_status(cfg, state="deleted", **found)
    return 0


if __name__ == "__main__":
    sys.exit(main())

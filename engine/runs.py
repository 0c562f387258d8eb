"""The run folders under a runs directory, each read into one row of `python -m engine.status`.

Only state.json is read (run-summary.json when state.json cannot be): never a log, so a folder of hundreds of
runs is listed at once. Whatever a file holds, a folder whose files cannot be read is one warning, never a crash,
and a field of the wrong type shows as unknown. The walk stops at a run folder and goes at most MAX_DEPTH folders
down (runs/multirun/<date>/<time>/<job>/ is four), never through a symlink.
"""
from __future__ import annotations

import json
import math
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import process

MAX_DEPTH = 6
MAX_BYTES = 8 << 20  # a state.json is kilobytes; one this big is not ours to parse
RUN_FILES = ("state.json", "run-summary.json")
PREFIX = "lorapod-"  # engine/context.py's pod name: lorapod-<run id>


@dataclass
class RunRow:
    folder: str
    run_id: str | None
    started_at: float | None
    status: str  # what the table shows: the recorded status, or stale / running? for a run said to be running
    recorded_status: str | None  # what the file says
    process: str | None  # alive, dead, or unknown (another host, no pid); None when the run is not running
    owner: dict = field(default_factory=dict)
    stage: str | None = None  # the stage running, else the one that failed, else the last one
    pod_id: str | None = None
    pod_name: str | None = None  # the pod's name, else the one the run would give it (lorapod-<run id>)
    pod_terminated: bool | None = None
    price_per_hour: float | None = None
    pod_created_at: float | None = None
    pod_terminated_at: float | None = None
    create_sent: bool = False  # a create went out: a pod named pod_name may exist even with no pod recorded
    ended_at: float | None = None
    last_write: float | None = None  # state.json's mtime: the last moment the run is known to have been alive
    elapsed_s: float | None = None
    cost_usd: float | None = None
    cost_kind: str | None = None  # actual (billed), estimate (billed time x price), live (still billing, so far)
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    adapter_id: str | None = None
    adapter_status: str | None = None
    pod_live: bool | None = None  # the account's pod list has it (None: not asked)
    source: str = "state.json"

    def to_json(self) -> dict:
        return asdict(self)


def find(root: Path) -> tuple[list[Path], list[str]]:
    """Run folders under root (a folder holding state.json or run-summary.json), and a warning for each folder
    that could not be listed."""
    found, warnings = [], []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            warnings.append(f"{folder}: cannot list it ({exc.strerror or exc}); skipped")
            return
        names = {e.name for e in entries}
        if any(name in names for name in RUN_FILES):
            found.append(folder)
            return
        if depth >= MAX_DEPTH:
            return
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir and not entry.name.startswith("."):
                walk(Path(entry.path), depth + 1)

    if root.is_dir():
        walk(root, 0)
    return found, warnings


def _read(path: Path) -> tuple[dict | None, float | None, str | None]:
    """(the JSON object in path, its mtime, None) or (None, None, why not). Never opens anything but a regular
    file (a FIFO would hang the read), nor one over MAX_BYTES."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None, None, "missing"
    except OSError as exc:
        return None, None, f"cannot stat it ({exc.strerror or exc})"
    if not stat.S_ISREG(info.st_mode):
        return None, None, "not a regular file"
    if info.st_size > MAX_BYTES:
        return None, None, f"{info.st_size:,} bytes, too big to be a run's"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, None, f"not readable JSON ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, None, f"holds a JSON {type(data).__name__}, not an object"
    return data, info.st_mtime, None


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _str(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _pid(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def read(folder: Path) -> tuple[RunRow | None, str | None]:
    """One run folder as a row (None when neither file can be read), and a warning, if any."""
    state, mtime, why = _read(folder / "state.json")
    source, warning = "state.json", None
    if state is None:
        summary, mtime, why_summary = _read(folder / "run-summary.json")
        if summary is None:
            reasons = f"state.json: {why}" + (f"; run-summary.json: {why_summary}" if why_summary != "missing" else "")
            return None, f"{folder}: not a readable run ({reasons}); skipped"
        state, source = summary, "run-summary.json"
        if why != "missing":
            warning = f"{folder}: state.json is {why}; shown from run-summary.json"
    return _row(folder, state, mtime, source), warning


def _row(folder: Path, state: dict, mtime: float | None, source: str) -> RunRow:
    outputs = _dict(state.get("outputs"))
    pod = _dict(state.get("pod"))
    marks = _dict(state.get("marks"))
    run_id = _str(state.get("run_id"))
    recorded = _str(state.get("status"))
    started = _num(state.get("started_at"))
    owner = _dict(state.get("owner"))
    status, alive = recorded or "?", None
    if recorded == "running":
        alive = {True: "alive", False: "dead", None: "unknown"}[process.alive(owner, _owner_since(state, owner))]
        status = {"alive": "running", "dead": "stale", "unknown": "running?"}[alive]
    cost = _dict(outputs.get("cost"))
    result = _dict(outputs.get("result")) or _dict(state.get("metrics"))  # run-summary.json names it metrics
    adapter = _dict(outputs.get("adapter")) or _dict(state.get("adapter"))
    row = RunRow(folder=str(folder), run_id=run_id, started_at=started, status=status, recorded_status=recorded,
                 process=alive, owner={"host": _str(owner.get("host")), "pid": _pid(owner.get("pid"))},
                 stage=_stage(_dict(state.get("stages"))), pod_id=_str(pod.get("id")),
                 pod_name=_str(pod.get("name")) or (PREFIX + run_id if run_id else None),
                 pod_terminated=pod.get("terminated") if isinstance(pod.get("terminated"), bool) else None,
                 price_per_hour=_num(pod.get("price_per_hour")), pod_created_at=_num(marks.get("pod_created")),
                 pod_terminated_at=_num(marks.get("pod_terminated")),
                 create_sent=_num(marks.get("create_sent")) is not None,
                 ended_at=_num(state.get("ended_at")), last_write=mtime,
                 eval_loss_before=_num(result.get("eval_loss_before")),
                 eval_loss_after=_num(result.get("eval_loss_after")),
                 adapter_id=_str(adapter.get("id")), adapter_status=_str(adapter.get("status")), source=source)
    if source == "state.json":
        row.cost_usd = _num(cost.get("actual_usd"))
        row.cost_kind = "actual" if row.cost_usd is not None else None
    else:  # run-summary.json has no marks to estimate from: its own figures
        actual, estimate = _num(state.get("cost_usd_actual")), _num(state.get("cost_usd_estimate"))
        row.cost_usd, row.cost_kind = (actual, "actual") if actual is not None else \
            (estimate, "estimate") if estimate is not None else (None, None)
    return row


def _owner_since(state: dict, owner: dict) -> float | None:
    """When the owner took the run: its start, or the latest `python -m engine.attach` by the owner's pid (attach
    records {at, pid} in outputs.attach and makes itself the owner)."""
    since = _num(state.get("started_at"))
    attaches = _dict(state.get("outputs")).get("attach")
    for record in attaches if isinstance(attaches, list) else []:
        at = _num(_dict(record).get("at"))
        if at is not None and _dict(record).get("pid") == owner.get("pid") and (since is None or at > since):
            since = at
    return since


def _stage(stages: dict) -> str | None:
    """The stage running, else the first that failed or was interrupted, else the last that ran."""
    records = [(name, _dict(r)) for name, r in stages.items() if isinstance(name, str)]
    for wanted in (("running",), ("failed", "interrupted")):
        hits = [(name, r) for name, r in records if r.get("status") in wanted]
        if hits:
            return min(hits, key=lambda h: _num(h[1].get("started_at")) or 0.0)[0]
    ran = [(name, r) for name, r in records if r.get("status") not in ("pending", "skipped")]
    if not ran:
        return None
    return max(ran, key=lambda h: _num(h[1].get("ended_at")) or _num(h[1].get("started_at")) or 0.0)[0]


def settle(row: RunRow, live_pods: dict[str, dict] | None, now: float | None = None) -> None:
    """Fill in elapsed and the cost so far. live_pods: the account's pods by id (None: not known). A pod is
    billing until it is recorded terminated, or the account's list no longer has it."""
    now = time.time() if now is None else now
    going = row.status in ("running", "running?", "detached")
    if row.started_at is not None:
        if going:
            end = now
        elif row.status == "stale":
            end = row.last_write  # the last moment it is known to have been alive
        else:
            end = row.ended_at or row.last_write
        row.elapsed_s = max(0.0, end - row.started_at) if end is not None else None
    live = live_pods.get(row.pod_id) if live_pods is not None and row.pod_id else None
    if live_pods is not None and row.pod_id:
        row.pod_live = live is not None
    price = _num((live or {}).get("cost")) if live else None
    price = price if price else row.price_per_hour
    if row.cost_usd is not None or row.pod_created_at is None or price is None:
        return
    if row.pod_terminated_at is not None:
        end, kind = row.pod_terminated_at, "estimate"
    elif row.pod_live if row.pod_live is not None else not row.pod_terminated:
        end, kind = now, "live"  # still billing, as far as anyone here can tell: the harsher reading
    else:  # gone, at a moment nobody recorded: the last one the run was seen alive
        end, kind = row.ended_at or row.last_write, "estimate"
    if end is not None:
        row.cost_usd = round(max(0.0, end - row.pod_created_at) / 3600 * price, 4)
        row.cost_kind = kind


def load(root: Path) -> tuple[list[RunRow], list[str]]:
    """Every readable run under root, newest first, and the warnings."""
    folders, warnings = find(root)
    rows = []
    for folder in folders:
        row, warning = read(folder)
        if warning:
            warnings.append(warning)
        if row is not None:
            rows.append(row)
    rows.sort(key=lambda r: r.started_at or 0.0, reverse=True)
    return rows, warnings

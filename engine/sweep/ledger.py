"""The sweep's budget ledger: <sweep dir>/budget-ledger.json, one line per job, under an fcntl lock.

A sweep's jobs may run at once in separate processes (hydra/launcher=joblib), so every read-and-change holds
an exclusive lock on <ledger>.lock and the file is replaced whole (never half-written). A job reserves its
high estimate before renting; what is left is budget.sweep_max_usd minus what settled jobs spent minus what
running jobs reserved, so parallel jobs together spend no more than the sweep may, give or take what a pod's
deadline overshoots (a watchdog poll, a delete past its deadline): engine/budget.py stops each job while its fetch
and delete are still paid for. A job's limit is its reservation, the plan's high estimate, so a job slower than
its plan is stopped there even when the sweep has room left (no top-up from the ledger yet). A job settles once
its pod is gone: its reservation is replaced by what it cost. A job that dies without settling keeps its
reservation: the harsher reading, the money may have been spent.

    {"sweep_max_usd": 5.0,
     "jobs": {"0": {"status": "settled", "reserved_usd": 1.2, "spent_usd": 0.31, "source": "runpod billing", ...},
              "1": {"status": "reserved", "reserved_usd": 1.2, ...},
              "2": {"status": "refused", "estimate_usd": 1.2, "spent_usd": 0.0, ...}}}
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

FILENAME = "budget-ledger.json"
EPSILON = 1e-9  # float sums: a reservation that fits exactly must not be refused by rounding


@dataclass
class Reservation:
    ok: bool
    reserved_usd: float  # what this job holds now (0 when refused)
    spent_usd: float  # what settled jobs spent, this one excluded
    held_usd: float  # what other running jobs hold
    left_usd: float  # what was left before this job asked

    def describe(self, sweep_max_usd: float) -> str:
        return (f"budget.sweep_max_usd ${sweep_max_usd:.4f}: spent ${self.spent_usd:.4f}, reserved by running jobs "
                f"${self.held_usd:.4f}, left ${self.left_usd:.4f}")


def path_for(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / FILENAME


@contextlib.contextmanager
def _locked(path: Path):
    """The ledger's contents, to read and change; written back whole when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            data.setdefault("jobs", {})
            yield data
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def totals(data: dict, except_job: str | None = None) -> tuple[float, float]:
    """(spent by settled jobs, held by jobs still running), leaving one job out."""
    spent = held = 0.0
    for job, line in data.get("jobs", {}).items():
        if job == except_job:
            continue
        if line.get("status") == "reserved":
            held += float(line.get("reserved_usd") or 0)
        else:
            spent += float(line.get("spent_usd") or 0)
    return spent, held


def read(path: Path) -> dict:
    with _locked(path) as data:
        return json.loads(json.dumps(data))


def reserve(path: Path, job: str, estimate_usd: float | None, sweep_max_usd: float, **about) -> Reservation:
    """Hold `estimate_usd` for `job` when it fits in what is left, else record the job as refused. An unknown
    estimate (None) holds all that is left: the harsher reading of a job nobody can bound."""
    with _locked(path) as data:
        data["sweep_max_usd"] = float(sweep_max_usd)
        spent, held = totals(data, except_job=job)
        left = float(sweep_max_usd) - spent - held
        want = left if estimate_usd is None else float(estimate_usd)
        ok = left > 0 and want <= left + EPSILON
        line = {**about, "estimate_usd": estimate_usd, "at": round(time.time(), 3)}
        if ok:
            line.update(status="reserved", reserved_usd=round(want, 6))
        else:
            line.update(status="refused", reserved_usd=0.0, spent_usd=0.0, source="refused before renting")
        data["jobs"][job] = line
        return Reservation(ok, line["reserved_usd"], round(spent, 6), round(held, 6), round(left, 6))


def settle(path: Path, job: str, spent_usd: float, source: str) -> dict:
    """Replace the job's reservation by what it cost; returns its line."""
    with _locked(path) as data:
        line = data["jobs"].setdefault(job, {})
        if line.get("status") == "refused":
            return dict(line)
        line.update(status="settled", spent_usd=round(float(spent_usd), 6), source=source,
                    at=round(time.time(), 3))
        return dict(line)

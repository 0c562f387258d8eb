"""The registry on disk: <registry.path>/<id>.json, one record per adapter, and a lock file.

Every change happens under an exclusive flock on <path>/.lock, so the runs of a sweep that register at the same
moment (or a `promote` typed meanwhile) see and change the records one after another. Records are written to a
temporary file and renamed into place: a reader never sees half a record, even after a crash.

Which adapter is active lives in the records themselves (status "active"). Should a crash between two writes
leave two records active, the one activated last counts, and the next change under the lock repairs it.
"""
from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from engine.errors import LorapodError

ACTIVE, REJECTED, RETIRED, ROLLED_BACK = "active", "rejected", "retired", "rolled_back"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # run ids are <date>-<time>-<hex>; a file name either way


class RegistryError(LorapodError):
    """A registry command that cannot be done as asked (unknown id, nothing to roll back to, ...)."""


def utc_now() -> str:
    # Microseconds: which adapter was activated last is decided by these, and a sweep registers fast.
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event(action: str, reason: str, **extra) -> dict:
    """One line of a record's history: what happened, when, by whom, why."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (a container without passwd entry): say so
        user = f"uid {os.getuid()}"
    return {"action": action, "at": utc_now(), "by": user, "reason": reason, **extra}


class Registry:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _file(self, adapter_id: str) -> Path:
        if not _ID.match(adapter_id or ""):
            raise RegistryError(f"{adapter_id!r} is not an adapter id",
                                "ids are run ids such as 20261129-193600-18c3; `python -m engine.adapters list` shows them")
        return self.path / f"{adapter_id}.json"

    @contextmanager
    def locked(self) -> Iterator[Registry]:
        """Hold the registry's lock: read, decide and write as one step."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def entries(self) -> list[dict]:
        """Every record, oldest first. A file that is not a record is skipped, never guessed at (unreadable())."""
        return self._scan()[0]

    def unreadable(self) -> list[Path]:
        """*.json files that are not records (corrupt, or not of the id they are named for). One of them may be
        the active adapter's, so the gate decides nothing while any is there."""
        return self._scan()[1]

    def _scan(self) -> tuple[list[dict], list[Path]]:
        if not self.path.is_dir():
            return [], []
        out, bad = [], []
        for file in sorted(self.path.glob("*.json")):
            try:
                entry = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                entry = None
            if isinstance(entry, dict) and entry.get("id") == file.stem:
                out.append(entry)
            else:
                bad.append(file)
        return sorted(out, key=lambda e: (e.get("created_at") or "", e["id"])), bad

    def get(self, adapter_id: str) -> dict:
        file = self._file(adapter_id)
        if not file.exists():
            raise RegistryError(f"no adapter {adapter_id} in {self.path}",
                                f"`python -m engine.adapters list --path {self.path}` shows what it holds")
        try:
            entry = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{file} is not a readable registry record ({type(exc).__name__}: {exc})",
                                "restore it from a backup, or move it out of the folder: `list` skips files that "
                                "are not records, and the run folder it named is untouched") from exc
        if not isinstance(entry, dict) or entry.get("id") != adapter_id:
            holds = f"id {entry.get('id')!r}" if isinstance(entry, dict) else f"a JSON {type(entry).__name__}"
            raise RegistryError(f"{file} is not a registry record of {adapter_id} (it holds {holds})",
                                "restore it from a backup, or move it out of the folder")
        return entry

    def put(self, entry: dict) -> None:
        file = self._file(entry["id"])
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, file)

    def delete(self, adapter_id: str) -> None:
        self._file(adapter_id).unlink()

    def active(self) -> dict | None:
        actives = [e for e in self.entries() if e.get("status") == ACTIVE]
        return max(actives, key=last_activated, default=None)

    def activate(self, entry: dict, action: str, reason: str) -> dict | None:
        """Make `entry` the active adapter; the one active before becomes retired. Returns that one."""
        before = None
        for other in self.entries():
            if other.get("status") == ACTIVE and other["id"] != entry["id"]:
                other["status"] = RETIRED
                other["history"].append(event("retired", f"{entry['id']} became active ({action})"))
                self.put(other)
                before = other if before is None or last_activated(other) > last_activated(before) else before
        entry["status"] = ACTIVE
        entry["reason"] = reason
        entry.setdefault("history", []).append(event(action, reason, replaces=before["id"] if before else None))
        self.put(entry)
        return before


def last_activated(entry: dict) -> str:
    """When the entry last became active (ISO time; "" if never)."""
    times = [h.get("at", "") for h in entry.get("history", []) if h.get("action") in ("activated", "promoted", "restored")]
    return max(times, default="")


def check_files(entry: dict) -> list[str]:
    """What is wrong with the adapter files the record names: gone, or changed since it was registered."""
    from engine.hashing import sha256_file

    run_dir = Path(entry.get("run_dir") or "")
    problems = []
    for rel, meta in sorted((entry.get("files") or {}).items()):
        file = run_dir / rel
        if not file.is_file():
            problems.append(f"{file} is gone")
        elif file.stat().st_size != meta.get("bytes") or sha256_file(file) != meta.get("sha256"):
            problems.append(f"{file} changed since it was registered (sha256 differs)")
    if not entry.get("files"):
        problems.append(f"the record names no adapter files (run folder {run_dir})")
    return problems


def promote(registry: Registry, adapter_id: str, reason: str) -> dict | None:
    """Make an adapter active by hand, whatever the gate said; returns the one it replaces."""
    with registry.locked():
        entry = registry.get(adapter_id)
        if entry.get("status") == ACTIVE:
            raise RegistryError(f"{adapter_id} is already the active adapter")
        _usable(entry, "promote")
        return registry.activate(entry, "promoted", reason)


def rollback(registry: Registry, reason: str) -> tuple[dict, dict]:
    """The active adapter steps down (rolled_back) and the one active before it comes back.
    Returns (the one rolled back, the one restored)."""
    with registry.locked():
        current = registry.active()
        if current is None:
            raise RegistryError(f"no adapter is active in {registry.path}: nothing to roll back",
                                "`python -m engine.adapters promote ID` makes one active")
        earlier = [e for e in registry.entries() if e.get("status") == RETIRED and last_activated(e)]
        if not earlier:
            raise RegistryError(f"no adapter that was active before {current['id']} is left to roll back to "
                                "(rolled-back ones are not gone back to)",
                                "`python -m engine.adapters promote ID` makes any one active")
        previous = max(earlier, key=last_activated)
        _usable(previous, "roll back to")
        current["status"] = ROLLED_BACK
        current["reason"] = reason
        current["history"].append(event("rolled_back", reason, restored=previous["id"]))
        registry.put(current)
        registry.activate(previous, "restored", f"rollback from {current['id']}: {reason}")
        return current, previous


def remove(registry: Registry, adapter_id: str, force: bool = False) -> dict:
    """Delete the record (never the run folder). The active adapter only with force: then none is active."""
    with registry.locked():
        entry = registry.get(adapter_id)
        if entry.get("status") == ACTIVE and not force:
            raise RegistryError(f"{adapter_id} is the active adapter; removing it would leave none active",
                                "roll back or promote another one first, or pass --force to remove it anyway")
        registry.delete(adapter_id)
        return entry


def _usable(entry: dict, what: str) -> None:
    problems = check_files(entry)
    if problems:
        raise RegistryError(f"cannot {what} {entry['id']}: " + "; ".join(problems[:5]),
                            "an adapter whose files are gone or changed cannot be served; "
                            f"`python -m engine.adapters remove {entry['id']}` drops its record")

"""Which process runs a run: recorded in state.json's `owner`, checked by `python -m engine.status`.

A pid alone cannot tell a live run from a dead one whose pid the kernel has since given to another process, so
the owner also records the process's identity: the boot it runs in and its start time in clock ticks
(/proc/<pid>/stat field 22). The same pid with another identity is another process. Where there is no /proc
(macOS), the identity is None and only the pid is checked.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def identity(pid: int) -> str | None:
    """`<boot id>:<start ticks>` of a live process, or None when it does not exist (or there is no /proc)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': the fields after the last ')'
    # are fixed. state is field 3, starttime field 22.
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie has finished: it runs nothing
        return None
    return f"{boot}:{fields[19]}"


def owner() -> dict:
    """What state.json records about the process running a run (RunState.owner)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "identity": identity(pid)}


def alive(record: dict, run_started_at: float | None = None) -> bool | None:
    """Whether the process an owner record names still runs: True, False, or None when this machine cannot
    tell (the record is from another host, or names no pid). A record without an identity (written before
    identities were) still tells a reused pid by its start: a process that started after the run did cannot
    be the one that started it."""
    if not isinstance(record, dict) or record.get("host") != socket.gethostname():
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    recorded, now = record.get("identity"), identity(pid)
    if Path("/proc/self/stat").exists():
        # With /proc: no such process, a zombie, or another process under the same pid all mean dead.
        if now is None:
            return False
        if recorded is not None:
            return recorded == now
        started = _started_at(now)
        return started is None or run_started_at is None or started <= run_started_at + 2.0
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, and is someone else's
        return True
    return True


def _started_at(ident: str) -> float | None:
    """A process's start as epoch seconds, from its identity and the boot time (whole seconds: +-1 s)."""
    try:
        ticks = int(ident.rsplit(":", 1)[1])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None

"""Run a command and measure wall time and the peak RSS summed over its whole process tree.

lorapod's training runs detached (its own session, re-parented away from us), so plain RUSAGE_CHILDREN
would miss it. We become a child subreaper so orphans stay in our tree, and sample /proc.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(cmd: list[str], cwd: Path, env: dict | None = None, interval: float = 0.05) -> tuple[int, float, int]:
    """Returns (exit code, wall seconds, peak tree RSS in bytes)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        tree, todo, total = _children_map(), [os.getpid()], 0
        seen = set()
        while todo:
            pid = todo.pop()
            for child in tree.get(pid, []):
                if child not in seen:
                    seen.add(child)
                    total += _rss_bytes(child)
                    todo.append(child)
        peak = max(peak, total)
        time.sleep(interval)
    wall = time.perf_counter() - start
    try:  # reap re-parented grandchildren so they do not linger as zombies
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    return proc.returncode, wall, peak

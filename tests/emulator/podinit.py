"""PID 1 of an emulated pod: the root of every process the pod runs, so terminating the pod can find them all.

    python podinit.py '[["/usr/sbin/sshd", "-D", "-e", "-f", "cfg"], ["python3", "watchdog.py"]]'

It marks itself a child subreaper (Linux prctl PR_SET_CHILD_SUBREAPER), as a container's init (tini) does, so a
process started inside the pod that detaches (setsid, nohup, a double fork) is re-parented to this process
instead of to the machine's init and stays in this process's tree. It starts each command given as JSON, with
this process's environment (the pod's container environment) and output (the pod's container log), reaps
whatever exits, and runs until it is killed. The emulator kills every descendant first (descendants() below,
read from /proc), then this process; on SIGTERM, or when the emulator's process dies (a crashed test run),
this process does that itself. Standard library only: it is started with the test interpreter.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def descendants(root: int, zombies: bool = False) -> list[int]:
    """Every process below `root` (children first seen first), read from /proc; zombies only if asked."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) < 2 or (fields[0] in ("Z", "X") and not zombies):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _reap(started: dict[int, str] | None = None) -> None:
    """Reaps whatever exited; one of the commands this process started is reported in the container log, so
    the emulator sees at once that sshd died (and sshd's own last words are just above that line)."""
    try:
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                return
            if started and pid in started:
                print(f"podinit: {started.pop(pid)} exited with status {os.waitstatus_to_exitcode(status)}",
                      flush=True)
    except ChildProcessError:
        pass


def kill_all(root: int) -> None:
    """SIGKILL every descendant of `root` (this process), again and again until none is left (orphans come
    back to a subreaper, so a process forked meanwhile is caught on the next round), and reap them all, so
    that none is left a zombie of the machine's init."""
    for _ in range(500):
        pids = descendants(root, zombies=True)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap()
        time.sleep(0.01)


def main() -> int:
    commands = json.loads(sys.argv[1])
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"podinit: prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}", flush=True)

    def shutdown(*_):
        kill_all(os.getpid())
        os._exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    # The Popen objects stay referenced: one that is collected reaps its child itself (Popen.__del__ polls), and
    # a command that exited that fast would go unreported.
    children = [subprocess.Popen(argv, stdin=subprocess.DEVNULL) for argv in commands]
    started = {child.pid: os.path.basename(argv[0]) for child, argv in zip(children, commands)}
    # Reap children and adopted orphans. An init with nothing left to reap keeps the pod up; one whose
    # emulator died (a crashed test run) takes the pod down with it rather than leave sshd behind.
    while os.getppid() == parent:
        _reap(started)
        time.sleep(0.1)
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

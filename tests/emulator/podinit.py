"""The shim of an emulated pod (what containerd's shim is to a container): it starts the container, says in the
container log when the container's init exits, and kills the container when asked or when the emulator is gone.

    python podinit.py '{"name": "start.sh", "argv": ["unshare", "--pid", "--fork", "--mount-proc",
                        "--kill-child", "sh", "container.sh", ...]}'

`argv` is the container: an unshare command whose child is PID 1 of its own PID namespace (see pod.py). When
that PID 1 dies the kernel kills every process of the namespace; --kill-child makes it die with unshare. So the
pod's processes, however they detach (setsid, nohup, a double fork), stay inside and die with it.

This process runs outside the container with the container environment, which is all the container gets, and
its output is the container log, which the container inherits. It marks itself a child subreaper (Linux prctl
PR_SET_CHILD_SUBREAPER): a namespace init orphaned by unshare's death is reaped here, not left a zombie of the
machine's init, and stays in this process's tree, where the emulator finds every process of the pod
(descendants() below, read from /proc). When the container's process exits it prints "podinit: <name> exited
with status N" (the emulator ends a failed boot at once on that line) and exits with that status. On SIGTERM, or
when the emulator's process dies (a crashed test run: its parent changes), it kills the container and exits.
It never relies on PR_SET_PDEATHSIG set by the emulator: that fires when the creating *thread* exits, and the
emulator starts pods from short-lived threads. Standard library only: it is started with the test interpreter.
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


def _reap(watched: int = 0) -> int | None:
    """Reaps whatever exited; returns the wait status of `watched` when it was among them."""
    status = None
    try:
        while True:
            pid, code = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            if pid == watched:
                status = code
    except ChildProcessError:
        pass
    return status


def kill_all(root: int) -> None:
    """SIGKILL every descendant of `root` (this process), again and again until none is left (orphans come
    back to a subreaper, so one forked meanwhile is caught on the next round), and reap them all, so that none
    is left a zombie of the machine's init. Killing unshare or the namespace's init is enough in principle
    (the kernel does the rest); killing each is the belt to those braces."""
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
    spec = json.loads(sys.argv[1])
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"podinit: prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}", flush=True)

    def shutdown(*_):
        kill_all(os.getpid())
        os._exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    # Reaped with waitpid(-1) below, never through this object; it stays referenced so that its __del__ does
    # not reap the container first and leave its exit unreported.
    container = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL)
    while os.getppid() == parent:
        status = _reap(container.pid)
        if status is not None:
            code = os.waitstatus_to_exitcode(status)
            print(f"podinit: {spec['name']} exited with status {code}", flush=True)
            kill_all(os.getpid())
            return code if 0 <= code < 256 else 128 - code
        time.sleep(0.05)
    shutdown()  # the emulator is gone: take the pod down rather than leave sshd behind
    return 0


if __name__ == "__main__":
    sys.exit(main())

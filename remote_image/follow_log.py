#!/usr/bin/env python3
"""Print a log from line N on and keep following it until the process that writes it has exited.

    python follow_log.py train.log FROM_LINE train.pid exit_code

Runs on the pod (standard library only). lorapod's train stage runs it over the connection and, when the
connection drops, runs it again from the last line it received: training never notices.

It stops when the exit-code file appears (read after one last drain, so no line is lost) or when the
writer is gone without one; a zombie counts as gone, since a container's PID 1 may never reap it.
A line over MAX_LINE bytes is cut there (with CUT_MARKER) and the rest of it dropped: the train stage reads
this over SSH, and a pod printing without newlines must not fill anyone's memory.
Exit status: 0 when the exit-code file exists, 3 when the writer vanished without one.
"""
from __future__ import annotations

import os
import sys
import time

READ_SIZE = 1 << 20
# engine/transport/base.py cuts lines at the same length with the same marker (a test keeps them equal).
MAX_LINE = 64 * 1024
CUT_MARKER = f" [lorapod: line cut at {MAX_LINE} bytes, the rest of it dropped]".encode()


def alive(pid_file: str) -> bool:
    try:
        pid = int(open(pid_file).read().strip())
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ValueError, IndexError):
        return False


def follow(log: str, from_line: int, pid_file: str, exit_file: str, poll: float = 0.2) -> int:
    out = sys.stdout.buffer
    skip, pending, dropping = from_line - 1, b"", False

    def emit(line: bytes) -> None:
        nonlocal skip
        if skip:
            skip -= 1
        else:
            out.write(line + b"\n")

    while not os.path.exists(log):
        if os.path.exists(exit_file) or not (os.path.exists(pid_file) and alive(pid_file)):
            return 0 if os.path.exists(exit_file) else 3
        time.sleep(poll)
    with open(log, "rb") as fh:
        while True:
            # Decide before reading: whatever the writer wrote before it finished is read below.
            finished = os.path.exists(exit_file) or not alive(pid_file)
            while chunk := fh.read(READ_SIZE):  # in blocks: a 10 GB line is never held whole
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if not dropping:
                        emit(line)
                    dropping = False
                # A line with no newline yet is cut at MAX_LINE and counted once, here, so that a follower
                # started again from a line number counts lines as this one did.
                if not dropping and len(pending) > MAX_LINE:
                    emit(pending[: MAX_LINE - len(CUT_MARKER)] + CUT_MARKER)
                    dropping = True
                if dropping:
                    pending = b""
            if finished and pending and not dropping:
                emit(pending)
            out.flush()
            if finished:
                return 0 if os.path.exists(exit_file) else 3
            time.sleep(poll)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(follow(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))

"""The transport verbs: exec with streamed output, put/get verified by sha256, size, close."""
from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from engine.errors import TransportError

if TYPE_CHECKING:
    from engine.context import RunContext
    from engine.providers.base import Endpoint

LineSink = Callable[[str], None]

# A pod that prints without newlines (a progress bar drawn with \r, a runaway print) must not grow a buffer
# here without bound: a line is cut at MAX_LINE bytes, marker included, and the rest of it is dropped up to its
# newline. remote_image/follow_log.py cuts at the same length (a test keeps them equal), so a line it cut passes
# through here whole.
MAX_LINE = 64 * 1024
CUT_MARKER = f" [lorapod: line cut at {MAX_LINE} bytes, the rest of it dropped]".encode()


class LineAssembler:
    """Bytes in, whole lines (str, no newline) out, none longer than MAX_LINE bytes, and never more than
    MAX_LINE bytes held between calls. `held_max` is the most it ever held (what a test checks)."""

    def __init__(self, sink: LineSink | None, max_line: int = MAX_LINE):
        self.sink, self.max_line = sink, max_line
        self.pending = bytearray()
        self.dropping = False  # the current line was cut: drop bytes up to its newline
        self.held_max = 0
        self.cut = 0  # lines cut so far

    def feed(self, data: bytes) -> None:
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self.dropping:
                self.pending += piece[: self.max_line + 1 - len(self.pending)]
                self.held_max = max(self.held_max, len(self.pending))
                if len(self.pending) > self.max_line:
                    self._emit(bytes(self.pending[: self.max_line - len(CUT_MARKER)]) + CUT_MARKER)
                    self.cut += 1
                    self.dropping = True
            if end < 0:
                return
            if not self.dropping:
                self._emit(bytes(self.pending))
            self.pending.clear()
            self.dropping = False
            start = end + 1

    def close(self) -> None:
        """The stream ended: a last line without a newline is still a line."""
        if self.pending and not self.dropping:
            self._emit(bytes(self.pending))
        self.pending.clear()
        self.dropping = False

    def _emit(self, line: bytes) -> None:
        self.pending.clear()
        if self.sink:
            self.sink(line.decode("utf-8", "replace"))


class Transport(Protocol):
    def exec(self, command: str, on_line: LineSink | None = None, timeout: float | None = None) -> int:
        """Run a shell command on the pod; every output line goes to on_line; returns the exit code."""

    def put(self, local: Path, remote: str) -> str:
        """Copy a file to the pod (creating folders) and return its sha256, checked on arrival."""

    def get(self, remote: str, local: Path, sha256: str | None = None, max_bytes: int | None = None) -> str:
        """Copy a file home; when sha256 is given a mismatch raises and leaves no file behind. A file longer
        than max_bytes (at the start, or grown by the end) raises too, also leaving nothing behind. A file
        that is a symlink on the pod is refused, also one swapped in after size() looked (see each transport
        for how narrow a window is left)."""

    def size(self, remote: str, within: str | None = None) -> int:
        """The size in bytes of a regular file on the pod; anything else raises, a symlink included: it is
        never followed, since it would bring home whatever it points at (/etc/shadow, the pod's credentials).
        With `within` (a folder above `remote`), a symlink at any folder between the two is refused too.
        Lets a caller refuse a download before it starts."""

    def write_private(self, remote: str, data: bytes) -> None:
        """Write bytes to a new file on the pod that only its owner may read (0600), into an existing folder.
        For secrets: the bytes never exist in a file on this machine."""

    def close(self) -> None: ...


def check_sha256(what: str, expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise TransportError(f"{what}: sha256 mismatch (expected {expected[:12]}…, got {actual[:12]}…)",
                             "the copy was corrupted in transit; run again")


def check_max_bytes(what: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise TransportError(f"{what} is over {max_bytes} bytes (at least {size}), more than was agreed to fetch",
                             "a file that grows while it is fetched is not the file that was checked")


def symlink_refused(path: str, remote: str) -> TransportError:
    what = remote if path == remote else f"{path} (above {remote})"
    return TransportError(f"{what} is a symlink on the pod: not fetched",
                          "a link would bring home what it points at, not what training wrote")


def folders_between(within: str | None, remote: str) -> list[str]:
    """The folders strictly between `within` and `remote`, top first: the ones a symlink could redirect."""
    if within is None:
        return []
    rel = posixpath.relpath(remote, within)
    if rel == "." or rel.startswith("../") or rel == "..":
        raise ValueError(f"{remote} is not inside {within}")
    parts = rel.split("/")[:-1]
    return [posixpath.join(within, *parts[:i]) for i in range(1, len(parts) + 1)]


def open_transport(endpoint: Endpoint, ctx: RunContext) -> Transport:
    if endpoint.kind == "local":
        from engine.transport.local import LocalTransport

        return LocalTransport()
    from engine.transport.ssh import SshTransport

    return SshTransport.connect(endpoint, ctx)

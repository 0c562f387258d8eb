"""Read one input file safely: never more than a size limit, never blocking, never writing.

A memory folder may hold anything: an encrypted file, a FIFO, a link to /dev/zero, a multi-gigabyte dump.
Opening non-blocking and checking that it is a regular file before reading, and reading at most
limit + 1 bytes, keeps each of those to one `malformed` count.
"""
from __future__ import annotations

import json
import os
import stat

from curation.memory import Malformed

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def read_bytes(path: str, limit: int) -> bytes:
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise Malformed(f"cannot open: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Malformed("not a regular file")
        if info.st_size > limit:
            raise Malformed(f"{info.st_size} bytes, over dataset.max_file_bytes={limit}")
        chunks, size = [], 0
        # Ask for one byte more than stat promised: a short read is the end of the file, so a file that
        # does not change is read in one call. One that grows meanwhile is read on, to limit + 1 at most.
        want = info.st_size + 1
        while size <= limit:
            chunk = os.read(fd, min(want, limit + 1 - size))
            chunks.append(chunk)
            size += len(chunk)
            if len(chunk) < want:
                break
            want = 1 << 16
    except OSError as exc:
        raise Malformed(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise Malformed(f"more than dataset.max_file_bytes={limit} bytes")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(data: bytes) -> object:
    """bytes -> a JSON value; the error says which of the usual suspects it was."""
    if not data or data.isspace():
        raise Malformed("empty file")
    try:
        return json.loads(data)  # bytes: UTF-8 (with or without BOM), or UTF-16/32 as RFC 8259 allows
    except UnicodeDecodeError:
        raise Malformed("not UTF-8 text (encrypted or binary?)") from None
    except json.JSONDecodeError as exc:
        raise Malformed(f"not JSON ({exc.msg} at line {exc.lineno}); encrypted?") from None

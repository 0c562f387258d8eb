"""Read one input file safely: never more than a size limit, never blocking, never writing, never outside the tree.

A memory folder may hold anything: an encrypted file, a FIFO, a link to /dev/zero, a multi-gigabyte dump.
Opening non-blocking and checking that it is a regular file before reading, and reading at most
limit + 1 bytes, keeps each of those to one `malformed` count. The walk (curation.walk) only hands over
paths inside the memory folder, but a folder or file can be swapped for a link between the walk and the
open: so the opened file's real path is checked too, before a byte is read. Asking the descriptor
(/proc/self/fd) costs about 2 us a file, no more than keeping a checked descriptor of each folder would.
"""
from __future__ import annotations

import json
import os
import stat

from curation.memory import Malformed

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_FD_LINKS = "/proc/self/fd/"  # Linux: where an open file descriptor names the file it really is
_HAS_FD_LINKS = os.path.isdir(_FD_LINKS)
_TOO_DEEP = "not JSON a program can read: arrays or objects nested too deep (a thousand levels or so)"


def read_bytes(path: str, limit: int, within: tuple[str, ...] | None = None) -> bytes:
    """The file's bytes; with `within` (real folder paths, each ending in os.sep) only if it really lies under one."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise Malformed(f"cannot open: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Malformed("not a regular file")
        if within is not None:
            _check_inside(fd, path, info, within)
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


def _check_inside(fd: int, path: str, info: os.stat_result, within: tuple[str, ...]) -> None:
    # What the descriptor is, not what the path says now: a path re-resolved after the open could be
    # swapped back. Without /proc, the real path is resolved and must be the very file that was opened.
    if _HAS_FD_LINKS:
        real = os.readlink(f"{_FD_LINKS}{fd}")
    else:
        real = os.path.realpath(path)
        again = os.stat(real)
        if (again.st_dev, again.st_ino) != (info.st_dev, info.st_ino):
            raise Malformed("changed while it was being opened; not read")
    if not real.startswith(within):
        raise Malformed(f"is really {shown(real)}, outside the memory folder (a link swapped in?); not read")


def shown(path: str) -> str:
    """A path as manifest.json can hold it: a name that is not UTF-8 (undecodable bytes, kept by Python as
    lone surrogates) would make writing the manifest fail, so its stray bytes are written as \\xff escapes."""
    return path if path.isascii() else os.fsencode(path).decode("utf-8", "backslashreplace")


def parse_json(data: bytes) -> object:
    """bytes -> a JSON value whose strings are all valid Unicode; the error says which of the usual suspects it was."""
    if not data or data.isspace():
        raise Malformed("empty file")
    try:
        # Decoded here, strictly, rather than by json.loads: that one lets surrogates encoded as UTF-8
        # through (errors="surrogatepass"), and they could never be written out again as UTF-8.
        text = data.decode(json.detect_encoding(data))  # UTF-8 (with or without BOM), or UTF-16/32 as RFC 8259 allows
        value = json.loads(text)
    except UnicodeDecodeError:
        raise Malformed("not UTF-8 text (encrypted or binary?)") from None
    except json.JSONDecodeError as exc:
        raise Malformed(f"not JSON ({exc.msg} at line {exc.lineno}); encrypted?") from None
    except RecursionError:
        raise Malformed(_TOO_DEEP) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (sys.set_int_max_str_digits)
        raise Malformed(f"not JSON a program can read: {exc}") from None
    # Only an escape (\ud800) can still bring a surrogate in, and a valid pair has become one character:
    # so a text without `\u` needs no further look, and that is nearly every memory (one search: faster
    # than looking for `\ud` and `\uD`, about 1 us in all).
    if "\\u" in text:
        _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: object) -> None:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start]
        raise Malformed(f"lone surrogate \\u{ord(bad):04x} in a string: not valid Unicode text") from None
    except RecursionError:
        raise Malformed(_TOO_DEEP) from None

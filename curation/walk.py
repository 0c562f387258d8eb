"""Every *.json file under a memory folder, in a stable order, never leaving it and never looping.

A memory tree may link folders and files from one place in it to another, and a link may point back up the
tree: each real folder (device, inode) is entered once. A link whose target lies outside the memory folder
(to /, to /etc/passwd, to another user's tree) is never entered nor read: it is reported with where it
points, and so is a folder that cannot be listed, a name that is not UTF-8, or a *.json entry that is not a
regular file (a FIFO, a device): nothing is silently skipped, and only what was a regular file when listed is
handed on to be opened (curation.read checks again what it opened).
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from curation.read import shown


def real_folders(roots: list[str], home: str) -> tuple[str, ...]:
    """The real paths of the roots json_files walks, each ending in os.sep: what curation.read checks against."""
    top = _with_sep(os.path.realpath(home))
    return tuple(real for real in (_with_sep(os.path.realpath(r)) for r in roots) if real.startswith(top))


def json_files(roots: list[str], problems: list[tuple[str, str]], home: str | None = None) -> Iterator[str]:
    """Paths of *.json files under the roots, sorted per folder; what cannot be read goes to `problems`.

    Each root is a memory folder of its own: a link in it is followed only to a target inside it. A root
    that is really outside `home` (the dataset folder: memory/episodic linked to /, say) is not walked.
    A *.json link inside is yielded even when broken: reading says why it cannot be opened.
    A folder reachable from two roots is listed once.
    """
    seen: set[tuple[int, int]] = set()
    top = _with_sep(os.path.realpath(home)) if home is not None else None
    for root in roots:
        real = os.path.realpath(root)
        if top is not None and not _with_sep(real).startswith(top):
            problems.append((root, _outside(real, home)))
            continue
        yield from _walk(root, _with_sep(real), seen, problems)


def _walk(root: str, inside: str, seen: set[tuple[int, int]], problems: list[tuple[str, str]]) -> Iterator[str]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue  # a symlink loop, or the same folder linked twice
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append((folder, f"cannot list folder: {exc.strerror or exc}"))
            continue
        subfolders = []
        for entry in entries:
            if not (entry.name.isascii() or _is_utf8(entry.name)):
                # Its path could not be written to train.jsonl or manifest.json, nor its name used as an id.
                if entry.name.endswith(".json") or _is_dir(entry):
                    problems.append((shown(entry.path), "its name is not UTF-8 text: rename it to train on it"))
                continue
            kind = _kind(entry, inside, problems)
            if kind == stat.S_IFDIR:
                subfolders.append(entry.path)
            elif entry.name.endswith(".json"):
                if kind == stat.S_IFREG:
                    yield entry.path
                elif kind is not None:
                    problems.append((entry.path, "not a regular file"))
        stack.extend(reversed(subfolders))  # depth first, in name order


def _kind(entry: os.DirEntry, inside: str, problems: list[tuple[str, str]]) -> int | None:
    """S_IFDIR, S_IFREG, another file type, or None for an entry to pass over (already reported if it matters).

    A broken or looping link inside the folder counts as a regular file: opening it says what is wrong.
    """
    try:
        if not entry.is_symlink():
            # The type comes with the listing (d_type): no system call for the usual file or folder.
            if entry.is_dir(follow_symlinks=False):
                return stat.S_IFDIR
            if entry.is_file(follow_symlinks=False):
                return stat.S_IFREG
            return stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)
        target = os.path.realpath(entry.path)
        if not _with_sep(target).startswith(inside):
            # Reported when it could have been a memory or a folder of them; a link to some outside file
            # that is not *.json would never have been read anyway.
            if entry.name.endswith(".json") or os.path.isdir(target):
                problems.append((entry.path, _outside(target, inside.rstrip(os.sep) or os.sep)))
            return None
        return stat.S_IFMT(os.stat(entry.path).st_mode)
    except OSError:
        return stat.S_IFREG if entry.name.endswith(".json") else None


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _outside(target: str, folder: str) -> str:
    return (f"symbolic link to {shown(target)}, outside the memory folder {folder}: not followed (move or copy what "
            "it points to into the folder to train on it)")


def _with_sep(path: str) -> str:
    return path if path.endswith(os.sep) else path + os.sep

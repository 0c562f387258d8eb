"""Every *.json file under a folder, in a stable order, following symlinks without ever looping.

A memory tree may link folders in from elsewhere, and a link may point back up the tree: each real folder
(device, inode) is entered once. A folder that cannot be listed is reported, never silently skipped.
"""
from __future__ import annotations

import os
from collections.abc import Iterator


def json_files(roots: list[str], problems: list[tuple[str, str]]) -> Iterator[str]:
    """Paths of *.json entries under the roots, sorted per folder; unlistable folders go to `problems`.

    Entries are yielded whatever they point to (a broken link, a FIFO): reading decides what is a memory,
    so that each one is counted. A folder reachable from two roots is listed once.
    """
    seen: set[tuple[int, int]] = set()
    for root in roots:
        yield from _walk(root, seen, problems)


def _walk(root: str, seen: set[tuple[int, int]], problems: list[tuple[str, str]]) -> Iterator[str]:
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
            try:
                is_dir = entry.is_dir()  # follows links; a broken or looping link is not a folder
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(entry.path)
            elif entry.name.endswith(".json"):
                yield entry.path
        stack.extend(reversed(subfolders))  # depth first, in name order

"""Where the raw inputs come from: memory files of a MetaHuman OS tree, or the lines of a JSONL file.

A memory tree's inputs are its *.json files (curation.walk lists them; workers read them). A JSONL file's
are its lines, as (where, bytes) pairs, or (where, Malformed) for a line too long to hold, so that every
input is counted once whatever happens to it.

MetaHuman OS layouts, both read when present:
    <root>/memory/episodic/YYYY/<id>-<slug>.json                                   (older, single user)
    <root>/profiles/<user>/memory/episodic/[<category>/]YYYY/MM/DD/<file>.json     (per user)
With dataset.user set only that profile is read. A path that is itself an `episodic` folder is read whole.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from curation.memory import Malformed

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "sample-memories"

Input = tuple[str, bytes | Malformed]


def root_of(source: str, path: str | None) -> Path:
    return SAMPLE_DIR if source == "sample" else Path(os.path.expanduser(str(path)))


def profiles(root: Path) -> list[str]:
    folder = root / "profiles"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def episodic_roots(root: Path, user: str | None) -> list[Path]:
    """The episodic folders a MetaHuman OS root holds (for one user, or all); [] when it holds none."""
    if root.name == "episodic" and root.is_dir():
        return [root]
    users = [user] if user else profiles(root)
    found = [] if user else [root / "memory" / "episodic"]
    found += [root / "profiles" / name / "memory" / "episodic" for name in users]
    return [p for p in found if p.is_dir()]


def jsonl_inputs(path: Path, limit: int) -> Iterator[Input]:
    """Non-blank lines as (file:line, bytes); a line over `limit` bytes is skipped without being held whole."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(iter(lambda: fh.readline(limit + 1), b""), 1):
            where = f"{path}:{lineno}"
            if len(line) > limit and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # drain the rest of the long line
                    line = fh.readline(1 << 20)
                yield where, Malformed(f"line longer than dataset.max_file_bytes={limit} bytes")
            elif line.strip():
                yield where, line

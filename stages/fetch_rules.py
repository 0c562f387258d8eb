"""What fetch lets a pod's result.json bring home, and where it may land: the part of fetch that needs no pod.

An allowlist, not a blocklist: the trainer's outputs are few and known, and a name nobody thought of is the
one that overwrites something. The run's own records are also named, so a refusal can say what it saved.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from engine.errors import StageError

# base_model: model=tiny's random base, which exists nowhere else; tensorboard: train.report_to=[tensorboard]'s
# event files (scalars: kilobytes per thousand steps), last to come home when provider.max_fetch_mb bites
FOLDERS = ("adapter", "base_model", "plots", "tensorboard")
ALLOWED = "adapter/…, base_model/…, plots/…, tensorboard/…, *.png at the top and metrics.jsonl"
# The run's own records (README, "Where results land"), compared lower-cased: on a case-insensitive disk
# State.json is state.json.
RECORDS = frozenset({"run.log", "state.json", "run-summary.json", "train.log", "config.json", "result.json",
                     ".hydra", "ssh", "dataset", "pod"})
SHA256 = re.compile(r"[0-9a-f]{64}")


def plain(rel: object) -> bool:
    """A relative POSIX path written the one canonical way, so that two spellings never name one file;
    no control characters, which would garble the log that names it."""
    if not isinstance(rel, str) or "\\" in rel or any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return False
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and str(path) == rel and ".." not in path.parts


def refusal(rel: str, digest: object) -> str | None:
    """Why result.json's entry `rel` may not come home, or None when it may (its destination aside)."""
    if not plain(rel):
        return "is not a plain relative path inside the run folder"
    parts = PurePosixPath(rel).parts
    if parts[0].lower() in RECORDS:
        return f"would overwrite the run's own {parts[0]}"
    in_folder = len(parts) > 1 and parts[0] in FOLDERS
    if not (in_folder or rel == "metrics.jsonl" or len(parts) == 1 and rel.endswith(".png")):
        return f"is not something training makes (allowed: {ALLOWED})"
    if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
        return "has no sha256 to check it against"
    return None


def group(rel: str) -> str:
    """adapter, base_model, metrics.jsonl or plots: what comes home, or not, as a whole when the cap bites."""
    top = rel.split("/", 1)[0]
    if top in FOLDERS:
        return top
    return "plots" if rel.endswith(".png") else rel


def safe_destination(run_dir: Path, rel: str) -> Path:
    """Where `rel` lands: inside run_dir, through no symlink, onto nothing but a regular file (or nothing)."""
    if not plain(rel):
        raise StageError(f"result.json lists {rel!r}, which would land outside the run directory",
                         "the pod's output is not trustworthy")
    here, parts = run_dir, PurePosixPath(rel).parts
    for i, part in enumerate(parts, 1):
        here = here / part
        if here.is_symlink():  # even one pointing inside: adapter -> .hydra would overwrite the config
            raise StageError(f"result.json lists {rel!r}, but {here} is a symbolic link: fetch writes through none")
        last = i == len(parts)
        if here.exists() and not (here.is_file() if last else here.is_dir()):
            raise StageError(f"result.json lists {rel!r}, but {here} exists and is not a "
                             + ("regular file" if last else "folder"))
    dest = here.resolve()
    if run_dir.resolve() not in dest.parents:
        raise StageError(f"result.json lists {rel!r}, which resolves outside {run_dir}")
    return dest

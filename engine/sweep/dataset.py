"""One dataset per sweep: the jobs of a multirun that share a dataset config train on the same prepared files,
so their eval losses are comparable and the memories are read once.

The files are prepared once per hash of what shapes them (the resolved dataset config and train.eval_fraction;
the model does not enter: curation writes text, the tokenizer reads it on the pod) into
<sweep dir>/datasets/<hash>/, under an fcntl lock beside it, since the jobs of a joblib sweep are separate
processes. Preparing happens in a hidden folder that is renamed into place only when complete, so a failure or a
kill leaves no half-made shared folder: the next job of that config prepares again. Each job then hardlinks the
files into its own run_dir/dataset (a copy where links cannot be made), so a job folder is complete on its own.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from omegaconf import DictConfig, OmegaConf

UNSHAPING = ("workers",)  # dataset keys that change how fast the files are made, not what they hold


def config_hash(cfg: DictConfig) -> str:
    """16 hex digits of sha256 over everything that shapes the prepared files."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    for key in UNSHAPING:
        dataset.pop(key, None)
    shape = {"dataset": dataset, "eval_fraction": cfg.train.eval_fraction}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_once(folder: Path, make: Callable[[Path], object]) -> bool:
    """Make `folder` with make(into) unless a job before made it; returns True when it was already there.
    Complete means it exists: it only ever appears by a rename of a finished folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f"{folder.name}.lock"):
        if folder.is_dir():
            return True
        for stale in folder.parent.glob(f".{folder.name}.*.partial"):  # a job killed while preparing
            shutil.rmtree(stale, ignore_errors=True)
        partial = folder.parent / f".{folder.name}.{os.getpid()}.partial"
        try:
            make(partial)
            os.rename(partial, folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return False


def link_into(folder: Path, into: Path) -> None:
    """Every file of the shared folder into the job's own dataset folder: a hardlink, or a copy across file
    systems. Nothing writes to a prepared dataset afterwards, so a link is as good as a copy."""
    into.mkdir(parents=True, exist_ok=True)
    for src in sorted(folder.iterdir()):
        dst = into / src.name
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

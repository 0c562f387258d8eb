"""One dataset per sweep (engine/sweep/dataset.py): the hash, the once-only preparation under a lock across
processes, and what a failure leaves behind."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from engine.sweep import dataset as sweep_dataset
from engine.compose import jobs


def cfg(*overrides: str):
    return jobs(list(overrides), multirun=False)[0][1]


def test_the_hash_follows_what_shapes_the_files_and_nothing_else():
    base = sweep_dataset.config_hash(cfg())
    assert sweep_dataset.config_hash(cfg("lora.r=16", "train.learning_rate=1e-3", "model=qwen3_0_6b")) == base
    assert sweep_dataset.config_hash(cfg("dataset.workers=1")) == base  # how fast, not what
    assert sweep_dataset.config_hash(cfg("train.eval_fraction=0.2")) != base
    assert sweep_dataset.config_hash(cfg("dataset.filters.since=2020-01-01")) != base
    assert sweep_dataset.config_hash(cfg("dataset.persona.name=Alex")) != base


def _write(into: Path, text: str = "rows\n") -> None:
    into.mkdir(parents=True)
    (into / "train.jsonl").write_text(text)
    (into / "manifest.json").write_text("{}\n")


def test_a_failure_while_preparing_leaves_no_shared_folder_and_the_next_job_prepares_again(tmp_path):
    folder = tmp_path / "datasets" / "abc"

    def broken(into: Path) -> None:
        _write(into)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        sweep_dataset.prepare_once(folder, broken)
    assert not folder.exists()
    assert [p.name for p in folder.parent.iterdir()] == ["abc.lock"]  # no half-made folder, hidden or not
    assert sweep_dataset.prepare_once(folder, _write) is False
    assert (folder / "train.jsonl").read_text() == "rows\n"
    assert sweep_dataset.prepare_once(folder, lambda into: pytest.fail("prepared twice")) is True


def test_a_folder_left_by_a_killed_job_is_cleared_before_preparing(tmp_path):
    folder = tmp_path / "datasets" / "abc"
    stale = folder.parent / ".abc.999999.partial"
    _write(stale, "half\n")
    assert sweep_dataset.prepare_once(folder, _write) is False
    assert not stale.exists()
    assert (folder / "train.jsonl").read_text() == "rows\n"


def _job(folder: str, log: str, start) -> None:
    start.wait()

    def make(into: Path) -> None:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        _write(into, f"made by {os.getpid()}\n")

    sweep_dataset.prepare_once(Path(folder), make)


def test_parallel_jobs_prepare_once(tmp_path):
    folder, log = tmp_path / "datasets" / "abc", tmp_path / "made.log"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_job, args=(str(folder), str(log), start)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    makers = log.read_text().split()
    assert len(makers) == 1
    assert (folder / "train.jsonl").read_text() == f"made by {makers[0]}\n"


def test_a_job_gets_the_shared_files_in_its_own_folder(tmp_path):
    folder = tmp_path / "datasets" / "abc"
    _write(folder)
    into = tmp_path / "run" / "dataset"
    sweep_dataset.link_into(folder, into)
    assert sorted(p.name for p in into.iterdir()) == ["manifest.json", "train.jsonl"]
    assert (into / "train.jsonl").read_text() == "rows\n"
    assert (into / "train.jsonl").stat().st_ino == (folder / "train.jsonl").stat().st_ino  # linked, not copied


def test_outside_a_multirun_there_is_no_sweep_folder():
    from engine import sweep

    assert sweep.folder() is None

"""The prepare stage inside a real run (python run.py in a subprocess): bad data stops the run before
anything is rented, and the stage prints its funnel."""
from __future__ import annotations

from pathlib import Path

import pytest

from curation.reasons import REASONS
from tests.conftest import Run, run_lorapod
from tests.memtree import Tree, snapshot


def metahuman(root: Path) -> list[str]:
    return ["dataset=metahuman", f"dataset.path={root}", "dataset.persona.name=Alex"]


def assert_stopped_at_prepare(run: Run, message: str) -> None:
    assert run.proc.returncode != 0, run.output
    stages = run.state["stages"]
    assert stages["prepare"]["status"] == "failed"
    assert {stages[s]["status"] for s in ("build", "deploy", "probe", "upload", "train")} == {"skipped"}
    assert run.state["pod"] is None and run.summary["pod"] is None and not (run.run_dir / "pod").exists()
    assert run.summary["failed_stage"] == "prepare" and message in run.summary["error"]
    assert "nothing was rented" in run.summary["error"]
    assert (run.run_dir / "dataset/manifest.json").is_file()  # the counts are there to review


def test_nothing_left_to_train_on_stops_the_run_before_deploy(tmp_path, run_dir):
    tree = Tree(tmp_path / "mh")
    for i in range(3):
        tree.add(content="too short")
    run = run_lorapod(*metahuman(tree.root), run_dir=run_dir)
    assert_stopped_at_prepare(run, "the most (3) as too_short")
    assert "dataset.filters.min_content_chars" in run.output


def test_mostly_unreadable_memories_stop_the_run_before_deploy(tmp_path, run_dir):
    tree = Tree(tmp_path / "mh")
    tree.add()
    tree.raw("memory/episodic/2025/sealed.json", b"\x93\x00encrypted\xff")
    run = run_lorapod(*metahuman(tree.root), run_dir=run_dir)
    assert_stopped_at_prepare(run, "more than dataset.max_bad_fraction=0.2")
    assert "sealed.json" in run.output


def test_pipeline_prepare_prints_the_funnel_and_writes_the_dataset(tmp_path, run_dir):
    tree = Tree(tmp_path / "mh")
    for i in range(12):
        tree.add(layout="old" if i % 2 else "profile")
    tree.raw("memory/episodic/2025/broken.json", b"{")
    before = snapshot(tree.root)
    run = run_lorapod("pipeline=prepare", *metahuman(tree.root), run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    assert snapshot(tree.root) == before
    for reason in REASONS:
        assert f"- {reason}" in run.output
    assert "broken.json: not JSON" in run.output
    manifest = (run_dir / "dataset/manifest.json").read_text()
    assert '"read": 13' in manifest and '"kept": 12' in manifest
    assert list(run.state["stages"]) == ["prepare"]


@pytest.mark.parametrize("override, complaint", [
    ("dataset.filters.types=[conversation,reflections]", "dataset.filters.types: names unknown types ['reflections']"),
    ("dataset.dedup.near_threshold=1.5", "dataset.dedup.near_threshold: must be in (0, 1]"),
    ("dataset.filters.since=yesterday", "dataset.filters.since: must be an ISO date"),
    ("dataset.user=nobody", "dataset.user: must be a profile under"),
    ("dataset.templates.dream='{when}'", "dataset.templates.dream: may only use the placeholders"),
])
def test_dataset_settings_are_checked_before_anything_runs(tmp_path, run_dir, override, complaint):
    tree = Tree(tmp_path / "mh")
    tree.add(layout="profile")
    run = run_lorapod(*metahuman(tree.root), override, run_dir=run_dir)
    assert run.proc.returncode == 2
    assert complaint in run.output
    assert list(run.state["stages"]) == ["config"]

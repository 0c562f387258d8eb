"""The prepare stage inside a real run (python run.py in a subprocess): bad data stops the run before
anything is rented, and the stage prints its funnel."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from curation.reasons import REASONS
from tests.memtree import Tree, snapshot

REPO = Path(__file__).resolve().parents[2]


def run(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "run.py", f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def metahuman(root: Path) -> list[str]:
    return ["dataset=metahuman", f"dataset.path={root}", "dataset.persona.name=Alex"]


def assert_stopped_at_prepare(run_dir: Path, proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode != 0, proc.stderr
    state = json.loads((run_dir / "state.json").read_text())
    summary = json.loads((run_dir / "run-summary.json").read_text())
    assert state["stages"]["prepare"]["status"] == "failed"
    assert {state["stages"][s]["status"] for s in ("build", "deploy", "probe", "upload", "train")} == {"skipped"}
    assert state["pod"] is None and summary["pod"] is None and not (run_dir / "pod").exists()
    assert summary["failed_stage"] == "prepare" and message in summary["error"]
    assert "nothing was rented" in summary["error"]
    assert (run_dir / "dataset/manifest.json").is_file()  # the counts are there to review


def test_nothing_left_to_train_on_stops_the_run_before_deploy(tmp_path):
    tree = Tree(tmp_path / "mh")
    for i in range(3):
        tree.add(content="too short")
    proc = run(tmp_path / "run", *metahuman(tree.root))
    assert_stopped_at_prepare(tmp_path / "run", proc, "the most (3) as too_short")
    assert "dataset.filters.min_content_chars" in proc.stderr


def test_mostly_unreadable_memories_stop_the_run_before_deploy(tmp_path):
    tree = Tree(tmp_path / "mh")
    tree.add()
    tree.raw("memory/episodic/2025/sealed.json", b"\x93\x00encrypted\xff")
    proc = run(tmp_path / "run", *metahuman(tree.root))
    assert_stopped_at_prepare(tmp_path / "run", proc, "more than dataset.max_bad_fraction=0.2")
    assert "sealed.json" in proc.stderr


def test_pipeline_prepare_prints_the_funnel_and_writes_the_dataset(tmp_path):
    tree = Tree(tmp_path / "mh")
    for i in range(12):
        tree.add(layout="old" if i % 2 else "profile")
    tree.raw("memory/episodic/2025/broken.json", b"{")
    before = snapshot(tree.root)
    run_dir = tmp_path / "run"
    proc = run(run_dir, "pipeline=prepare", *metahuman(tree.root))
    assert proc.returncode == 0, proc.stderr
    assert snapshot(tree.root) == before
    for reason in REASONS:
        assert f"- {reason}" in proc.stderr
    assert "broken.json: not JSON" in proc.stderr
    manifest = json.loads((run_dir / "dataset/manifest.json").read_text())
    assert manifest["read"] == 13 and manifest["kept"] == 12
    assert list(json.loads((run_dir / "state.json").read_text())["stages"]) == ["prepare"]


@pytest.mark.parametrize("override, complaint", [
    ("dataset.filters.types=[conversation,reflections]", "dataset.filters.types: names unknown types ['reflections']"),
    ("dataset.dedup.near_threshold=1.5", "dataset.dedup.near_threshold: must be in (0, 1]"),
    ("dataset.filters.since=yesterday", "dataset.filters.since: must be an ISO date"),
    ("dataset.user=nobody", "dataset.user: must be a profile under"),
    ("dataset.templates.dream='{when}'", "dataset.templates.dream: may only use the placeholders"),
])
def test_dataset_settings_are_checked_before_anything_runs(tmp_path, override, complaint):
    tree = Tree(tmp_path / "mh")
    tree.add(layout="profile")
    proc = run(tmp_path / "run", *metahuman(tree.root), override)
    assert proc.returncode == 2
    assert complaint in proc.stderr
    state = json.loads((tmp_path / "run/state.json").read_text())
    assert list(state["stages"]) == ["config"]

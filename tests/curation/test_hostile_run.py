"""Hostile memory folders through `python run.py pipeline=prepare`: exit 0 or 2, a manifest that names each bad
input and why, never a traceback, and the memory folder as it was."""
from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_lorapod
from tests.memtree import Tree, snapshot

EPISODIC = "memory/episodic/2025"
HOSTILE = {
    "surrogate.json": (b'{"content": "\\ud800 half an emoji, then a sentence long enough to keep", '
                       b'"timestamp": "2025-06-01T09:00:00Z", "tags": ["t"]}',
                       "lone surrogate \\ud800 in a string: not valid Unicode text"),
    "nested.json": (b"[" * 100_000, "nested too deep"),
}


def prepare(tree: Tree, run_dir):
    return run_lorapod("pipeline=prepare", "dataset=metahuman", f"dataset.path={tree.root}",
                       "dataset.persona.name=X", run_dir=run_dir)


def malformed(run_dir) -> dict[str, str]:
    manifest = json.loads((run_dir / "dataset/manifest.json").read_text(encoding="utf-8"))
    return {bad["path"]: bad["reason"] for bad in manifest["malformed"]}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_one_hostile_file_among_good_ones_is_malformed_and_the_run_goes_on(tmp_path, run_dir, name):
    tree = Tree(tmp_path / "mh")
    for i in range(4):
        tree.add(hours=i)
    data, why = HOSTILE[name]
    bad = tree.raw(f"{EPISODIC}/{name}", data)
    before = snapshot(tree.root)

    run = prepare(tree, run_dir)

    assert run.proc.returncode == 0, run.output
    assert "Traceback" not in run.output
    assert why in malformed(run_dir)[str(bad)]
    assert f"{bad}: " in run.output  # the funnel lists it too
    (run_dir / "dataset/train.jsonl").read_bytes().decode("utf-8")  # strictly UTF-8, all of it
    assert snapshot(tree.root) == before


def test_a_folder_of_hostile_input_stops_with_exit_2_and_a_manifest(tmp_path, run_dir):
    tree = Tree(tmp_path / "mh")
    tree.add()
    for name, (data, _) in HOSTILE.items():
        tree.raw(f"{EPISODIC}/{name}", data)
    episodic = tree.root / EPISODIC
    (episodic / "root").symlink_to("/")  # walked, it would take all day and list the machine
    (episodic / "passwd.json").symlink_to("/etc/passwd")
    os.mkfifo(episodic / "pipe.json")
    before = snapshot(tree.root)

    run = prepare(tree, run_dir)

    assert run.proc.returncode == 2, run.output
    assert "Traceback" not in run.output and "more than dataset.max_bad_fraction" in run.output
    reasons = malformed(run_dir)
    assert len(reasons) == 5
    for name, (_, why) in HOSTILE.items():
        assert why in reasons[str(episodic / name)]
    assert reasons[str(episodic / "root")].startswith("symbolic link to /, outside the memory folder")
    assert reasons[str(episodic / "passwd.json")].startswith("symbolic link to /etc/passwd, outside the memory")
    assert reasons[str(episodic / "pipe.json")] == "not a regular file"
    assert snapshot(tree.root) == before

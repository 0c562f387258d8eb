"""engine/sweep/ledger.py: the sweep's budget ledger, shared by jobs that run at once in separate processes."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from engine.sweep import ledger
from tests.conftest import REPO

# One process: wait for the start file, then reserve `count` jobs of `usd` each as fast as it can.
RESERVER = """
import sys, time
from pathlib import Path
from engine.sweep import ledger
path, start, tag, count, usd, most = sys.argv[1:]
while not Path(start).exists():
    time.sleep(0.001)
for i in range(int(count)):
    ledger.reserve(Path(path), f"{tag}-{i}", float(usd), float(most))
"""


def test_two_processes_reserving_at_once_never_overspend(tmp_path):
    path, start = tmp_path / "sweep" / ledger.FILENAME, tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RESERVER, str(path), str(start), tag, "40", "0.1", "3.0"],
                              cwd=REPO) for tag in ("a", "b")]
    time.sleep(0.5)  # both are importing and waiting; no result depends on this pause
    start.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    jobs = json.loads(path.read_text())["jobs"]
    assert len(jobs) == 80  # every request was written: none lost to the other process's write
    held = [j["reserved_usd"] for j in jobs.values() if j["status"] == "reserved"]
    assert len(held) == 30 and sum(held) == pytest.approx(3.0)  # exactly what fits, no more
    assert sum(j["status"] == "refused" for j in jobs.values()) == 50
    assert {tag for tag in (name.split("-")[0] for name, j in jobs.items() if j["status"] == "reserved")} <= {"a", "b"}


def test_settling_replaces_the_reservation_by_the_cost(tmp_path):
    path = tmp_path / ledger.FILENAME
    assert ledger.reserve(path, "0", 1.0, 2.0).ok
    assert ledger.reserve(path, "1", 1.0, 2.0).ok
    third = ledger.reserve(path, "2", 0.5, 2.0)
    assert not third.ok and third.left_usd == 0.0 and third.held_usd == 2.0
    assert "spent $0.0000, reserved by running jobs $2.0000, left $0.0000" in third.describe(2.0)
    ledger.settle(path, "0", 0.25, "the provider's bill")
    fourth = ledger.reserve(path, "3", 0.5, 2.0)
    assert fourth.ok and fourth.spent_usd == 0.25 and fourth.left_usd == 0.75
    line = ledger.read(path)["jobs"]["0"]
    assert line["status"] == "settled" and line["spent_usd"] == 0.25 and line["source"] == "the provider's bill"
    assert ledger.settle(path, "2", 9.0, "x")["status"] == "refused"  # a refused job spent nothing


def test_a_job_nobody_can_bound_holds_all_that_is_left(tmp_path):
    path = tmp_path / ledger.FILENAME
    got = ledger.reserve(path, "0", None, 2.0)
    assert got.ok and got.reserved_usd == 2.0
    assert not ledger.reserve(path, "1", 0.01, 2.0).ok

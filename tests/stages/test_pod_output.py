"""What the pod prints is not trusted: malformed progress events, lines without a newline and a flood of output
never stop training, never grow a buffer without bound, and are reported once."""
from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine import progress
from engine.state import RunState
from engine.transport.base import CUT_MARKER, MAX_LINE, LineAssembler
from engine.context import PROJECT_ROOT
from stages.train import EVENT_PREFIX, _Follower

FOLLOW_LOG = PROJECT_ROOT / "remote_image" / "follow_log.py"


def load_follow_log():
    spec = importlib.util.spec_from_file_location("follow_log", FOLLOW_LOG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

# Every kind of event train.py cannot use, as the pod could print it; the same kind twice is told once.
BAD_EVENTS = [
    ('{"event": "step", "total": 5}', "'step' event with 'step' = None"),
    ('{"event": "step", "total": 5}', None),
    ('{"event": "eval", "phase": "before", "eval_loss": null}', "'eval_loss' = None"),
    ("[1, 2]", "a JSON list, not an object"),
    ("7", "a JSON int, not an object"),
    ('"step"', "a JSON str, not an object"),
    ('{"event": "step", "step": 1, "total": "many"}', "'total' = 'many'"),
    ("{not json", "not valid JSON"),
    ("[" * 100000, None),
    ('{"step": 3}', 'no "event" name'),
]


def hostile_lines() -> list[str]:
    return [EVENT_PREFIX + payload for payload, _ in BAD_EVENTS]


def test_the_cut_marker_and_length_are_the_same_on_both_sides():
    follow_log = load_follow_log()
    assert follow_log.MAX_LINE == MAX_LINE and follow_log.CUT_MARKER == CUT_MARKER


def test_a_line_without_a_newline_is_cut_and_never_held_whole():
    seen: list[str] = []
    lines = LineAssembler(seen.append)
    for _ in range(160):  # 10 MB in 64 KB reads, no newline
        lines.feed(b"x" * 65536)
    lines.feed(b"tail of the long line\nnext line\npartial")
    lines.close()
    assert lines.held_max <= MAX_LINE + 1
    assert len(seen) == 3 and seen[1:] == ["next line", "partial"]
    assert len(seen[0].encode()) == MAX_LINE and seen[0].endswith(CUT_MARKER.decode())
    assert lines.cut == 1


def test_lines_split_across_reads_and_a_cut_through_a_character_come_out_whole():
    seen: list[str] = []
    lines = LineAssembler(seen.append, max_line=len(CUT_MARKER) + 4)
    for byte in ("ab\nkäse\n" + "ü" * 40 + "\nend").encode():
        lines.feed(bytes([byte]))
    lines.close()
    assert seen[:2] == ["ab", "käse"] and seen[-1] == "end"
    assert seen[2].endswith(CUT_MARKER.decode()) and len(seen[2].encode("utf-8", "replace")) <= len(CUT_MARKER) + 6


def test_follow_log_cuts_a_long_line_and_counts_it_once_when_started_again(tmp_path):
    log = tmp_path / "train.log"
    log.write_bytes(b"one\n" + b"y" * (3 * 1024 * 1024) + b"\nthree\n")
    (tmp_path / "exit_code").write_text("0\n")

    def follow(from_line: int) -> list[bytes]:
        out = subprocess.run([sys.executable, str(FOLLOW_LOG), str(log), str(from_line), str(tmp_path / "pid"),
                              str(tmp_path / "exit_code")], capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split(b"\n")[:-1]

    whole = follow(1)
    assert whole[0] == b"one" and whole[2] == b"three" and len(whole) == 3
    assert len(whole[1]) == MAX_LINE and whole[1].endswith(CUT_MARKER)
    assert follow(3) == [b"three"], "a follower started from line 3 counts the cut line as line 2"


def follower(tmp_path: Path, **budgets) -> _Follower:
    (tmp_path / "run").mkdir()
    ctx = SimpleNamespace(run_dir=tmp_path / "run", state=RunState(run_id="t"), remote_dir="/pod/run",
                          save=lambda: None)
    return _Follower(ctx, **budgets)


def test_each_kind_of_bad_event_is_warned_once_with_its_line_and_training_goes_on(tmp_path, warnings):
    f = follower(tmp_path)
    f.line(EVENT_PREFIX + json.dumps({"event": "start", "total": 5, "backend": "peft", "device": "cpu"}))
    for line in hostile_lines():
        f.line(line)
    f.line(EVENT_PREFIX + json.dumps({"event": "step", "step": 2, "total": 5, "loss": None}))
    f.line(EVENT_PREFIX + json.dumps({"event": "step", "step": 9, "total": 5, "loss": float("nan")}))
    f.line(EVENT_PREFIX + json.dumps({"event": "done", "steps": 5, "train_loss": None}))
    f.close()
    assert f.summary() == "5 steps, train loss ?"
    told = [w for w in warnings if w.startswith("WARNING") and "ignored a progress event" in w]
    expected = [(n + 2, why) for n, (_, why) in enumerate(BAD_EVENTS) if why]
    assert len(told) == len(expected), told
    for (line_no, why), warning in zip(expected, told):
        assert f"train.log line {line_no})" in warning and why in warning, (why, warning)
    assert f.report()["bad_events"]["'step' event with 'step' = None, not a number"] == 2
    assert len((tmp_path / "run" / "train.log").read_text().splitlines()) == 1 + len(BAD_EVENTS) + 3


@pytest.mark.parametrize("step,total,loss", [(3, 0, 1.0), (9, 5, float("inf")), ("x", None, "y"), (True, [], {}),
                                             (1e300, 1e308, -0.0), (-4, -1, None)])
def test_the_progress_bar_draws_odd_values_without_raising(step, total, loss):
    bar = progress.ProgressBar(stream=io.StringIO())
    line = bar.update(step, total, loss)
    assert line.startswith("train ") and "[" in line


def test_run_log_gets_the_pods_lines_up_to_its_budget_then_one_line(tmp_path, warnings):
    f = follower(tmp_path, run_log_budget=1000)
    for n in range(100):
        f.line(f"noise {n} " + "z" * 40)
    f.close()
    pod_lines = [w for w in warnings if w.startswith("DEBUG pod| noise")]
    assert 10 <= len(pod_lines) < 30
    assert sum("the rest of it is only in" in w for w in warnings) == 1
    assert len((tmp_path / "run" / "train.log").read_text().splitlines()) == 100, "train.log keeps every line"
    assert f.report()["run_log_full"] is True


def test_the_home_train_log_stops_at_its_budget_with_a_line_saying_where_the_rest_is(tmp_path):
    f = follower(tmp_path, home_log_budget=500)
    for n in range(100):
        f.line(f"line {n} " + "q" * 40)
    f.close()
    kept = (tmp_path / "run" / "train.log").read_text().splitlines()
    assert len(kept) < 15 and kept[-1].endswith("/pod/run/train.log on the pod]")
    assert f.lines_seen == 100

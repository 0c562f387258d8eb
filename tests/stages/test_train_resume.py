"""Where the train stage's follower stands goes into state.json, and a resumed follower (engine.attach) starts
from there: the home train.log is cut back to the recorded size, so the lines received again are there once."""
from __future__ import annotations

import json
from pathlib import Path

from engine.state import RunState
from stages.train import EVENT_PREFIX, _Follower, _Started


class Ctx:
    """What _Follower needs of a RunContext; save() writes state.json as the real one does."""

    def __init__(self, run_dir: Path, state: RunState):
        self.run_dir, self.state, self.remote_dir = run_dir, state, "/pod/run"

    def save(self) -> None:
        self.state.save(self.run_dir / "state.json")


def step(n: int) -> str:
    return EVENT_PREFIX + json.dumps({"event": "step", "step": n, "total": 9, "loss": 1.0})


def test_the_position_is_saved_and_a_resume_cuts_the_home_log_back_to_it(tmp_path, monkeypatch):
    monkeypatch.setattr("stages.train.FOLLOW_SAVE_S", 3600.0)  # plain lines are not saved one by one
    ctx = Ctx(tmp_path, RunState(run_id="t"))
    first = _Follower(ctx)
    for line in ("loading", step(1), step(2)):
        first.line(line)
    saved = RunState.load(tmp_path / "state.json").outputs["train_follow"]  # events are saved at once
    assert saved == {"lines": 3, "bytes": (tmp_path / "train.log").stat().st_size}
    first.line("a plain line received after the last save")  # not saved yet
    first.log.close()  # the process dies: no close(), so no last save
    assert (tmp_path / "train.log").read_text().count("\n") == 4

    resumed = _Follower(Ctx(tmp_path, RunState.load(tmp_path / "state.json")), resume=True)
    assert resumed.lines_seen == 3  # the follower asks the pod for line 4 on: the plain line comes again
    for line in ("a plain line received after the last save", step(3)):
        resumed.line(line)
    resumed.close()
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines == ["loading", step(1), step(2), "a plain line received after the last save", step(3)]


def test_following_until_started_stops_at_the_start_event(tmp_path):
    follower = _Follower(Ctx(tmp_path, RunState(run_id="t")), until_started=True)
    follower.line("loading")
    start = EVENT_PREFIX + json.dumps({"event": "start", "total": 9, "backend": "hf", "device": "cpu"})
    try:
        follower.line(start)
    except _Started:
        pass
    else:
        raise AssertionError("the start event did not stop the following")
    follower.close()
    assert follower.ctx.state.outputs["train_follow"]["lines"] == 2

"""engine/deadline.py on this side: the heartbeat that nothing stops, and what lorapod does with a deadline
that is not armed. The watchdog itself is tested in tests/remote_image; the whole path in test_dead_laptop.py."""
from __future__ import annotations

import threading

import pytest
from loguru import logger
from omegaconf import OmegaConf

from engine.context import RunContext
from engine.context import PROJECT_ROOT
from engine.deadline import EXTRA_KEY, GONE, POD_STATE_DIR, Heartbeat, _report
from engine.errors import StageError, TransportError
from engine.state import RunState


def context(tmp_path, **provider) -> RunContext:
    settings = dict(heartbeat_interval_s=0.02, heartbeat_timeout_s=3, max_runtime_s=60, require_deadline=False)
    settings.update(provider)
    cfg = OmegaConf.create({"provider": settings, "remote": {"workdir": "/pod"}})
    ctx = RunContext(cfg, tmp_path, RunState(run_id="r1"), provider=type("P", (), {"default_workdir": "/pod"})())
    ctx.state.pod = {"id": "pod-1", "price_per_hour": 0.74}
    return ctx


class FlakyTransport:
    """A fake transport (no pod here): its exec raises what it is told to, in turn, then records commands and
    answers each with `says`."""

    def __init__(self, failures: list[BaseException], says: tuple[str, ...] = ()):
        self.failures = failures
        self.says = says
        self.commands: list[str] = []
        self.beats = threading.Event()

    def exec(self, command, on_line=None, timeout=None):
        if self.failures:
            raise self.failures.pop(0)
        self.commands.append(command)
        for line in self.says:
            on_line(line)
        if len(self.commands) >= 3:
            self.beats.set()
        return 0


def test_the_heartbeat_survives_any_exception_and_keeps_beating(tmp_path):
    ctx = context(tmp_path)
    ctx.transport = FlakyTransport([TransportError("dropped"), RuntimeError("paramiko surprise"), EOFError()])
    messages: list[str] = []
    sink = logger.add(messages.append, level="DEBUG")
    heartbeat = Heartbeat(ctx).start()
    try:
        assert ctx.transport.beats.wait(10), "the heartbeat stopped after an exception"
    finally:
        heartbeat.stop()
        logger.remove(sink)
    assert ctx.transport.commands[0].startswith("touch /pod/lorapod-r1/heartbeat && ")
    assert any("paramiko surprise" in m for m in messages) and any("EOFError" in m for m in messages)


def not_armed() -> dict:
    return {"armed": False, "credential": None, "read": None, "methods": [], "reason": "rest: HTTP 403 denied"}


def test_a_deadline_that_is_not_armed_is_said_loudly_with_what_to_do(tmp_path):
    messages: list[str] = []
    sink = logger.add(messages.append, level="WARNING")
    try:
        _report(context(tmp_path), not_armed())
    finally:
        logger.remove(sink)
    [message] = messages
    assert "NOT ARMED: rest: HTTP 403 denied" in message and "pod-1" in message and "$0.74/h" in message
    assert "provider.watchdog_api_key_env" in message and "provider.require_deadline" in message


def test_require_deadline_stops_the_run_instead(tmp_path):
    with pytest.raises(StageError) as stopped:
        _report(context(tmp_path, require_deadline=True), not_armed())
    assert "stops before training" in str(stopped.value) and "watchdog_api_key_env" in stopped.value.hint


def test_a_watchdog_that_died_after_it_was_armed_is_said_loudly_once(tmp_path):
    ctx = context(tmp_path)
    ctx.transport = FlakyTransport([], says=(GONE,))
    messages: list[str] = []
    sink = logger.add(messages.append, level="ERROR")
    heartbeat = Heartbeat(ctx).start()
    try:
        assert ctx.transport.beats.wait(10)
        assert messages == [], "not armed yet: nothing to say"
        ctx.state.outputs["deadline"] = {"armed": True}
        ctx.transport.beats.clear()
        ctx.transport.commands.clear()
        assert ctx.transport.beats.wait(10)
    finally:
        heartbeat.stop()
        logger.remove(sink)
    assert len(messages) == 1 and "NO LONGER RUNNING" in messages[0] and "pod-1" in messages[0]


def test_both_sides_agree_on_where_the_watchdogs_files_are():
    source = (PROJECT_ROOT / "remote_image" / "watchdog.py").read_text()
    assert f'DEFAULT_DIR = "{POD_STATE_DIR}"' in source and f'EXTRA_KEY = "{EXTRA_KEY}"' in source
    assert 'os.path.join(workdir, f"status-{pid}.json")' in source and '"watchdog.pid"' in source
    assert f'state_dir="${{LORAPOD_WATCHDOG_DIR:-{POD_STATE_DIR}}}"' in (PROJECT_ROOT / "remote_image" / "start.sh").read_text()

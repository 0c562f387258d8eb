"""remote_image/watchdog.py: its decisions as functions, and the real script against a loopback RunPod API."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tests.remote_image.podside import REMOTE_IMAGE, WAIT_S, clean_env

WATCHDOG = str(REMOTE_IMAGE / "watchdog.py")
KEY = "rpa_POD_SCOPED_TEST_KEY_1234567890"


def config(module, now=1000.0, fallback=None, **env):
    return module.load_config({k: str(v) for k, v in env.items()}, now, fallback or {})


# --- decisions --------------------------------------------------------------------------------------------

def test_deadline_counts_from_started_at_when_given(watchdog_module):
    cfg = config(watchdog_module, LORAPOD_MAX_RUNTIME_S=100, LORAPOD_STARTED_AT=500)
    assert watchdog_module.reason_to_delete(cfg, 599.0, None) is None
    assert "deadline passed" in watchdog_module.reason_to_delete(cfg, 600.0, None)


def test_deadline_counts_from_the_watchdogs_start_otherwise(watchdog_module):
    cfg = config(watchdog_module, now=1000.0, LORAPOD_MAX_RUNTIME_S=100)
    assert watchdog_module.reason_to_delete(cfg, 1099.0, None) is None
    assert watchdog_module.reason_to_delete(cfg, 1100.0, None) is not None


def test_a_missing_heartbeat_file_never_counts_as_stale(watchdog_module):
    cfg = config(watchdog_module, LORAPOD_HEARTBEAT_FILE="/nonexistent/beat", LORAPOD_HEARTBEAT_TIMEOUT_S=5)
    assert watchdog_module.heartbeat_mtime(cfg) is None
    assert watchdog_module.reason_to_delete(cfg, 10**9, None) is None


def test_a_heartbeat_older_than_its_timeout_is_stale(watchdog_module, tmp_path):
    beat = tmp_path / "beat"
    beat.touch()
    os.utime(beat, (1000.0, 1000.0))
    cfg = config(watchdog_module, LORAPOD_HEARTBEAT_FILE=beat, LORAPOD_HEARTBEAT_TIMEOUT_S=60)
    assert watchdog_module.heartbeat_mtime(cfg) == 1000.0
    assert watchdog_module.reason_to_delete(cfg, 1060.0, 1000.0) is None
    assert "heartbeat stale" in watchdog_module.reason_to_delete(cfg, 1061.0, 1000.0)


@pytest.mark.parametrize("env, message", [
    ({}, "nothing to watch"),
    ({"LORAPOD_MAX_RUNTIME_S": "soon"}, "not a number"),
    ({"LORAPOD_MAX_RUNTIME_S": "0"}, "must be > 0"),
    ({"LORAPOD_HEARTBEAT_FILE": "/tmp/beat"}, "needs LORAPOD_HEARTBEAT_TIMEOUT_S"),
    ({"LORAPOD_MAX_RUNTIME_S": "60", "RUNPOD_POD_ID": "abc"}, "RUNPOD_API_KEY is not set"),
])
def test_invalid_configurations_say_what_to_set(watchdog_module, env, message):
    with pytest.raises(watchdog_module.ConfigError, match=message):
        config(watchdog_module, **env)


def test_runpods_variables_come_from_the_container_when_missing_here(watchdog_module, tmp_path):
    environ = tmp_path / "environ"
    environ.write_bytes(b"PATH=/usr/bin\0RUNPOD_POD_ID=pod-1\0RUNPOD_API_KEY=" + KEY.encode() + b"\0HOME=/root\0")
    fallback = watchdog_module.container_environ(str(environ))
    assert fallback == {"RUNPOD_POD_ID": "pod-1", "RUNPOD_API_KEY": KEY}
    cfg = config(watchdog_module, fallback=fallback, LORAPOD_MAX_RUNTIME_S=60)
    assert (cfg.pod_id, cfg.api_key) == ("pod-1", KEY)
    # Set but empty in our own environment: deliberately not on RunPod.
    cfg = config(watchdog_module, fallback=fallback, LORAPOD_MAX_RUNTIME_S=60, RUNPOD_POD_ID="", RUNPOD_API_KEY="")
    assert cfg.pod_id is None
    assert watchdog_module.container_environ(str(tmp_path / "missing")) == {}


# --- the script -------------------------------------------------------------------------------------------

def run_watchdog(spawn, tmp_path, **env):
    env.setdefault("LORAPOD_WATCHDOG_DIR", str(tmp_path / "wd"))
    env.setdefault("LORAPOD_WATCHDOG_POLL_S", "0.05")
    return spawn([sys.executable, WATCHDOG], clean_env(**env), tmp_path / f"watchdog-{os.urandom(3).hex()}.log")


def test_help_describes_every_variable():
    out = subprocess.run([sys.executable, WATCHDOG, "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("LORAPOD_MAX_RUNTIME_S", "LORAPOD_STARTED_AT", "LORAPOD_HEARTBEAT_FILE",
                 "LORAPOD_HEARTBEAT_TIMEOUT_S", "LORAPOD_API_URL", "LORAPOD_WATCHDOG_POLL_S",
                 "LORAPOD_WATCHDOG_DIR", "RUNPOD_POD_ID", "RUNPOD_API_KEY"):
        assert name in out


def test_past_the_deadline_it_deletes_its_pod_and_never_prints_the_key(spawn, tmp_path, runpod_api):
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    [request] = runpod_api.requests
    assert (request.method, request.path, request.authorization) == ("DELETE", "/v2/pods/pod-abc", f"Bearer {KEY}")
    out = wd.output()
    assert "deadline passed" in out and "204" in out
    assert KEY not in out


def test_it_retries_until_the_api_accepts(spawn, tmp_path, runpod_api):
    runpod_api.statuses = [500, 429]
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    assert [r.path for r in runpod_api.requests] == ["/v2/pods/pod-abc"] * 3
    out = wd.output()
    assert "HTTP 500" in out and "HTTP 429" in out and KEY not in out


def test_a_pod_already_gone_is_success(spawn, tmp_path, runpod_api):
    runpod_api.statuses = [404]
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    assert len(runpod_api.requests) == 1
    assert "already gone" in wd.output()


def test_outside_runpod_it_only_says_what_it_would_do(spawn, tmp_path, runpod_api):
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url)
    assert wd.wait() == 0
    assert "would delete the pod now, but RUNPOD_POD_ID is not set" in wd.output()
    assert runpod_api.requests == []


def test_a_newer_watchdog_replaces_the_running_one(spawn, tmp_path, runpod_api):
    common = dict(LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    first = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="3600", **common)
    first.wait_for_line("watching")
    second = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="3600", **common)
    second.wait_for_line("watching")
    assert first.wait() == 0
    assert "stopped by SIGTERM" in first.output()
    assert f"replacing the watchdog already running (pid {first.proc.pid})" in second.output()
    assert second.proc.poll() is None
    assert (tmp_path / "wd" / "watchdog.pid").read_text().strip() == str(second.proc.pid)
    assert runpod_api.requests == []


def test_an_invalid_newcomer_leaves_the_running_one_in_charge(spawn, tmp_path, runpod_api):
    first = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="3600", LORAPOD_API_URL=runpod_api.url)
    first.wait_for_line("watching")
    bad = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="soon", LORAPOD_API_URL=runpod_api.url)
    assert bad.wait() == 2
    assert "not started" in bad.output()
    assert first.proc.poll() is None
    assert (tmp_path / "wd" / "watchdog.pid").read_text().strip() == str(first.proc.pid)


def test_the_watchdog_needs_nothing_but_the_standard_library():
    """It must run on any image with python3: importing it with site-packages disabled proves it."""
    code = f"import sys; sys.argv=['watchdog.py', '--help']; exec(open({WATCHDOG!r}).read())"
    done = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr

"""remote_image/watchdog.py: its decisions as functions, and the real script against a loopback RunPod API."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests.remote_image.podside import REMOTE_IMAGE, WAIT_S, clean_env

WATCHDOG = str(REMOTE_IMAGE / "watchdog.py")
KEY = "rpa_POD_SCOPED_TEST_KEY_1234567890"


def config(module, now=1000.0, environ="/nonexistent/environ", rp_environment="/nonexistent/rp", **env):
    return module.load_config({k: str(v) for k, v in env.items()}, now, environ, rp_environment)


# --- decisions --------------------------------------------------------------------------------------------

def test_deadline_counts_from_started_at_when_given(watchdog_module):
    cfg = config(watchdog_module, LORAPOD_MAX_RUNTIME_S=100, LORAPOD_STARTED_AT=500)
    assert watchdog_module.reason_to_delete(cfg, 599.0, None) is None
    assert "deadline passed" in watchdog_module.reason_to_delete(cfg, 600.0, None)


def test_deadline_counts_from_the_watchdogs_start_otherwise(watchdog_module):
    cfg = config(watchdog_module, now=1000.0, LORAPOD_MAX_RUNTIME_S=100)
    assert watchdog_module.reason_to_delete(cfg, 1099.0, None) is None
    assert watchdog_module.reason_to_delete(cfg, 1100.0, None) is not None


def test_a_heartbeat_that_never_starts_counts_from_the_watchdogs_start(watchdog_module):
    """lorapod died before it ever connected: the boot watchdog must still stop the pod."""
    cfg = config(watchdog_module, now=1000.0, LORAPOD_HEARTBEAT_FILE="/nonexistent/beat",
                 LORAPOD_HEARTBEAT_TIMEOUT_S=60)
    assert watchdog_module.Heartbeat(cfg).read() is None
    assert watchdog_module.reason_to_delete(cfg, 1060.0, None) is None
    assert "no heartbeat" in watchdog_module.reason_to_delete(cfg, 1061.0, None)


def test_a_heartbeat_older_than_its_timeout_is_stale(watchdog_module, tmp_path):
    beat = tmp_path / "beat"
    beat.touch()
    os.utime(beat, (1000.0, 1000.0))
    cfg = config(watchdog_module, LORAPOD_HEARTBEAT_FILE=beat, LORAPOD_HEARTBEAT_TIMEOUT_S=60)
    assert watchdog_module.Heartbeat(cfg).read() == 1000.0
    assert watchdog_module.reason_to_delete(cfg, 1060.0, 1000.0) is None
    assert "heartbeat stale" in watchdog_module.reason_to_delete(cfg, 1061.0, 1000.0)


def test_an_unreadable_heartbeat_keeps_its_last_known_time(watchdog_module, tmp_path, capsys):
    """EIO on a network volume, a permission change: the watchdog goes on, and the beat only ages."""
    beat = tmp_path / "beat"
    beat.touch()
    os.utime(beat, (1000.0, 1000.0))
    cfg = config(watchdog_module, LORAPOD_HEARTBEAT_FILE=beat, LORAPOD_HEARTBEAT_TIMEOUT_S=60)
    heartbeat = watchdog_module.Heartbeat(cfg)
    assert heartbeat.read() == 1000.0
    # A file where a folder should be: stat raises NotADirectoryError, an OSError that is not "no file yet".
    cfg.heartbeat_file = str(beat / "beat")
    assert heartbeat.read() == 1000.0
    assert heartbeat.read() == 1000.0
    out = capsys.readouterr().out
    assert out.count("cannot read the heartbeat file") == 1, out  # said once, not every poll
    assert "heartbeat stale" in watchdog_module.reason_to_delete(cfg, 1061.0, heartbeat.read())


@pytest.mark.parametrize("env, message", [
    ({}, "nothing to watch"),
    ({"LORAPOD_MAX_RUNTIME_S": "soon"}, "not a number"),
    ({"LORAPOD_MAX_RUNTIME_S": "0"}, "must be > 0"),
    ({"LORAPOD_HEARTBEAT_FILE": "/tmp/beat"}, "needs LORAPOD_HEARTBEAT_TIMEOUT_S"),
])
def test_invalid_configurations_say_what_to_set(watchdog_module, env, message):
    with pytest.raises(watchdog_module.ConfigError, match=message):
        config(watchdog_module, **env)


def test_credentials_come_from_the_environment_then_the_saved_file_then_pid_1(watchdog_module, tmp_path):
    workdir = tmp_path / "run-lorapod"
    workdir.mkdir()
    environ = tmp_path / "environ"
    environ.write_bytes(b"PATH=/usr/bin\0RUNPOD_POD_ID=pod-env\0RUNPOD_API_KEY=" + KEY.encode() + b"\0HOME=/root\0")
    common = dict(environ=str(environ), LORAPOD_MAX_RUNTIME_S=60, LORAPOD_WATCHDOG_DIR=workdir)

    rp = tmp_path / "rp_environment"  # as RunPod's official start.sh writes it
    rp.write_text(f'export RUNPOD_POD_ID="pod-rp"\nexport RUNPOD_API_KEY="{KEY}0"\nexport PATH="/usr/bin"\n')
    cfg = config(watchdog_module, environ="/nonexistent", rp_environment=str(rp), LORAPOD_MAX_RUNTIME_S=60,
                 LORAPOD_WATCHDOG_DIR=workdir)
    assert cfg.pod_id == "pod-rp" and [k.value for k in cfg.keys] == [KEY + "0"]

    cfg = config(watchdog_module, rp_environment=str(rp), **common)
    assert cfg.pod_id == "pod-env" and [k.value for k in cfg.keys] == [KEY]
    assert str(environ) in cfg.keys[0].label

    (workdir / "credentials").write_text(f"RUNPOD_POD_ID=pod-file\nRUNPOD_API_KEY={KEY}2\n")
    cfg = config(watchdog_module, **common)
    assert cfg.pod_id == "pod-file" and [k.value for k in cfg.keys] == [KEY + "2"]

    cfg = config(watchdog_module, RUNPOD_POD_ID="pod-own", RUNPOD_API_KEY=KEY + "3", **common)
    assert cfg.pod_id == "pod-own" and [k.value for k in cfg.keys] == [KEY + "3"]
    # Set but empty in our own environment: deliberately not on RunPod, looked for nowhere else.
    cfg = config(watchdog_module, RUNPOD_POD_ID="", RUNPOD_API_KEY="", **common)
    assert cfg.pod_id is None and cfg.keys == []


def test_sshd_as_pid_1_leaves_nothing_in_its_environ_so_only_the_file_helps(watchdog_module, tmp_path):
    """What /proc/1/environ shows once sshd has set its process title (reproduced with OpenSSH 9.2)."""
    environ = tmp_path / "environ"
    environ.write_bytes(b"sshd: /usr/sbin/sshd -D -e -f /etc/ssh/lorapod_sshd_config [listener] 0 of 10-100" + b"\0" * 40)
    cfg = config(watchdog_module, environ=str(environ), LORAPOD_MAX_RUNTIME_S=60,
                 LORAPOD_WATCHDOG_DIR=tmp_path / "empty")
    assert cfg.pod_id is None and cfg.keys == []


def test_the_users_watchdog_key_is_tried_after_the_pod_key(watchdog_module, tmp_path):
    workdir = tmp_path / "wd"
    workdir.mkdir()
    (workdir / "watchdog-key").write_text(KEY + "USER\n")
    cfg = config(watchdog_module, LORAPOD_MAX_RUNTIME_S=60, LORAPOD_WATCHDOG_DIR=workdir,
                 RUNPOD_POD_ID="pod-1", RUNPOD_API_KEY=KEY)
    assert [k.value for k in cfg.keys] == [KEY, KEY + "USER"]
    assert "your watchdog key" in cfg.keys[1].label and KEY not in cfg.keys[1].label


def test_graphql_lives_beside_the_rest_api(watchdog_module):
    cfg = config(watchdog_module, LORAPOD_MAX_RUNTIME_S=60)
    assert cfg.graphql_url == "https://api.runpod.io/graphql"
    cfg = config(watchdog_module, LORAPOD_MAX_RUNTIME_S=60, LORAPOD_API_URL="http://127.0.0.1:8080/v2/")
    assert cfg.graphql_url == "http://127.0.0.1:8080/graphql"


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


def status_of(tmp_path, wd) -> dict:
    return json.loads((tmp_path / "wd" / f"status-{wd.proc.pid}.json").read_text())


def test_past_the_deadline_it_verifies_then_deletes_its_pod_and_never_prints_the_key(spawn, tmp_path, runpod_api):
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    # Armed by a read, deleted, and the deletion confirmed by a read that finds no pod.
    assert [r.way for r in runpod_api.requests] == ["rest-read", "rest-delete", "rest-read"]
    delete = runpod_api.requests[1]
    assert (delete.method, delete.path, delete.authorization) == ("DELETE", "/v2/pods/pod-abc", f"Bearer {KEY}")
    out = wd.output()
    assert "deadline passed" in out and "204" in out and "armed" in out
    assert KEY not in out
    status = status_of(tmp_path, wd)
    assert status["state"] == "deleted" and status["armed"] is True and status["read"] == "rest"
    assert "this process's environment" in status["credential"] and KEY not in json.dumps(status)


@pytest.mark.parametrize("refused, read, deleted_by", [
    ({"rest-delete"}, "rest", "rest-action"),  # a pod key that may read and act, not DELETE
    ({"rest-read", "rest-delete", "rest-action"}, "graphql", "graphql"),  # REST refused, GraphQL works
])
def test_401_403_move_on_to_the_next_way(spawn, tmp_path, runpod_api, refused, read, deleted_by):
    runpod_api.refuse = refused
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    deleting = [r.way for r in runpod_api.requests if not r.way.endswith("read")]
    assert deleting[-1] == deleted_by and status_of(tmp_path, wd)["read"] == read
    graphql = [r for r in runpod_api.requests if r.way.startswith("graphql")]
    assert all(r.path == "/graphql" and r.body["variables"] == {"input": {"podId": "pod-abc"}} for r in graphql)
    assert KEY not in wd.output()


def test_a_key_refused_everywhere_is_not_armed_and_the_users_key_takes_over(spawn, tmp_path, runpod_api):
    workdir = tmp_path / "wd"
    workdir.mkdir()
    (workdir / "watchdog-key").write_text(KEY + "USER")
    runpod_api.refuse = {"rest-read", "rest-delete", "rest-action", "graphql", "graphql-read"}
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="3600", LORAPOD_API_URL=runpod_api.url,
                      RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    wd.wait_for_line("NOT ARMED")
    assert status_of(tmp_path, wd)["armed"] is False
    wd.stop()
    # The same refusals for the pod key, but the user's key may DELETE: armed with it, and it deletes.
    runpod_api.requests.clear()
    user = f"Bearer {KEY}USER"

    def answer(way, real=runpod_api.answer):  # the same API, with no refusal for your key
        if runpod_api.requests[-1].authorization != user:
            return real(way)
        refused, runpod_api.refuse = runpod_api.refuse, set()
        try:
            return real(way)
        finally:
            runpod_api.refuse = refused
    runpod_api.answer = answer
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    status = status_of(tmp_path, wd)
    assert status["armed"] is True and "your watchdog key" in status["credential"]
    last = [r for r in runpod_api.requests if r.way == "rest-delete"][-1]
    assert last.authorization == user
    out = wd.output()
    assert KEY not in out and "refused" in out


def test_it_retries_until_the_api_accepts(spawn, tmp_path, runpod_api):
    runpod_api.statuses = {"rest-delete": [500, 429], "rest-action": [503, 503], "graphql": [502, 502]}
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    assert [r.way for r in runpod_api.of("rest-delete")] == ["rest-delete"] * 3
    out = wd.output()
    assert "HTTP 500" in out and "HTTP 429" in out and "could not reach RunPod" in out and KEY not in out


def test_a_pod_already_gone_is_success(spawn, tmp_path, runpod_api):
    runpod_api.statuses = {"rest-delete": [404], "rest-read": [200]}  # armed; then reads find no pod
    runpod_api.deleted = True
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    assert [r.way for r in runpod_api.requests] == ["rest-read", "rest-delete", "rest-read"]
    assert "already gone" in wd.output()


def test_a_404_from_a_pod_that_is_still_there_moves_on_to_the_next_way(spawn, tmp_path, runpod_api):
    """An API may hide what a key may not touch behind a 404: only a read that finds no pod means gone."""
    runpod_api.statuses = {"rest-delete": [404]}
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    assert [r.way for r in runpod_api.requests if not r.way.endswith("read")] == ["rest-delete", "rest-action"]
    assert "a read still shows the pod" in wd.output()


def test_an_accepted_delete_is_confirmed_by_reading_until_the_pod_is_gone(spawn, tmp_path, runpod_api):
    runpod_api.statuses = {"rest-read": [200, 200, 200]}  # armed; then still there twice after the 204
    runpod_api.refuse = {"graphql-read"}
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    assert wd.wait() == 0
    assert len(runpod_api.of("rest-delete")) == 1 and "is gone" in wd.output()
    assert len(runpod_api.of("rest-read")) == 4


def test_runpodctl_is_the_last_way_and_gets_the_key_in_its_environment_only(spawn, tmp_path, runpod_api):
    """A fake runpodctl (the real one cannot run here): it records its arguments and whether it got the key."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "runpodctl.txt"
    tool = bin_dir / "runpodctl"
    tool.write_text(f"#!/bin/sh\necho \"$* key=${{RUNPOD_API_KEY:+set}}\" > {record}\necho 'pod \"$3\" removed'\n")
    tool.chmod(0o755)
    runpod_api.refuse = {"rest-delete", "rest-action", "graphql"}
    # runpodctl on PATH is used only against RunPod's own API (it cannot be pointed at this one) ...
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="3600", LORAPOD_API_URL=runpod_api.url,
                      RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY, PATH=f"{bin_dir}:{os.environ['PATH']}")
    wd.wait_for_line("watching")
    assert "runpodctl" not in status_of(tmp_path, wd)["methods"]
    wd.stop()
    # ... unless LORAPOD_RUNPODCTL names it. (Reads refused too: whether it went cannot be seen here.)
    runpod_api.refuse |= {"rest-read", "graphql-read"}
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url, RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY,
                      LORAPOD_RUNPODCTL=str(tool))
    assert wd.wait() == 0
    assert record.read_text().strip() == "remove pod pod-abc key=set"
    assert "runpodctl exit 0" in wd.output() and status_of(tmp_path, wd)["methods"][-1] == "runpodctl"


def test_outside_runpod_it_only_says_what_it_would_do(spawn, tmp_path, runpod_api):
    wd = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="10", LORAPOD_STARTED_AT="1000",
                      LORAPOD_API_URL=runpod_api.url)
    assert wd.wait() == 0
    assert "would delete the pod now, but RUNPOD_POD_ID is not set" in wd.output()
    assert runpod_api.requests == []
    assert status_of(tmp_path, wd)["armed"] is False


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
    assert runpod_api.of("rest-delete") == []


def test_a_copy_without_credentials_never_replaces_one_that_has_them(spawn, tmp_path, runpod_api):
    """The bug this guards against: the boot copy (credentials in its environment) stopped by the copy
    lorapod starts over SSH, which found none, leaving nothing to delete the pod."""
    first = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="3600", LORAPOD_API_URL=runpod_api.url,
                         RUNPOD_POD_ID="pod-abc", RUNPOD_API_KEY=KEY)
    first.wait_for_line("watching")
    second = run_watchdog(spawn, tmp_path, LORAPOD_MAX_RUNTIME_S="3600", LORAPOD_API_URL=runpod_api.url)
    assert second.wait() == 0
    assert f"the running watchdog (pid {first.proc.pid}) has them: it stays in charge" in second.output()
    assert first.proc.poll() is None
    status = status_of(tmp_path, second)
    assert (status["state"], status["deferred_to"]) == ("deferred", first.proc.pid)


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


# --- a run detached on purpose (provider.detach=true) -------------------------------------------------------------

def test_a_detached_run_keeps_only_the_deadline(watchdog_module, tmp_path):
    """Nobody beats while a run is detached: its marker file makes the heartbeat not count, and the deadline still
    does. Once attach removes the marker, a stale heartbeat counts again."""
    beat, marker = tmp_path / "beat", tmp_path / "detached"
    beat.touch()
    os.utime(beat, (1000.0, 1000.0))
    cfg = config(watchdog_module, LORAPOD_HEARTBEAT_FILE=beat, LORAPOD_HEARTBEAT_TIMEOUT_S=60,
                 LORAPOD_MAX_RUNTIME_S=5000, LORAPOD_STARTED_AT=1000, LORAPOD_DETACHED_FILE=marker)
    assert cfg.detached() is False
    assert "heartbeat stale" in watchdog_module.reason_to_delete(cfg, 2000.0, 1000.0, cfg.detached())
    marker.touch()
    assert cfg.detached() is True
    assert watchdog_module.reason_to_delete(cfg, 2000.0, 1000.0, cfg.detached()) is None
    assert watchdog_module.reason_to_delete(cfg, 2000.0, None, cfg.detached()) is None  # no beat ever: still fine
    assert "deadline passed" in watchdog_module.reason_to_delete(cfg, 6000.0, 1000.0, cfg.detached())
    marker.unlink()
    assert "heartbeat stale" in watchdog_module.reason_to_delete(cfg, 2000.0, 1000.0, cfg.detached())


def test_a_detached_file_without_a_deadline_is_refused(watchdog_module, tmp_path):
    """A detached pod with no deadline would be watched by nothing at all."""
    with pytest.raises(watchdog_module.ConfigError, match="LORAPOD_DETACHED_FILE needs LORAPOD_MAX_RUNTIME_S"):
        config(watchdog_module, LORAPOD_HEARTBEAT_FILE=tmp_path / "beat", LORAPOD_HEARTBEAT_TIMEOUT_S=60,
               LORAPOD_DETACHED_FILE=tmp_path / "detached")

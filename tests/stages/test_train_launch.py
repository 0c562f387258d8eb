"""The launch command gives training its own environment: caches under one private root, unbuffered output,
the interpreter's folder first on PATH, and where each provider puts the cache root by default."""
from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import engine  # noqa: F401  (registers the config schemas)
from engine import secrets
from engine.context import PROJECT_ROOT, RunContext
from engine.pod_env import CACHE_VARS, check_config, training_env
from engine.providers.base import make_provider
from engine.state import RunState
from stages.train import launch_command
from tests.conftest import wait_for

# A fake interpreter that records the environment it was started with, in place of train_unsloth.py.
FAKE_PYTHON = """#!/bin/sh
exec env -0 > "$(dirname "$0")/../seen.env"
"""


def context(tmp_path: Path, *overrides: str, run_id: str = "launch") -> RunContext:
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    ctx = RunContext(cfg=cfg, run_dir=tmp_path / run_id, state=RunState(run_id=run_id))
    ctx.provider = make_provider(ctx)
    return ctx


def launched_env(tmp_path: Path, env: dict[str, str], cache: str | None) -> dict[str, str]:
    """Run the real launch command under bash with a fake interpreter in an odd folder; what it saw."""
    odd = tmp_path / "a b'c$d"
    (odd / "bin").mkdir(parents=True)
    python = odd / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    rdir = odd / "run"
    rdir.mkdir()
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # as fresh as an SSH session's
    proc = subprocess.run(["bash", "-c", launch_command(str(rdir), str(python), env, cache)], env=bare,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == "launched", proc.stdout + proc.stderr
    wait_for(lambda: (rdir / "exit_code").exists(), 30, "the fake training to end")
    pairs = (odd / "seen.env").read_text().split("\0")
    return dict(p.split("=", 1) for p in pairs if p) | {"_python_bin": str(odd / "bin")}


def test_the_launch_environment_reaches_the_training_process_quoted_whatever_the_paths(tmp_path):
    cache = tmp_path / "vol's cache $HOME"
    env = {"HF_HOME": f"{cache}/huggingface", "PYTHONUNBUFFERED": "1", "ODD": "x 'y' $z `w`"}
    seen = launched_env(tmp_path, env, str(cache))
    assert seen["HF_HOME"] == f"{cache}/huggingface" and seen["ODD"] == "x 'y' $z `w`"
    assert seen["PYTHONUNBUFFERED"] == "1"
    assert seen["PATH"].split(":") == [seen["_python_bin"], "/usr/bin", "/bin"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_a_cache_root_that_exists_is_made_private(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    cache.chmod(0o755)
    launched_env(tmp_path, {}, str(cache))
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_runpod_caches_on_the_volume_and_every_run_finds_the_same_caches(tmp_path, monkeypatch):
    monkeypatch.setattr(secrets, "SECRET_NAMES", list(secrets.SECRET_NAMES))  # the provider adds its key's name
    first = training_env(context(tmp_path, "gpu=rtx5090", run_id="one"))
    second = training_env(context(tmp_path, "gpu=rtx5090", run_id="two"))
    assert first == second
    assert {first[name] for name in CACHE_VARS} == {f"/workspace/.cache/{sub}" for sub in CACHE_VARS.values()}
    assert first["PYTHONUNBUFFERED"] == "1" and first["HF_XET_HIGH_PERFORMANCE"] == "1"
    moved = training_env(context(tmp_path, "gpu=rtx5090", "remote.workdir=/mnt/vol"))
    assert moved["HF_HOME"] == "/mnt/vol/.cache/huggingface"
    chosen = training_env(context(tmp_path, "gpu=rtx5090", "remote.cache_dir=/models"))
    assert chosen["UNSLOTH_COMPILE_LOCATION"] == "/models/unsloth_compiled_cache"


@pytest.mark.parametrize("provider", [["provider=local"], ["provider=ssh", "provider.host=box"]])
def test_your_own_machine_keeps_its_own_caches_unless_told(tmp_path, provider):
    env = training_env(context(tmp_path, *provider))
    assert not set(CACHE_VARS) & set(env), "the machine's own caches are left alone"
    assert env["PYTHONUNBUFFERED"] == "1"
    env = training_env(context(tmp_path, *provider, "remote.cache_dir=/srv/cache"))
    assert env["TRITON_CACHE_DIR"] == "/srv/cache/triton"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/srv/cache/torchinductor"


def test_remote_env_and_the_token_file_reach_the_launch(tmp_path):
    ctx = context(tmp_path, "+remote.env.HF_HUB_OFFLINE=1")
    assert training_env(ctx)["HF_HUB_OFFLINE"] == "1"
    assert "HF_TOKEN_PATH" not in training_env(ctx)
    ctx.state.outputs["hf_token"] = {"path": "/pod/run/secrets/hf_token", "removed": False}
    assert training_env(ctx)["HF_TOKEN_PATH"] == "/pod/run/secrets/hf_token"


def test_remote_settings_that_would_leak_or_clash_are_refused(tmp_path):
    ctx = context(tmp_path, "remote.cache_dir=cache", "+remote.env.HF_TOKEN=x", "+remote.env.RUNPOD_API_KEY=x",
                  "+remote.env.HF_HOME=/x", "+remote.env.PATH=/x", "+remote.env.BAD-NAME=x",
                  "+remote.env.HF_HUB_OFFLINE=1")
    problems = dict(check_config(ctx.cfg))
    assert set(problems) == {"remote.cache_dir", "remote.env.HF_TOKEN", "remote.env.RUNPOD_API_KEY",
                             "remote.env.HF_HOME", "remote.env.PATH", "remote.env.BAD-NAME"}
    assert "secret" in problems["remote.env.HF_TOKEN"] and "absolute" in problems["remote.cache_dir"]
    assert json.dumps(problems).count("lorapod itself") == 2


@pytest.mark.parametrize("name", ["WANDB_API_KEY", "wandb_api_key", "OPENAI_APIKEY", "API_KEY", "GITHUB_TOKEN",
                                  "AWS_SECRET_ACCESS_KEY", "MY_SECRET", "DB_PASSWORD", "Db_Password", "MYSQL_PASSWD",
                                  "SMTP_PASS", "GOOGLE_APPLICATION_CREDENTIALS", "TOKEN", "KEY", "PRIVATE_KEY_PEM"])
def test_a_remote_env_name_that_looks_like_a_secret_is_refused(tmp_path, name):
    problems = dict(check_config(context(tmp_path, f"+remote.env.{name}=x").cfg))
    rule = problems[f"remote.env.{name}"]
    assert "looks like a secret" in rule and "`ps`" in rule and ".hydra/" in rule
    assert "export it" in rule and ".env" in rule and "only HF_TOKEN" in rule and "private file" in rule


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE", "MONKEY_PATCH", "KEYBOARD_LAYOUT",
                                  "WANDB_MODE", "PASSTHROUGH", "HF_HUB_DISABLE_TELEMETRY"])
def test_a_remote_env_name_with_a_secret_word_inside_another_word_is_allowed(tmp_path, name):
    assert check_config(context(tmp_path, f"+remote.env.{name}=1").cfg) == []

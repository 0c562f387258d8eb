"""engine/pod_secrets.py: HF_TOKEN on the pod in a private file, and gone again whatever happens."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from loguru import logger
from omegaconf import OmegaConf

import engine  # noqa: F401  (registers the config schemas)
from engine import secrets
from engine.context import PROJECT_ROOT, RunContext
from engine.deadline import POD_STATE_DIR
from engine.errors import TransportError
from engine.pod_secrets import place_token, remove_token, secrets_dir
from engine.providers.base import make_provider
from engine.state import RunState
from engine.transport.local import LocalTransport
from tests.conftest import fake_hf_token


def context(tmp_path: Path, transport, provider_secrets_dir: str | None = None) -> RunContext:
    cfg = OmegaConf.create({"remote": {"workdir": str(tmp_path / "pod"), "python": None, "script": None,
                                       "cache_dir": None, "env": {}}})
    ctx = RunContext(cfg=cfg, run_dir=tmp_path / "run", state=RunState(run_id="secret"), transport=transport,
                     provider=SimpleNamespace(default_workdir=None, secrets_dir=provider_secrets_dir))
    ctx.run_dir.mkdir()
    return ctx


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_token_lands_in_a_600_file_in_a_700_folder_and_in_no_run_file(tmp_path, monkeypatch):
    token = fake_hf_token("placed")
    monkeypatch.setenv("HF_TOKEN", token)
    ctx = context(tmp_path, LocalTransport())
    before = os.umask(0)  # no help from a strict umask
    try:
        path = Path(place_token(ctx))
    finally:
        os.umask(before)
    assert path.read_text() == token
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert path.parent == Path(ctx.remote_dir) / "secrets"
    assert token not in (ctx.run_dir / "state.json").read_text()
    assert len(ctx.closers) == 1

    remove_token(ctx)
    assert not path.parent.exists()
    assert ctx.state.outputs["hf_token"]["removed"] is True
    ctx.closers.pop()()  # the end-of-run closer finds nothing left to do


def test_without_a_token_nothing_is_placed(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    ctx = context(tmp_path, LocalTransport())
    assert place_token(ctx) is None
    assert not ctx.closers and "hf_token" not in ctx.state.outputs


def test_a_stale_secrets_folder_is_replaced_not_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", fake_hf_token("fresh"))
    ctx = context(tmp_path, LocalTransport())
    stale = Path(ctx.remote_dir) / "secrets"
    stale.mkdir(parents=True, mode=0o777)
    (stale / "planted").write_text("someone else's")
    place_token(ctx)
    assert mode(stale) == 0o700 and not (stale / "planted").exists()


class DeadTransport(LocalTransport):
    def exec(self, command, on_line=None, timeout=None):
        raise TransportError("connection to the pod lost")


def test_a_removal_that_fails_never_raises_and_says_what_is_left(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", fake_hf_token("stuck"))
    ctx = context(tmp_path, LocalTransport())
    path = place_token(ctx)
    ctx.transport = DeadTransport()
    said: list[str] = []
    sink = logger.add(lambda m: said.append(str(m)), level="WARNING")
    try:
        remove_token(ctx)  # at fetch: fetch goes on
        ctx.closers.pop()()  # at the end: the pod must still be deleted after this
    finally:
        logger.remove(sink)
    assert ctx.state.outputs["hf_token"]["removed"] is False
    assert "trying again when the run ends" in said[0]
    assert path in said[1] and "delete it yourself" in said[1]


@pytest.mark.parametrize("overrides, where", [(["gpu=rtx5090"], "pod's /run"),
                                              (["provider=ssh", "provider.host=box"], "run folder"),
                                              (["provider=local"], "run folder")])
def test_runpod_keeps_the_token_off_the_volume_in_the_containers_own_run(tmp_path, monkeypatch, overrides, where):
    monkeypatch.setattr(secrets, "SECRET_NAMES", list(secrets.SECRET_NAMES))  # the provider adds its key's name
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "remote.workdir=/workspace"])
    ctx = RunContext(cfg=cfg, run_dir=tmp_path / "run", state=RunState(run_id="where"))
    ctx.provider = make_provider(ctx)
    folder = secrets_dir(ctx)
    if where == "pod's /run":  # /workspace may be a network volume, which outlives a pod its watchdog deleted
        assert folder == f"{POD_STATE_DIR}/secrets" == "/run/lorapod/secrets"
        assert not folder.startswith("/workspace")
    else:  # a machine of your own: the run's folder, as before
        assert folder == f"{ctx.remote_dir}/secrets" == "/workspace/lorapod-where/secrets"


def test_a_provider_secrets_dir_takes_the_token_and_only_its_own_folder_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", fake_hf_token("runfolder"))
    state_dir = tmp_path / "run-lorapod"  # plays /run/lorapod: the watchdog's files live beside the secrets
    ctx = context(tmp_path, LocalTransport(), provider_secrets_dir=str(state_dir / "secrets"))
    state_dir.mkdir(mode=0o700)
    (state_dir / "credentials").write_text("the watchdog's")
    path = Path(place_token(ctx))
    assert path == state_dir / "secrets" / "hf_token" and mode(path) == 0o600 and mode(path.parent) == 0o700
    assert not (Path(ctx.remote_dir) / "secrets").exists(), "nothing of the token under the workdir"
    remove_token(ctx)
    assert not path.parent.exists()
    assert (state_dir / "credentials").read_text() == "the watchdog's", "only the secrets folder goes"

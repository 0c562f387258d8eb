"""engine/pod_secrets.py: HF_TOKEN on the pod in a private file, and gone again whatever happens."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

from loguru import logger
from omegaconf import OmegaConf

from engine.context import RunContext
from engine.errors import TransportError
from engine.pod_secrets import place_token, remove_token
from engine.state import RunState
from engine.transport.local import LocalTransport
from tests.conftest import fake_hf_token


def context(tmp_path: Path, transport) -> RunContext:
    cfg = OmegaConf.create({"remote": {"workdir": str(tmp_path / "pod"), "python": None, "script": None,
                                       "cache_dir": None, "env": {}}})
    ctx = RunContext(cfg=cfg, run_dir=tmp_path / "run", state=RunState(run_id="secret"), transport=transport,
                     provider=SimpleNamespace(default_workdir=None))
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

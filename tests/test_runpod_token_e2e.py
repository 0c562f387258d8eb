"""On RunPod the HF token lives in the container's own /run, never on /workspace (a network volume outlives the
pod), end to end against the emulator: a real pod container with its private /run, real SSH, real training."""
from __future__ import annotations

import json

import pytest

from tests.conftest import fake_hf_token, run_lorapod
from tests.test_runpod_e2e import LORAPOD, assert_nothing_billing_and_data_kept, canonical, env_for


@pytest.mark.parametrize("image", [(), LORAPOD], ids=["runpod", "lorapod"])
def test_the_token_is_in_the_pods_run_not_on_the_volume_and_gone_after(runpod_emulator, tmp_path, run_dir, image):
    emu, workdir, token = runpod_emulator, tmp_path / "volume", fake_hf_token("volume")
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3", *image), run_dir=run_dir,
                      env=env_for(emu, HF_TOKEN=token))
    assert run.proc.returncode == 0, run.output
    env = json.loads((run_dir / "result.json").read_text())["env"]
    assert env["HF_TOKEN_PATH"] == "/run/lorapod/secrets/hf_token"
    assert env["hf_token_file"] == {"readable": True, "mode": "0o600", "folder_mode": "0o700"}
    assert env["hf_token_in_environment"] is False
    assert json.loads((run_dir / "state.json").read_text())["outputs"]["hf_token"]["removed"] is True
    # The folder that plays the volume (/workspace) never held the token, in any file.
    assert not list(workdir.rglob("secrets"))
    for path in workdir.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="ignore"), path
    assert token not in run.output
    assert_nothing_billing_and_data_kept(emu, run)

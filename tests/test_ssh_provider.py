"""provider=ssh against a plain sshd: the same probe, upload, train and fetch, and nothing rented or deleted."""
from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

from engine.pod_env import CACHE_VARS
from engine.sshkeys import run_keypair
from tests.conftest import PYTHON, fake_hf_token, lorapod_env, run_lorapod
from tests.remote_image.test_train_unsloth import load_script


def ssh_args(sshd, tmp_path, key=None, known_hosts=None) -> list[str]:
    known = known_hosts or tmp_path / "empty_known_hosts"
    known.touch()
    return ["provider=ssh", f"provider.host={sshd.host}", f"provider.port={sshd.port}", f"provider.user={sshd.user}",
            f"provider.key_path={key or sshd.key}", f"provider.known_hosts={known}",
            f"remote.workdir={tmp_path / 'box'}", f"remote.python={PYTHON}", "train.max_steps=3"]


def test_trains_on_a_machine_you_already_have(plain_sshd, tmp_path, run_dir):
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path), run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    assert run.summary["status"] == "succeeded"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 3
    assert "nothing to rent" in run.output
    assert plain_sshd.machine.up, "terminate leaves your machine alone"
    pinned = (run_dir / "ssh" / "known_hosts").read_text()
    assert f"[127.0.0.1]:{plain_sshd.port}" in pinned, "pinned at first contact"


def test_a_key_the_machine_does_not_accept_is_named(plain_sshd, tmp_path, run_dir):
    wrong, _ = run_keypair(tmp_path / "wrong-key", "not-authorized")
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path, key=wrong), run_dir=run_dir)
    assert run.proc.returncode == 1
    assert run.summary["failed_stage"] == "probe"
    assert f"refused the SSH key {wrong}" in run.output
    assert (run_dir / "dataset" / "train.jsonl").is_file()


def test_a_host_key_that_changed_is_refused(plain_sshd, tmp_path, run_dir):
    _, impostor = run_keypair(tmp_path / "impostor", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{plain_sshd.port} {' '.join(impostor.split()[:2])}\n")
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path, known_hosts=known), run_dir=run_dir)
    assert run.proc.returncode == 1
    assert "host key for" in run.output and "changed since first contact" in run.output
    assert not (tmp_path / "box").exists(), "nothing was sent to the impostor"


def put_in_hub_cache(hub: Path, repo_id: str) -> Path:
    """What a first run's download leaves in <HF_HOME>/hub: a snapshot folder and refs/main naming it. The
    model is the tiny random one, built here: nothing comes from the hub."""
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    texts = ["What did you plant in the rain garden?", "Sedges and rushes, near the water."] * 20
    spec = {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 1024}
    load_script().build_tiny_base(spec, texts, seed=1, target=repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return repo


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_second_run_on_the_same_volume_finds_the_model_there_and_the_token_never_lingers(plain_sshd, tmp_path,
                                                                                           run_dir):
    cache = tmp_path / "volume" / ".cache"
    repo = put_in_hub_cache(cache / "huggingface" / "hub", "lorapod-tests/tiny-cached")
    before = listing(repo)
    token = fake_hf_token("sshrun")
    # The hub is unreachable from here; HF_HUB_OFFLINE=1 reaches training only through remote.env (an SSH
    # session gets none of this process's environment), so a lookup that misses the cache fails at once.
    run = run_lorapod(*ssh_args(plain_sshd, tmp_path), f"remote.cache_dir={cache}", "model.source=hub",
                      "model.id=lorapod-tests/tiny-cached", "+remote.env.HF_HUB_OFFLINE=1", run_dir=run_dir,
                      env=lorapod_env(HF_TOKEN=token))
    assert run.proc.returncode == 0, run.output
    result = json.loads((run_dir / "result.json").read_text())
    assert result["model"] == "lorapod-tests/tiny-cached" and result["steps"] == 3
    adapter = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "lorapod-tests/tiny-cached"
    assert listing(repo) == before, "nothing was downloaded into, or rewritten in, the cached model"

    env = result["env"]
    assert {name: env[name] for name in CACHE_VARS} == {name: str(cache / sub) for name, sub in CACHE_VARS.items()}
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert env["HF_HUB_OFFLINE"] == "1" and env["PYTHONUNBUFFERED"] == "1" and env["HF_XET_HIGH_PERFORMANCE"] == "1"
    assert env["PATH_first"] == str(Path(PYTHON).parent), "the interpreter's own bin folder comes first"

    assert env["hf_token_file"] == {"readable": True, "mode": "0o600", "folder_mode": "0o700"}
    assert env["hf_token_in_environment"] is False
    assert not Path(env["HF_TOKEN_PATH"]).parent.exists(), "fetch deleted the token's folder"
    assert json.loads((run_dir / "state.json").read_text())["outputs"]["hf_token"]["removed"] is True
    assert token not in run.output
    for folder in (run_dir, tmp_path / "box"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert token not in path.read_text(errors="ignore"), path

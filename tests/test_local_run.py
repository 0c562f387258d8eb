"""A whole run on this machine, as `python run.py` does it, and the engine's promises around it."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from engine.pod_env import CACHE_VARS
from stages.train import EVENT_PREFIX
from tests.conftest import DEFAULT_RUN_KEY, PYTHON, REPO, Background, fake_hf_token, lorapod_env, run_lorapod, wait_for


def test_default_run_succeeds_and_lands_everything(default_run):
    run = default_run
    assert run.proc.returncode == 0, run.output
    summary = run.summary
    assert summary["status"] == "succeeded"
    assert all(s["status"] == "succeeded" for s in summary["stages"].values()), summary["stages"]
    assert all(s["seconds"] is not None for s in summary["stages"].values())
    for name in ("dataset/train.jsonl", "dataset/eval.jsonl", "dataset/manifest.json", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "metrics.jsonl", "result.json", "train.log", "run.log",
                 "state.json", ".hydra/config.yaml"):
        assert (run.run_dir / name).is_file(), name
    assert summary["paths"]["adapter"] == str(run.run_dir / "adapter")
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["steps"] > 0 and result["eval_loss_after"] is not None
    assert summary["metrics"]["train_loss"] == result["train_loss"]
    state = run.state
    assert state["pod"]["terminated"] is True
    assert {"ready", "train_launched", "train_exited", "pod_terminated"} <= set(state["marks"])


def test_progress_events_reach_the_console(default_run):
    assert "eval loss before training" in default_run.output
    assert f"train {default_run.summary['metrics']['steps']}/" in default_run.output


def test_adapter_loads_onto_the_same_base_and_changes_its_logits(default_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = default_run.run_dir
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    base = AutoModelForCausalLM.from_pretrained(run_dir / "base_model")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "How did the rain garden go?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        before = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, run_dir / "adapter")
        after = tuned(ids).logits
    assert before.shape == after.shape
    assert (after - before).abs().max().item() > 1e-4


def test_fetched_files_match_the_hashes_the_pod_reported(default_run):
    from engine.hashing import sha256_file

    result = json.loads((default_run.run_dir / "result.json").read_text())
    assert result["files"], "result.json lists the outputs"
    for rel, digest in result["files"].items():
        assert sha256_file(default_run.run_dir / rel) == digest, rel
    assert not list(default_run.run_dir.glob("checkpoint*")), "checkpoints are never fetched"


def test_the_api_key_is_in_no_file_of_the_run(default_run):
    for path in default_run.run_dir.rglob("*"):
        if path.is_file():
            assert DEFAULT_RUN_KEY not in path.read_text(errors="ignore"), path
    assert DEFAULT_RUN_KEY not in default_run.output


def test_a_stage_from_outside_the_project_added_on_the_command_line(run_dir):
    run = run_lorapod("+pipeline.stages.notify._target_=tests.fixtures.stages.Notify",
                      "+pipeline.stages.notify.message=hello", "train.max_steps=2", run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    seen = json.loads((run_dir / "notify.json").read_text())
    assert seen["message"] == "hello"
    assert seen["stages_before"]["terminate"] == "succeeded"
    assert run.stage_status("notify") == "succeeded"


@pytest.mark.parametrize("stage_class", ["Boom", "Crash"])
def test_a_failing_stage_fails_the_run_and_terminate_still_runs(run_dir, stage_class):
    run = run_lorapod(f"pipeline.stages.train._target_=tests.fixtures.stages.{stage_class}", run_dir=run_dir)
    assert run.proc.returncode == 1, run.output
    summary = run.summary
    assert summary["status"] == "failed" and summary["failed_stage"] == "train"
    assert ("boom" if stage_class == "Boom" else "ZeroDivisionError") in summary["error"]
    assert run.stage_status("fetch") == "skipped"
    assert run.stage_status("terminate") == "succeeded"
    assert run.state["pod"]["terminated"] is True
    assert (run_dir / "dataset" / "train.jsonl").is_file()


def test_the_pod_is_terminated_even_when_the_pipeline_drops_terminate(run_dir):
    run = run_lorapod("~pipeline.stages.terminate", "train.max_steps=2", run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    assert run.state["pod"]["terminated"] is True
    assert "still up after the pipeline ended" in run.output


def test_an_empty_memory_folder_stops_before_deploy(run_dir, tmp_path):
    empty = tmp_path / "memories"
    empty.mkdir()
    run = run_lorapod("dataset=metahuman", f"dataset.path={empty}", "dataset.persona.name=Sam", run_dir=run_dir)
    assert run.proc.returncode == 2, run.output
    assert run.summary["failed_stage"] == "prepare"
    assert run.stage_status("deploy") == "skipped"
    assert run.state["pod"] is None
    assert str(empty) in run.output


def test_a_sweep_runs_each_job_in_its_own_folder(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [PYTHON, str(REPO / "run.py"), "-m", "lora.r=4,8", "train.max_steps=3", f"hydra.sweep.dir={sweep}",
           f"registry.path={tmp_path / 'adapters'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=lorapod_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = []
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "run-summary.json").read_text())
        assert summary["status"] == "succeeded"
        ranks.append(json.loads((sweep / job / "adapter" / "adapter_config.json").read_text())["r"])
    assert ranks == [4, 8]
    # both jobs registered into the one registry they share, one after the other under its lock
    records = sorted(p.stem for p in (tmp_path / "adapters").glob("*.json"))
    assert records == sorted(json.loads((sweep / job / "run-summary.json").read_text())["run_id"] for job in ("0", "1"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_training_stops_the_pod_and_keeps_the_run_dir(run_dir, sig):
    with Background("train.max_steps=100000", "train.logging_steps=10", run_dir=run_dir) as bg:
        bg.wait_for_training()
        pid = int(next(run_dir.glob("pod/*/train.pid")).read_text())
        assert _alive(pid)
        bg.proc.send_signal(sig)
        if sig == signal.SIGINT:
            time.sleep(0.3)
            bg.proc.send_signal(sig)  # a second Ctrl-C during cleanup must not stop the cleanup
        run = bg.finish(timeout=120)
    assert run.proc.returncode == 130, run.output
    assert run.summary["status"] == "interrupted" and run.summary["failed_stage"] == "train"
    assert run.stage_status("terminate") == "succeeded"
    wait_for(lambda: not _alive(pid), 10, "the training process to stop")
    for kept in ("dataset/train.jsonl", "run.log", "train.log", "state.json"):
        assert (run_dir / kept).is_file(), kept


def test_a_training_process_killed_on_the_pod_fails_the_run_clearly(run_dir):
    with Background("train.max_steps=100000", "train.logging_steps=10", run_dir=run_dir) as bg:
        bg.wait_for_training()
        os.killpg(int(next(run_dir.glob("pod/*/train.pid")).read_text()), signal.SIGKILL)  # the OOM killer, say
        run = bg.finish(timeout=120)
    assert run.proc.returncode == 1, run.output
    assert run.summary["failed_stage"] == "train" and "vanished without an exit code" in run.summary["error"]
    assert run.stage_status("terminate") == "succeeded"
    assert (run_dir / "dataset" / "train.jsonl").is_file()


def _group(pgid: int) -> list[int]:
    """The processes of a process group: the detached job's shell and the training under it."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:
            found.append(int(stat_file.parent.name))
    return found


def test_training_sees_its_caches_and_the_hf_token_only_as_a_private_file(run_dir, tmp_path):
    token, cache = fake_hf_token("localrun"), tmp_path / "cache"
    with Background("train.max_steps=100000", "train.logging_steps=10", f"remote.cache_dir={cache}",
                    run_dir=run_dir, env=lorapod_env(HF_TOKEN=token)) as bg:
        bg.wait_for_training()
        pgid = int(next(run_dir.glob("pod/*/train.pid")).read_text())
        try:
            secret = _check_the_training_process(run_dir, pgid, token, cache)
        except BaseException:
            os.killpg(pgid, signal.SIGKILL)  # a failed check must not leave 100000 steps running
            raise
        bg.proc.send_signal(signal.SIGTERM)  # no fetch: the end of the run must delete it
        run = bg.finish(timeout=120)
    assert run.proc.returncode == 130, run.output
    assert not secret.parent.exists(), "the token's folder is deleted when the run ends"
    assert token not in run.output
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="ignore"), path


def _check_the_training_process(run_dir: Path, pgid: int, token: str, cache: Path) -> Path:
    env = next(json.loads(line.removeprefix(EVENT_PREFIX)) for line in (run_dir / "train.log").open()
               if line.startswith(EVENT_PREFIX) and '"event": "env"' in line)
    assert {name: env[name] for name in CACHE_VARS} == {name: str(cache / sub) for name, sub in CACHE_VARS.items()}
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert env["PYTHONUNBUFFERED"] == "1" and env["PATH_first"] == str(Path(PYTHON).parent)

    secret = Path(env["HF_TOKEN_PATH"])
    assert env["hf_token_file"] == {"readable": True, "mode": "0o600", "folder_mode": "0o700"}
    assert env["hf_token_in_environment"] is False
    assert secret.read_text() == token
    seen = {pid: (Path(f"/proc/{pid}/cmdline").read_bytes(), Path(f"/proc/{pid}/environ").read_bytes())
            for pid in _group(pgid)}
    training = [environ for cmdline, environ in seen.values() if cmdline.split(b"\0")[1:2] == [b"train_unsloth.py"]]
    assert len(training) == 1 and b"HF_TOKEN_PATH=" + str(secret).encode() in training[0]
    for pid, (cmdline, environ) in seen.items():
        assert token.encode() not in cmdline + environ, f"the token is visible in /proc/{pid}"
    return secret

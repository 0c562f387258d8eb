"""gpu.count > 1: training runs data-parallel under torchrun. Here, without a GPU, gpu=cpu with gpu.count=2 is two
real CPU processes joined by gloo, through the whole pipeline as `python run.py gpu.count=2` runs it."""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import yaml

from stages.train import EVENT_PREFIX
from tests.conftest import Background, run_lorapod, wait_for
from tests.remote_image.test_train_unsloth import interpreter, load_script


def events(train_log: Path) -> list[str]:
    return [json.loads(line[len(EVENT_PREFIX):])["event"] for line in train_log.read_text().splitlines()
            if line.startswith(EVENT_PREFIX)]


@pytest.mark.parametrize("which", ["venv", "pod"])
def test_two_processes_train_one_adapter_and_rank_0_alone_reports(tmp_path, which):
    run_dir = tmp_path / "run"
    run = run_lorapod("gpu.count=2", f"remote.python={interpreter(which)}", run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    assert "2 data-parallel processes (torchrun)" in run.output
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "succeeded" and result["world_size"] == 2
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    # Each rank trained on its half: the steps are those of a batch twice as large (DistributedSampler pads the
    # shorter shard to the longer one's length).
    train = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["train"]
    per_rank = math.ceil(result["train_examples"] / 2)
    assert result["steps"] == math.ceil(per_rank / train["batch_size"] / train["grad_accum"])
    # One log holds both ranks' output; only rank 0's events are in it, so the progress is counted once.
    seen = events(run_dir / "train.log")
    assert seen.count("env") == 1 and seen.count("start") == 1 and seen.count("done") == 1, seen
    assert seen.count("step") == len([r for r in (run_dir / "metrics.jsonl").read_text().splitlines()
                                      if '"loss"' in r and '"eval_loss"' not in r])


def _in_folder(folder: Path) -> list[int]:
    """Processes working in a folder: torchrun starts each rank in a session of its own, so the launch's
    process group does not name them; their working folder, the run's folder on the pod, does."""
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if Path(os.readlink(cwd)) == folder:
                found.append(int(cwd.parent.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def test_an_interrupt_stops_every_rank(tmp_path):
    run_dir = tmp_path / "run"
    with Background("gpu.count=2", "train.max_steps=100000", "train.logging_steps=10", run_dir=run_dir) as bg:
        bg.wait_for_training()
        folder = next(run_dir.glob("pod/*/train.pid")).parent.resolve()
        ranks = [pid for pid in _in_folder(folder) if b"train_unsloth.py" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(ranks) >= 3, ranks  # torchrun and its two ranks
        bg.proc.send_signal(signal.SIGTERM)
        run = bg.finish(timeout=120)
    assert run.proc.returncode == 130, run.output
    assert run.stage_status("terminate") == "succeeded"
    wait_for(lambda: not set(ranks) & set(_in_folder(folder)), 30, "every rank to stop")


def test_a_negative_gpu_count_is_refused_before_anything_runs(tmp_path):
    run = run_lorapod("gpu.count=-1", run_dir=tmp_path / "run")
    assert run.proc.returncode == 2, run.output
    assert "gpu.count" in run.output and "must be >= 0" in run.output
    assert not (tmp_path / "run" / "pod").exists()


class Recorder:
    def __init__(self):
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("rank", ["0", "1"])
def test_an_event_is_one_write_and_only_rank_0_writes_it(monkeypatch, rank):
    """All ranks share one train.log: an event written in pieces could be split by another rank's output (two
    ranks' step events, printed at the same moment, were seen joined on one line)."""
    script = load_script()
    recorder = Recorder()
    monkeypatch.setattr("sys.stdout", recorder)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    script.emit("step", step=1, loss=0.5)
    if rank == "0":
        assert len(recorder.writes) == 1 and recorder.writes[0].startswith(EVENT_PREFIX)
        assert recorder.writes[0].endswith("}\n") and json.loads(recorder.writes[0][len(EVENT_PREFIX):])["step"] == 1
    else:
        assert recorder.writes == []

"""remote_image/train_unsloth.py on its own, as it runs on a pod: both backends, for real, on CPU."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "remote_image" / "train_unsloth.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_unsloth", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_run_folder(root: Path, backend: str, n: int = 24) -> Path:
    (root / "dataset").mkdir(parents=True)
    rows = [{"id": f"ex{i}", "messages": [
        {"role": "system", "content": "You are Sam."},
        {"role": "user", "content": f"What did you plant in bed {i}?"},
        {"role": "assistant", "content": f"Sedges and rushes in bed {i}, near the water."}]} for i in range(n)]
    for name, part in (("train.jsonl", rows[: n - 4]), ("eval.jsonl", rows[n - 4:])):
        (root / "dataset" / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    config = {
        "model": {"name": "tiny", "source": "random", "id": None, "load_in_4bit": False,
                  "tiny": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "max_position_embeddings": 256}},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "use_rslora": False},
        "train": {"backend": backend, "epochs": 1, "max_steps": 4, "learning_rate": 1e-3, "batch_size": 4,
                  "grad_accum": 1, "max_seq_length": 128, "warmup_steps": 0, "seed": 1, "optim": "adamw_8bit",
                  "logging_steps": 1, "eval_fraction": 0.1},
        "data": {"train": "dataset/train.jsonl", "eval": "dataset/eval.jsonl"},
    }
    (root / "config.json").write_text(json.dumps(config))
    return root / "config.json"


@pytest.mark.parametrize("backend", ["unsloth", "transformers"])
def test_trains_and_reports_every_output_with_its_hash(tmp_path, backend):
    config = make_run_folder(tmp_path, backend)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(config)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["backend"] == backend and result["status"] == "succeeded" and result["steps"] == 4
    assert 0 < result["answer_token_fraction"] < 1, "loss covers the answers and only them"
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "metrics.jsonl"} <= set(result["files"])
    for rel, digest in result["files"].items():
        assert hashlib.sha256((tmp_path / "out" / rel).read_bytes()).hexdigest() == digest, rel
    events = [json.loads(line.removeprefix("@@lorapod ")) for line in proc.stdout.splitlines()
              if line.startswith("@@lorapod ")]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4] and all(e["total"] == 4 for e in steps)
    assert events[-1]["event"] == "done"
    if backend == "unsloth":
        assert result["versions"].get("unsloth"), "the Unsloth path must really run in CI"


def test_loss_mask_covers_exactly_the_final_answer(tmp_path):
    from transformers import AutoTokenizer

    script = load_script()
    texts = ["You are Sam.", "Hello there", "General Kenobi, the final answer."]
    script.build_tiny_base({"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "max_position_embeddings": 128}, texts, 0, tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base")
    row = {"id": "a", "messages": [{"role": "system", "content": texts[0]}, {"role": "user", "content": texts[1]},
                                   {"role": "assistant", "content": "An earlier answer."},
                                   {"role": "user", "content": "And now?"},
                                   {"role": "assistant", "content": texts[2]}]}
    [tok] = script.tokenize_rows(tokenizer, [row], max_length=512)
    answer = [t for t, m in zip(tok["input_ids"], tok["completion_mask"]) if m]
    assert tokenizer.decode(answer).startswith(texts[2])
    assert "An earlier answer" not in tokenizer.decode(answer)
    assert len(tok["input_ids"]) == len(tok["completion_mask"])


def test_a_long_prompt_is_cut_from_the_left_never_the_answer(tmp_path):
    from transformers import AutoTokenizer

    script = load_script()
    script.build_tiny_base({"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "max_position_embeddings": 128}, ["word " * 50], 0, tmp_path / "b")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "b")
    row = {"id": "a", "messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]}
    [tok] = script.tokenize_rows(tokenizer, [row], max_length=64)
    assert len(tok["input_ids"]) <= 64 and tok["completion_mask"][-1] == 1 and sum(tok["completion_mask"]) >= 1


def test_a_bad_dataset_row_names_the_file_and_line(tmp_path):
    config = make_run_folder(tmp_path, "transformers")
    with open(tmp_path / "dataset" / "train.jsonl", "a") as fh:
        fh.write('{"id": "x", "messages": [{"role": "user", "content": "no answer"}]}\n')
    proc = subprocess.run([sys.executable, str(SCRIPT), str(config)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "train.jsonl:21" in proc.stderr and "assistant" in proc.stderr


def test_event_prefix_is_the_one_the_train_stage_reads():
    from stages.train import EVENT_PREFIX

    assert load_script().EVENT_PREFIX == EVENT_PREFIX

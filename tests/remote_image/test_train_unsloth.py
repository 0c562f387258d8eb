"""remote_image/train_unsloth.py on its own, as it runs on a pod: both backends, for real, on CPU."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.conftest import REPO
from tests.remote_image.test_requirements import pins

SCRIPT = REPO / "remote_image" / "train_unsloth.py"
# The packages whose versions result.json must show as requirements.txt's when training under the pod's closure.
POD_PINNED = ("torch", "torchao", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth", "unsloth-zoo")


def pod_python() -> str:
    """The pod's interpreter (LORAPOD_POD_PYTHON, made by .ci/pod_closure.sh): a skip without it, a failure in CI."""
    path = os.environ.get("LORAPOD_POD_PYTHON")
    if not path:
        message = ("LORAPOD_POD_PYTHON is unset: run .ci/pod_closure.sh, then set "
                   "LORAPOD_POD_PYTHON=$PWD/.venv-pod/bin/python to train under the pod's closure")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    assert Path(path).is_file(), f"LORAPOD_POD_PYTHON={path} does not exist: run .ci/pod_closure.sh"
    return path


def interpreter(which: str) -> str:
    return sys.executable if which == "venv" else pod_python()


def load_script():
    spec = importlib.util.spec_from_file_location("train_unsloth", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_run_folder(root: Path, backend: str, n: int = 24) -> Path:
    (root / "dataset").mkdir(parents=True)
    # Every third row is a conversation of two exchanges: check_masking must pass with a mask in two runs.
    rows = [{"id": f"ex{i}", "messages": [
        {"role": "system", "content": "You are Sam."},
        *([{"role": "user", "content": "Any news?"}, {"role": "assistant", "content": "Frost came early."}]
          if i % 3 == 0 else []),
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


@pytest.mark.parametrize("python", ["venv", "pod"])
@pytest.mark.parametrize("backend", ["unsloth", "transformers"])
def test_trains_and_reports_every_output_with_its_hash(tmp_path, backend, python):
    executable = interpreter(python)
    config = make_run_folder(tmp_path, backend)
    proc = subprocess.run([executable, str(SCRIPT), str(config)], capture_output=True, text=True, timeout=600)
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
    # Tokens/s counts what was trained (no padding); MFU needs a GPU's peak, so none on CPU.
    assert all(e["tokens_per_s"] > 0 and e["mfu"] is None for e in steps)
    throughput = result["throughput"]
    assert throughput["gpu"] is None and throughput["mfu"] is None and throughput["tokens_per_s"] > 0
    # 4 steps of 4 rows out of 20, shuffled: between the 16 shortest rows and the 16 longest.
    from transformers import AutoTokenizer

    rows = [json.loads(line) for line in (tmp_path / "dataset" / "train.jsonl").open()]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "base_model")
    lengths = sorted(len(r["input_ids"]) for r in load_script().tokenize_rows(tokenizer, rows, 128))
    assert sum(lengths[:16]) <= throughput["trained_tokens"] <= sum(lengths[-16:])
    assert events[-1]["tokens_per_s"] == throughput["tokens_per_s"]
    if backend == "unsloth":
        assert result["versions"].get("unsloth"), "the Unsloth path must really run in CI"
    if python == "pod":
        locked = pins(REPO / "remote_image" / "requirements.txt")
        pod_minor = re.search(r"python(3\.\d+)-venv", (REPO / "remote_image" / "Dockerfile").read_text()).group(1)
        recorded = {canonicalize_name(name): v for name, v in result["versions"].items() if name != "python"}
        assert {"python": result["versions"]["python"].rsplit(".", 1)[0], **recorded} == \
            {"python": pod_minor, **{name: locked[name] for name in POD_PINNED}}


def test_torchao_loads_its_cpp_extensions_under_the_pod_closure():
    """torchao skips its C++ extensions when its torch is not the one it was built for (0.18 with torch 2.10 did),
    and unsloth_zoo hides that warning: ask torchao's own flag, torch for the libraries it loaded, and torchao's
    logger for any warning (a .so that failed to load)."""
    probe = (
        "import json, logging, pathlib\n"
        "warned = []\n"
        "class Keep(logging.Handler):\n"
        "    def emit(self, record): warned.append(f'{record.name}: {record.getMessage()}')\n"
        "logging.getLogger('torchao').addHandler(Keep(logging.WARNING))\n"
        "import torch, torchao\n"
        "shipped = sorted(str(p) for p in pathlib.Path(torchao.__file__).parent.glob('_C*.so'))\n"
        "print(json.dumps({'skipped': torchao.skip_loading_so_files, 'warned': warned, 'shipped': shipped,\n"
        "                  'loaded': sorted(set(shipped) & set(torch.ops.loaded_libraries))}))\n"
    )
    proc = subprocess.run([pod_python(), "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["skipped"] is False and report["warned"] == [], report
    assert report["shipped"] and report["loaded"] == report["shipped"], report


def tiny_tokenizer(tmp_path, texts: list[str]):
    from transformers import AutoTokenizer

    load_script().build_tiny_base({"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
                                   "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 128},
                                  texts, 0, tmp_path / "base")
    return AutoTokenizer.from_pretrained(tmp_path / "base")


def trained_runs(tokenizer, tok: dict) -> list[str]:
    runs, last = [], 0
    for token, mask in zip(tok["input_ids"], tok["completion_mask"]):
        if mask and last:
            runs[-1].append(token)
        elif mask:
            runs.append([token])
        last = mask
    return [tokenizer.decode(run) for run in runs]


def test_loss_mask_covers_exactly_every_answer(tmp_path):
    texts = ["You are Sam.", "Hello there", "An earlier answer.", "And then?", "A middle answer.", "And now?",
             "General Kenobi, the final answer."]
    tokenizer = tiny_tokenizer(tmp_path, texts)
    messages = [{"role": role, "content": text} for role, text in
                zip(["system"] + ["user", "assistant"] * 3, texts)]
    [tok] = load_script().tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=512)
    assert len(tok["input_ids"]) == len(tok["completion_mask"])
    assert trained_runs(tokenizer, tok) == [texts[2] + "<|im_end|>", texts[4] + "<|im_end|>",
                                            texts[6] + "<|im_end|>"]
    context = tokenizer.decode([t for t, m in zip(tok["input_ids"], tok["completion_mask"]) if not m])
    assert context == ("<|im_start|>system\nYou are Sam.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n"
                       "<|im_start|>assistant\n\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n"
                       "\n<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\n")


def test_a_single_answer_row_trains_its_answer_after_the_generation_prompt(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path, ["You are Sam.", "Hello there", "General Kenobi."])
    messages = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "General Kenobi."}]
    [tok] = load_script().tokenize_rows(tokenizer, [{"id": "a", "messages": messages}], max_length=512)
    prompt = tokenizer("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n",
                       add_special_tokens=False)["input_ids"]
    answer = tokenizer("General Kenobi.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok == {"input_ids": prompt + answer, "completion_mask": [0] * len(prompt) + [1] * len(answer)}


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

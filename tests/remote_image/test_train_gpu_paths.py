"""train_unsloth.py's choices for a GPU, checked on CPU: what can be, for real; the GPU itself is a named fake.

Fakes here: `torch.cuda.is_available` answering True (no GPU exists on this machine), and an `unsloth` package
that fails to import the way a broken CUDA install makes it fail (the real one imports fine on CPU).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

from tests.remote_image.test_train_unsloth import SCRIPT, load_script, make_run_folder

BROKEN = "libcuda.so.1: cannot open shared object file (a fake unsloth that fails to import)"
# Runs the script as the pod does, but with torch reporting a GPU: the run must stop before touching it.
WITH_FAKE_GPU = ("import runpy, sys, torch\n"
                 "torch.cuda.is_available = lambda: True\n"
                 "sys.argv = sys.argv[1:]\n"
                 "runpy.run_path(sys.argv[0], run_name='__main__')\n")


@pytest.fixture
def broken_unsloth(tmp_path):
    """A folder to put first on PYTHONPATH, holding an unsloth whose import raises."""
    fake = tmp_path / "fake_site" / "unsloth"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ImportError({BROKEN!r})\n")
    return fake.parent


def run_script(argv: list[str], pythonpath, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def test_auto_on_a_gpu_fails_the_run_with_the_import_error(tmp_path, broken_unsloth):
    config = make_run_folder(tmp_path / "run", "auto")
    proc = run_script([sys.executable, "-c", WITH_FAKE_GPU, str(SCRIPT), str(config)], broken_unsloth, tmp_path)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert BROKEN in proc.stderr and "train.backend=transformers" in proc.stderr, proc.stderr[-2000:]
    assert '"event": "start"' not in proc.stdout, "nothing trained"
    assert not (tmp_path / "run" / "out" / "result.json").exists()


def test_auto_on_cpu_still_trains_with_transformers(tmp_path, broken_unsloth):
    config = make_run_folder(tmp_path / "run", "auto")
    proc = run_script([sys.executable, str(SCRIPT), str(config)], broken_unsloth, tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "out" / "result.json").read_text())
    assert result["backend"] == "transformers" and result["status"] == "succeeded"
    assert "unsloth" in proc.stdout and BROKEN in proc.stdout, "the fallback says why"


def test_the_backend_choice(monkeypatch):
    script = load_script()
    monkeypatch.setitem(sys.modules, "unsloth", None)  # makes `import unsloth` raise ImportError
    assert script.choose_backend("auto", on_gpu=False) == "transformers"
    assert script.choose_backend("transformers", on_gpu=True) == "transformers", "an explicit choice still works"
    with pytest.raises(SystemExit) as failed:
        script.choose_backend("auto", on_gpu=True)
    assert "import of unsloth halted" in str(failed.value) and "train.backend=transformers" in str(failed.value)
    with pytest.raises(SystemExit) as failed:
        script.choose_backend("unsloth", on_gpu=False)
    assert "train.backend=unsloth" in str(failed.value)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SystemExit):
        script.choose_backend("auto")  # asks torch when not told


def tiny_base(script, tmp_path):
    spec = {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 128}
    return script.build_tiny_base(spec, ["You are Sam.", "Hello there", "An answer."], 0, tmp_path / "base")


@pytest.mark.parametrize("on_gpu", [True, False])
def test_the_transformers_path_checkpoints_on_a_gpu(tmp_path, on_gpu):
    """use_gpu=True on CPU: the fake GPU. The 4-bit branch (prepare_model_for_kbit_training) needs bitsandbytes on
    CUDA and is not reachable here."""
    import torch

    script = load_script()
    cfg = json.loads(make_run_folder(tmp_path / "run", "transformers").read_text())
    model, tokenizer = script.load_model("transformers", str(tiny_base(script, tmp_path)), cfg, use_gpu=on_gpu)
    base = model.get_base_model()
    assert base.is_gradient_checkpointing is on_gpu
    model.train()
    ids = torch.tensor([tokenizer("Hello there, an answer.")["input_ids"]])
    model(input_ids=ids, labels=ids).loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora_grads and all(g is not None for g in lora_grads), "every LoRA layer learns through the checkpoints"


def test_mfu_peaks_by_gpu_name():
    script = load_script()
    assert script.peak_flops("NVIDIA GeForce RTX 5090") == 210e12
    assert script.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert script.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert script.peak_flops("NVIDIA H100 PCIe") is None, "a lower-clocked part gets no MFU rather than a wrong one"
    assert script.peak_flops(None) is None and script.peak_flops("NVIDIA GeForce GTX 1080") is None


def test_throughput_counts_the_tokens_trained_and_names_its_formula(tmp_path):
    import torch

    script = load_script()
    seen = []
    trainer = types.SimpleNamespace(training_step=lambda model, inputs, n=None: seen.append(inputs) or 0.5)
    model = torch.nn.Linear(10, 10)  # 110 parameters
    packed = torch.nn.Parameter(torch.zeros(32), requires_grad=False)
    packed.quant_state = types.SimpleNamespace(shape=torch.Size([8, 8]))  # a fake 4-bit weight: 64 packed in 32
    model.register_parameter("packed", packed)
    meter = script.Throughput(trainer, model, "NVIDIA GeForce RTX 5090")
    assert meter.params == 110 + 64
    meter.start()
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])}
    assert trainer.training_step(model, batch, None) == 0.5 and seen == [batch], "the real step still runs"
    assert meter.tokens == 5, "padding is not trained"
    figures = meter.figures(tokens=4000, seconds=2.0)
    assert figures["tokens_per_s"] == 2000.0
    # 6 x N x tokens/s / peak: 1e11 tokens/s through 174 parameters is 1.044e14 FLOPS, half a 210 TFLOPS GPU.
    assert meter.figures(tokens=2e11, seconds=2.0)["mfu"] == round(6 * 174 * 1e11 / 210e12, 4) == 0.4971
    assert script.Throughput(trainer, model, None).figures(4000, 2.0)["mfu"] is None, "no MFU on CPU"
    window = meter.window()
    assert window["tokens_per_s"] > 0 and meter.window_tokens == 0

"""bench/bench_gpu.py: without a GPU it says so and exits 0, never importing torch; the runs it compares differ
only in train.backend, each with the config.json the upload stage would write."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.conftest import PYTHON, REPO, lorapod_env

BENCH = REPO / "bench" / "bench_gpu.py"
# torch made unimportable, then the script run as __main__: an `import torch` on the no-GPU path fails loudly.
NO_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = [sys.argv[1]] + sys.argv[2:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_exits_0_without_importing_torch():
    # CUDA_VISIBLE_DEVICES="" hides every GPU, as it does from torch: the same answer on a machine that has one.
    env = lorapod_env(CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([PYTHON, "-c", NO_TORCH, str(BENCH), "--steps", "5"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no GPU on this machine" in done.stdout and "Run it on a CUDA machine" in done.stdout
    assert "Traceback" not in done.stderr


def test_the_two_runs_are_the_upload_stages_config_differing_only_in_the_backend():
    bench = bench_module()
    args = bench.argparse.Namespace(model="unsloth/Qwen3-0.6B", model_dir=None, load_in_4bit=False, gpu="rtx5090",
                                    steps=7, set=["lora.r=8"])
    unsloth, transformers = (bench.pod_config(args, b) for b in bench.BACKENDS)
    assert unsloth["train"]["backend"] == "unsloth" and transformers["train"]["backend"] == "transformers"
    assert {**unsloth["train"], "backend": None} == {**transformers["train"], "backend": None}
    assert unsloth["model"] == transformers["model"] and unsloth["data"] == transformers["data"]
    assert unsloth["model"]["id"] == "unsloth/Qwen3-0.6B" and unsloth["model"]["source"] == "hub"
    assert unsloth["train"]["max_steps"] == 7 and unsloth["train"]["logging_steps"] == 1, "a step event every step"
    assert unsloth["lora"]["r"] == 8, "--set reaches the composition"
    # the gpu option's presets, as `python run.py gpu=rtx5090` trains with them
    from tests.test_config import preset_of

    keys = ("batch_size", "grad_accum", "max_seq_length")
    assert {k: unsloth["train"][k] for k in keys} == {k: preset_of("rtx5090")[k] for k in keys}


def test_a_local_model_folder_is_trained_from_that_folder(tmp_path):
    bench = bench_module()
    args = bench.argparse.Namespace(model="unused", model_dir=str(tmp_path), load_in_4bit=True, gpu="h200", steps=3,
                                    set=[])
    model = bench.pod_config(args, "unsloth")["model"]
    assert (model["source"], model["id"], model["load_in_4bit"]) == ("local", str(tmp_path.resolve()), True)


def test_the_bench_module_does_not_import_torch_at_import_time():
    code = (f"import sys, importlib.util; spec = importlib.util.spec_from_file_location('b', {str(BENCH)!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stdout + done.stderr

#!/usr/bin/env python3
"""Unsloth against plain transformers + PEFT on this machine's GPU: the same small real model, the same data and
the same steps through remote_image/train_unsloth.py (train.backend=unsloth, then train.backend=transformers):
tokens/s, step time, peak VRAM; and the orchestrator's per-stage overhead around the same Unsloth training
(`python run.py provider=local`, read from run-summary.json). One table, a comparison column, and the published
figures beside it: Unsloth reports about 2x plain Hugging Face for 8B QLoRA; an RTX 5090's dense bf16 peak is
about 210 TFLOPS.

    python bench/bench_gpu.py                                   (unsloth/Qwen3-0.6B from the hub, the sample memories)
    python bench/bench_gpu.py --model-dir /models/qwen3-0.6b --dataset chats.jsonl --steps 40 --gpu h100

Run it with the pod's training stack (remote_image/requirements.txt) plus the orchestrator's packages. Without
a GPU it says so and exits 0. torch is imported only on the GPU path: the check for a GPU is nvidia-smi's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "remote_image" / "train_unsloth.py"
EVENT_PREFIX = "@@lorapod "  # train_unsloth.py's event lines (its EVENT_PREFIX)
BACKENDS = ("unsloth", "transformers")
# Dense bf16 tensor peaks (FP32 accumulate) from NVIDIA's spec sheets, for the achieved-TFLOPS line.
PEAK_BF16_TFLOPS = {"5090": 210, "4090": 165, "A100": 312, "H100": 989, "H200": 989}
# Runs train_unsloth.py in this interpreter and writes torch's own peak at exit: max_memory_allocated is what
# the tensors held, which nvidia-smi (allocator cache and CUDA context included) overstates.
PEAK_WRAPPER = """
import atexit, json, runpy, sys
script, config, peak_file = sys.argv[1:4]
def peak():
    import torch
    if torch.cuda.is_available():
        with open(peak_file, "w") as fh:
            cuda = torch.cuda
            json.dump({"allocated": cuda.max_memory_allocated(), "reserved": cuda.max_memory_reserved()}, fh)
atexit.register(peak)
sys.argv = [script, config]
runpy.run_path(script, run_name="__main__")
"""


def visible_gpus() -> list[str]:
    """GPU names from nvidia-smi; none when it is missing or CUDA_VISIBLE_DEVICES hides every device."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return []
    if not shutil.which("nvidia-smi"):
        return []
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


class VramPoller:
    """Peak of nvidia-smi's memory.used on GPU 0 while a run lasts, less what was used before it began."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.base = self._used()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def _used() -> int:
        try:
            done = subprocess.run(["nvidia-smi", "-i", "0", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True)
            return int(done.stdout.split()[0]) * 2**20
        except (OSError, IndexError, ValueError):
            return 0

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used() - self.base)
            self._stop.wait(self.interval)

    def __enter__(self) -> "VramPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def prepare(args, work: Path) -> Path:
    """The dataset through the project's own curation (pipeline=prepare): the sample memories or --dataset."""
    run_dir = work / "prepare"
    cmd = [args.orchestrator_python, "run.py", "pipeline=prepare", f"hydra.run.dir={run_dir}"]
    if args.dataset:
        cmd += ["dataset=jsonl", f"dataset.path={Path(args.dataset).resolve()}", f"dataset.persona.name={args.persona}"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
    return run_dir / "dataset"


def overrides(args, backend: str) -> list[str]:
    """The same model, data and steps for every run; the gpu option's presets unless --set says otherwise."""
    source = ["model.source=local", f"model.id={Path(args.model_dir).resolve()}"] if args.model_dir else \
        ["model.source=hub", f"model.id={args.model}"]
    return [f"gpu={args.gpu}", "provider=local", "model=qwen3_0_6b", *source,
            f"model.load_in_4bit={str(args.load_in_4bit).lower()}", f"train.backend={backend}",
            f"train.max_steps={args.steps}", "train.logging_steps=1", *args.set]


def pod_config(args, backend: str) -> dict:
    """config.json as the upload stage writes it (stages.upload.pod_config), from the same Hydra composition."""
    from hydra import compose, initialize_config_dir

    import engine  # noqa: F401  (registers the config schemas)
    from stages.upload import pod_config as build

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides(args, backend))
    return build(SimpleNamespace(cfg=cfg, run_id=f"bench-gpu-{backend}"))


def train(args, backend: str, dataset: Path, work: Path) -> dict:
    """One run of the training script alone, step events timed as they arrive."""
    folder = work / backend
    shutil.copytree(dataset, folder / "dataset")
    config = pod_config(args, backend)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    peak_file = folder / "peak.json"
    cmd = [sys.executable, "-c", PEAK_WRAPPER, str(SCRIPT), str(folder / "config.json"), str(peak_file)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    step_times: list[float] = []
    log = open(folder / "train.log", "w")
    started = time.perf_counter()
    with VramPoller() as vram:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if line.startswith(EVENT_PREFIX) and json.loads(line[len(EVENT_PREFIX):]).get("event") == "step":
                step_times.append(time.perf_counter())
        code = proc.wait()
    log.close()
    wall = time.perf_counter() - started
    result_path = folder / "out" / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    peak = json.loads(peak_file.read_text()) if peak_file.is_file() else {}
    # Steady state: the first steps pay for compilation and autotuning, which the warm-up skip leaves out.
    gaps = [b - a for a, b in zip(step_times, step_times[1:])][args.warmup:]
    step_s = statistics.median(gaps) if gaps else None
    t = config["train"]
    tokens_per_step = mean_tokens(args, dataset, t["max_seq_length"]) * t["batch_size"] * t["grad_accum"]
    return {"code": code, "wall_s": wall, "step_s": step_s, "steps": len(step_times),
            "tokens_per_s": tokens_per_step / step_s if step_s else None,
            "reported_tokens_per_s": next((v for k, v in result.items() if "tokens_per_s" in k), None),
            "tokens_per_step": tokens_per_step, "vram_allocated": peak.get("allocated"),
            "vram_reserved": peak.get("reserved"), "vram_smi": vram.peak, "log": folder / "train.log",
            "train_s": result.get("seconds")}


_TOKENS: dict[int, float] = {}


def mean_tokens(args, dataset: Path, max_length: int) -> float:
    """Mean tokens of a training example through the model's own chat template, cut at max_seq_length (padding
    not counted): examples per step times this is the tokens a step trains on."""
    if max_length not in _TOKENS:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model_dir or args.model)
        rows = [json.loads(line) for line in (dataset / "train.jsonl").read_text().splitlines() if line.strip()]
        lengths = []
        for row in rows:
            ids = tok.apply_chat_template(row["messages"], tokenize=True, enable_thinking=False)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
            lengths.append(min(len(ids), max_length))
        _TOKENS[max_length] = statistics.mean(lengths)
    return _TOKENS[max_length]


def flops_per_token(args) -> float | None:
    """6 x the parameters a token passes through (forward, backward, gradient checkpointing's recompute folded
    into the usual estimate): attention and MLP of every layer plus the lm_head."""
    try:
        from transformers import AutoConfig

        c = AutoConfig.from_pretrained(args.model_dir or args.model)
        c = getattr(c, "text_config", c)
        h, heads = c.hidden_size, c.num_attention_heads
        hd = getattr(c, "head_dim", None) or h // heads
        kv = getattr(c, "num_key_value_heads", None) or heads
        layer = 2 * h * heads * hd + 2 * h * kv * hd + 3 * h * c.intermediate_size
        return 6 * (c.num_hidden_layers * layer + c.vocab_size * h)
    except Exception:  # a config this estimate cannot read: the line is left out
        return None


def orchestrated(args, dataset_args: list[str], work: Path) -> dict:
    """`python run.py provider=local` on this machine with the same Unsloth training: run-summary.json's stages."""
    run_dir = work / "orchestrated"
    cmd = [args.orchestrator_python, "run.py", *overrides(args, "unsloth"), f"remote.python={sys.executable}",
           *dataset_args, f"hydra.run.dir={run_dir}", f"registry.path={work / 'adapters'}"]  # never ./adapters
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary_path = run_dir / "run-summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if done.returncode != 0:
        print(f"python run.py failed ({done.returncode}); its output ends:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return {"code": done.returncode, "wall_s": wall, "stages": {k: v["seconds"] for k, v in
                                                                 (summary.get("stages") or {}).items()}}


def gib(value) -> str:
    return f"{value / 2**30:.2f}" if value else "-"


def num(value, fmt: str = ".2f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def ratio(a, b) -> str:
    return f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unsloth/Qwen3-0.6B", help="a hub id (default %(default)s)")
    parser.add_argument("--model-dir", help="a local model folder instead of --model")
    parser.add_argument("--load-in-4bit", action="store_true", help="QLoRA (an 8B model); a 0.6B trains in bf16")
    parser.add_argument("--dataset", help="a jsonl file (see conf/dataset/jsonl.yaml); default: the sample memories")
    parser.add_argument("--persona", default="User", help="dataset.persona.name for --dataset")
    parser.add_argument("--gpu", default="rtx5090", help="the gpu option whose training presets to use")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of every run (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="first step intervals left out of the step time")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another Hydra override")
    parser.add_argument("--no-orchestrator", action="store_true", help="skip the python run.py overhead run")
    parser.add_argument("--orchestrator-python", default=sys.executable,
                        help="the interpreter with lorapod's own packages (default: this one)")
    args = parser.parse_args()

    gpus = visible_gpus()
    if not gpus:
        print("bench_gpu: no GPU on this machine (nvidia-smi finds none): nothing to measure. "
              "Run it on a CUDA machine.")
        return 0
    import torch  # the GPU path only

    if not torch.cuda.is_available():
        print(f"bench_gpu: nvidia-smi lists {gpus[0]}, but torch {torch.__version__} sees no CUDA device: "
              "install the pod's stack (remote_image/requirements.txt) in this interpreter.")
        return 1

    work = Path(tempfile.mkdtemp(prefix="lorapod-bench-gpu-"))
    dataset = prepare(args, work)
    rows = {b: train(args, b, dataset, work) for b in BACKENDS}
    dataset_args = ["dataset=jsonl", f"dataset.path={Path(args.dataset).resolve()}",
                    f"dataset.persona.name={args.persona}"] if args.dataset else []
    orch = None if args.no_orchestrator else orchestrated(args, dataset_args, work)

    u, h = rows["unsloth"], rows["transformers"]
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    fpt = flops_per_token(args)
    print(f"\n{name}, {args.model_dir or args.model} ({'4-bit' if args.load_in_4bit else 'bf16'}), {args.steps} steps, "
          f"gpu={args.gpu} presets, ~{u['tokens_per_step']:.0f} tokens a step; work folder {work}")
    print(f"{'measure':<40} {'unsloth':>12} {'transformers':>13} {'unsloth/HF':>11}  published")
    table = [
        ("exit code", u["code"], h["code"], None, ""),
        ("step events seen", u["steps"], h["steps"], None, ""),
        ("tokens/s (steady state)", u["tokens_per_s"], h["tokens_per_s"], ratio(u["tokens_per_s"], h["tokens_per_s"]),
         "Unsloth: ~2x plain HF (8B QLoRA)"),
        ("tokens/s as result.json reports it", u["reported_tokens_per_s"], h["reported_tokens_per_s"],
         ratio(u["reported_tokens_per_s"], h["reported_tokens_per_s"]), ""),
        ("step time s (median after warm-up)", u["step_s"], h["step_s"], ratio(u["step_s"], h["step_s"]), ""),
        ("peak VRAM allocated GiB (torch)", gib(u["vram_allocated"]), gib(h["vram_allocated"]),
         ratio(u["vram_allocated"], h["vram_allocated"]), "Unsloth: >70% less than HF"),
        ("peak VRAM reserved GiB (torch)", gib(u["vram_reserved"]), gib(h["vram_reserved"]),
         ratio(u["vram_reserved"], h["vram_reserved"]), ""),
        ("peak VRAM used GiB (nvidia-smi)", gib(u["vram_smi"]), gib(h["vram_smi"]), ratio(u["vram_smi"], h["vram_smi"]),
         ""),
        ("script wall s (load, evals, save)", u["wall_s"], h["wall_s"], ratio(u["wall_s"], h["wall_s"]), ""),
    ]
    if fpt:
        tf = {k: r["tokens_per_s"] * fpt / 1e12 if r["tokens_per_s"] else None for k, r in rows.items()}
        table.append(("achieved TFLOPS (6N x tokens/s)", tf["unsloth"], tf["transformers"],
                      ratio(tf["unsloth"], tf["transformers"]),
                      f"dense bf16 peak ~{peak} TFLOPS" if peak else "RTX 5090 dense bf16 peak ~210 TFLOPS"))
        if peak:
            table.append(("MFU %", tf["unsloth"] and 100 * tf["unsloth"] / peak,
                          tf["transformers"] and 100 * tf["transformers"] / peak, None, ""))
    if orch:
        for stage, seconds in orch["stages"].items():
            table.append((f"run.py stage {stage} s", seconds, None, None, ""))
        table.append(("run.py wall s (whole pipeline)", orch["wall_s"], None,
                      f"{orch['wall_s'] - u['wall_s']:+.1f} s", "vs the script alone: the orchestrator's share"))
    for label, a, b, cmp_, published in table:
        a = a if isinstance(a, str) else num(a, "d" if isinstance(a, int) else ".2f")
        b = b if isinstance(b, str) else num(b, "d" if isinstance(b, int) else ".2f")
        print(f"{label:<40} {a:>12} {b:>13} {cmp_ or '':>11}  {published}")
    failed = [b for b, r in rows.items() if r["code"] != 0]
    for backend in failed:
        print(f"{backend} failed: see {rows[backend]['log']}")
    return 1 if failed or (orch and orch["code"] != 0) else 0


if __name__ == "__main__":
    sys.exit(main())

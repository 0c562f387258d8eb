#!/usr/bin/env python3
"""Train a LoRA adapter from a lorapod run folder. Runs alone on the pod: imports nothing from lorapod.

    python train_unsloth.py config.json

config.json (written by lorapod's upload stage) names the model, LoRA and training settings and the
dataset files, all relative to its own folder. Outputs land in `out/`: the adapter, metrics.jsonl and
result.json, whose `files` map gives the sha256 of every output so the orchestrator can verify what it
fetches. Trainer checkpoints go to `checkpoints/`, which is never fetched.

Each logging step prints one line `@@lorapod {json}` on stdout; the orchestrator turns these into its
progress bar, so the line format is a contract (see EVENT_PREFIX).

Under torchrun (lorapod launches it when gpu.count > 1) each rank trains on its shard of the data; rank 0 alone
writes the outputs and the events. Each rank's current CUDA device is set to its LOCAL_RANK before the model
loads, so a 4-bit model without a device_map lands on the rank's own card (transformers' bnb quantizer).

The Hugging Face token, when there is one, is a file named by HF_TOKEN_PATH. It is not also passed as
`token=`: huggingface_hub reads that file for every hub call, Unsloth's and transformers' included, and
Unsloth answers an explicit token it finds nowhere saved by logging in, which writes it to a token store.
An early `env` event reports the environment the launch set (never the token).

Backends: Unsloth's FastLanguageModel when `train.backend` is `unsloth`, or `auto` and unsloth imports;
plain transformers + PEFT otherwise. Both go through TRL's SFTTrainer with prompt/completion rows, so the
loss covers only the final assistant answer.
"""
from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

EVENT_PREFIX = "@@lorapod "
# A ChatML template for the tiny model's tokenizer: real models bring their own.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Set by lorapod's launch (an SSH session has none of the image's ENV): reported, so a wrong one shows.
REPORTED_ENV = ("HF_HOME", "HF_HUB_OFFLINE", "HF_XET_HIGH_PERFORMANCE", "HF_TOKEN_PATH", "TRITON_CACHE_DIR",
                "TORCHINDUCTOR_CACHE_DIR", "UNSLOTH_COMPILE_LOCATION", "PYTHONUNBUFFERED")


def emit(event: str, **fields) -> None:
    if rank_and_world()[0] != 0:
        return  # rank 0 speaks for the run: the follower would count every rank's events (one log for all)
    # One write per line: print() writes the text and its newline apart, and under torchrun every rank writes
    # to the same train.log, so another rank's output could land inside an event line.
    sys.stdout.write(EVENT_PREFIX + json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
    sys.stdout.flush()


def environment_report() -> dict:
    """What the launch gave this process: cache locations and switches, and whether the token file is there and
    private. Never the token: this goes into train.log and result.json."""
    report = {name: os.environ.get(name) for name in REPORTED_ENV}
    report["PATH_first"] = os.environ.get("PATH", "").split(os.pathsep)[0]
    report["hf_token_in_environment"] = any(os.environ.get(n) for n in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"))
    token_path = os.environ.get("HF_TOKEN_PATH")
    if token_path:
        try:
            mode, folder_mode = os.stat(token_path).st_mode, os.stat(os.path.dirname(token_path)).st_mode
            report["hf_token_file"] = {"readable": os.access(token_path, os.R_OK), "mode": oct(mode & 0o777),
                                       "folder_mode": oct(folder_mode & 0o777)}
        except OSError as exc:
            report["hf_token_file"] = {"readable": False, "error": exc.strerror}
    return report


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) as torchrun sets them (lorapod launches it when gpu.count > 1); (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def join_ranks(use_gpu: bool) -> tuple[int, int]:
    """Under torchrun, join the process group now rather than when the Trainer first asks: rank 0 builds the
    tiny base while the others wait at a barrier (see main). The Trainer (accelerate) reuses a group that is
    already up. gloo on CPU is the backend accelerate would pick there too; NCCL on GPUs, each rank its own."""
    rank, world = rank_and_world()
    if world > 1:
        import torch
        import torch.distributed as dist

        if use_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_gpu else "gloo")
        atexit.register(dist.destroy_process_group)  # NCCL warns at exit about a group left standing
    return rank, world


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                sys.exit(f"{path}:{lineno}: not JSON ({exc.msg}); re-run lorapod's prepare stage")
            messages = row.get("messages")
            if not messages or messages[-1].get("role") != "assistant":
                sys.exit(f"{path}:{lineno}: a row needs `messages` ending with an assistant turn")
            rows.append(row)
    return rows


def tokenize_rows(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """input_ids plus a completion_mask that covers only the final assistant answer.

    Prompt and answer are tokenized apart so the boundary is exact whatever the tokenizer merges; TRL
    versions have disagreed on this when they do it themselves, so we own it and check it (check_masking).
    """
    out = []
    for row in rows:
        messages = row["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            sys.exit(f"row {row.get('id')}: the chat template renders the prompt differently with the answer")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        # Keep the answer whole where we can: cut the prompt from the left, never the start of the answer.
        room = max(max_length - len(answer_ids), max_length // 2)
        prompt_ids = prompt_ids[-room:]
        ids = (prompt_ids + answer_ids)[:max_length]
        out.append({"input_ids": ids, "completion_mask": ([0] * len(prompt_ids) + [1] * len(answer_ids))[:max_length]})
    return out


def check_masking(trainer, rows: list[dict]) -> float:
    """Fail loudly if the trainer would learn from anything but the answers (a library update can do that)."""
    sample = [trainer.train_dataset[i] for i in range(min(8, len(trainer.train_dataset)))]
    batch = trainer.data_collator(sample)
    expected = sum(sum(r["completion_mask"]) for r in rows[: len(sample)])
    trained = int((batch["labels"] != -100).sum())
    if trained != expected:
        sys.exit(f"loss masking check failed: {trained} label tokens in a batch, expected {expected}")
    return expected / max(1, sum(len(r["input_ids"]) for r in rows[: len(sample)]))


def choose_backend(wanted: str) -> str:
    if wanted == "transformers":
        return wanted
    try:
        import unsloth  # noqa: F401  (must be imported before trl/transformers to patch them)
    except Exception as exc:  # unsloth raises more than ImportError when no accelerator is usable
        if wanted == "unsloth":
            sys.exit(f"train.backend=unsloth but unsloth does not import here: {exc}")
        print(f"unsloth unavailable ({exc}); training with transformers + peft", flush=True)
        return "transformers"
    return "unsloth"


def build_tiny_base(spec: dict, texts: list[str], seed: int, target: Path) -> Path:
    """A randomly initialised small Llama and a BPE tokenizer trained on the dataset: nothing downloaded."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=spec["vocab_size"],
            special_tokens=TINY_SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        chat_template=TINY_CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_attention_heads"],
        max_position_embeddings=spec["max_position_embeddings"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def load_model(backend: str, model_path: str, cfg: dict, use_gpu: bool):
    lora, train, model_cfg = cfg["lora"], cfg["train"], cfg["model"]
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=model_path,
            max_seq_length=train["max_seq_length"],
            dtype=None,
            load_in_4bit=bool(model_cfg.get("load_in_4bit")) and use_gpu,
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]),
            use_rslora=lora["use_rslora"],
            random_state=train["seed"],
            max_seq_length=train["max_seq_length"],
            use_gradient_checkpointing="unsloth" if use_gpu else False,
        )
        return model, tokenizer

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    if model_cfg.get("load_in_4bit") and use_gpu:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    dtype = torch.bfloat16 if use_gpu and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    peft_config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        use_rslora=lora["use_rslora"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config), tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    cfg = json.loads(args.config.read_text(encoding="utf-8"))
    environment = environment_report()
    emit("env", **environment)
    root = args.config.resolve().parent
    out = root / "out"
    adapter_dir = out / "adapter"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    train_cfg, model_cfg = cfg["train"], cfg["model"]

    train_rows = read_jsonl(root / cfg["data"]["train"])
    eval_rows = read_jsonl(root / cfg["data"]["eval"])
    if not train_rows:
        sys.exit("train.jsonl is empty: nothing to train on")

    backend = choose_backend(train_cfg.get("backend", "auto"))
    import torch  # after unsloth, which must patch first

    from datasets import Dataset
    from transformers import TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    use_gpu = torch.cuda.is_available()
    rank, world_size = join_ranks(use_gpu)
    set_seed(train_cfg["seed"])
    outputs: list[Path] = []

    if model_cfg.get("source") == "random":
        texts = [m["content"] for r in train_rows + eval_rows for m in r["messages"]]
        # Built once, by rank 0, and loaded from disk by every rank: ranks must share one tokenizer, and BPE
        # training is not something to trust to give the same vocabulary twice; writing it concurrently
        # into one folder would race.
        if rank == 0:
            build_tiny_base(model_cfg["tiny"], texts, train_cfg["seed"], out / "base_model")
        barrier()
        model_path = str(out / "base_model")
        # The tiny base exists nowhere else: the adapter is useless without it, so it comes home too.
        outputs += sorted(p for p in (out / "base_model").rglob("*") if p.is_file())
    else:
        model_path = model_cfg["id"]
    model, tokenizer = load_model(backend, model_path, cfg, use_gpu)

    metrics_path = out / "metrics.jsonl"
    metrics_fh = open(metrics_path if rank == 0 else os.devnull, "w", encoding="utf-8")  # rank 0 writes outputs

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            emit("start", total=state.max_steps, backend=backend, device="cuda" if use_gpu else "cpu")

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            record = {"step": state.global_step, "total": state.max_steps, "epoch": state.epoch, **logs}
            metrics_fh.write(json.dumps(record, sort_keys=True) + "\n")
            metrics_fh.flush()
            if "loss" in logs:
                emit("step", step=state.global_step, total=state.max_steps, loss=logs["loss"],
                     lr=logs.get("learning_rate"), epoch=state.epoch)

    max_length = train_cfg["max_seq_length"]
    train_tok = tokenize_rows(tokenizer, train_rows, max_length)
    eval_tok = tokenize_rows(tokenizer, eval_rows, max_length)
    sft_args = SFTConfig(
        output_dir=str(root / "checkpoints"),
        max_length=max_length,
        num_train_epochs=train_cfg["epochs"],
        max_steps=train_cfg["max_steps"] if train_cfg["max_steps"] else -1,
        per_device_train_batch_size=train_cfg["batch_size"],
        per_device_eval_batch_size=train_cfg["batch_size"],
        gradient_accumulation_steps=train_cfg["grad_accum"],
        learning_rate=train_cfg["learning_rate"],
        warmup_steps=train_cfg["warmup_steps"],
        seed=train_cfg["seed"],
        optim=train_cfg["optim"] if use_gpu else cpu_optim(train_cfg["optim"]),
        logging_steps=train_cfg["logging_steps"],
        save_strategy="no",
        report_to=[],
        use_cpu=not use_gpu,
        bf16=use_gpu and torch.cuda.is_bf16_supported(),
        fp16=False,
        completion_only_loss=True,
        dataset_num_proc=None,
        disable_tqdm=True,
        # Every LoRA weight gets a gradient each step, and the search for unused ones breaks under reentrant
        # gradient checkpointing; Unsloth decides this for itself (unsloth/models/_ddp_defaults.py).
        ddp_find_unused_parameters=False if world_size > 1 and backend == "transformers" else None,
    )
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=Dataset.from_list(train_tok),
        eval_dataset=Dataset.from_list(eval_tok) if eval_tok else None,
        processing_class=tokenizer,
        callbacks=[Progress()],
    )

    def evaluate(phase: str) -> float | None:
        if not eval_rows:
            return None
        loss = float(trainer.evaluate()["eval_loss"])
        emit("eval", phase=phase, eval_loss=loss)
        return loss

    answer_fraction = check_masking(trainer, train_tok)
    started = time.time()
    eval_before = evaluate("before")
    train_output = trainer.train()
    eval_after = evaluate("after")
    metrics_fh.close()
    if rank != 0:
        return 0  # the ranks trained one model together; rank 0 holds it and writes the outputs

    model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    outputs += sorted(p for p in adapter_dir.rglob("*") if p.is_file())
    outputs.append(metrics_path)

    result = {
        "status": "succeeded",
        "backend": backend,
        "device": "cuda" if use_gpu else "cpu",
        "world_size": world_size,
        "model": model_cfg.get("id") or model_cfg.get("name"),
        "steps": trainer.state.global_step,
        "train_loss": float(train_output.training_loss),
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "train_examples": len(train_rows),
        "answer_token_fraction": round(answer_fraction, 4),
        "eval_examples": len(eval_rows),
        "seconds": round(time.time() - started, 3),
        "versions": versions(),
        "env": environment,
        "files": {str(p.relative_to(out)): sha256_file(p) for p in outputs},
    }
    if not all(map(math.isfinite, [v for v in (result["train_loss"], eval_before, eval_after) if v is not None])):
        result["status"] = "failed"
        result["error"] = "the loss is not finite: lower train.learning_rate"
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, out / "result.json")  # a fetched result.json is always complete
    emit("done", status=result["status"], steps=result["steps"], train_loss=result["train_loss"],
         eval_loss_before=eval_before, eval_loss_after=eval_after)
    return 0 if result["status"] == "succeeded" else 1


def cpu_optim(optim: str) -> str:
    # 8-bit and paged optimizers need bitsandbytes on a GPU; on CPU the plain AdamW is the same maths.
    return "adamw_torch" if "8bit" in optim or optim.startswith("paged") else optim


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("torch", "torchao", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth", "unsloth_zoo"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


if __name__ == "__main__":
    sys.exit(main())

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
plain transformers + PEFT when asked, or with `auto` on CPU only (on a GPU a failed unsloth import fails the
run: see choose_backend). Both go through TRL's SFTTrainer with our own completion_mask, so the loss covers every
assistant answer of a conversation, each with its end-of-turn token, and nothing else (see tokenize_rows).
"""
from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib.util
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


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    # enable_thinking=False: Qwen3's template otherwise puts an empty <think></think> block into the answer, and
    # the adapter would learn to emit it; with False the block goes into the prompt, as at Qwen3's own
    # non-thinking inference. Templates that do not know the variable (Llama 3.1) ignore it.
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False,
                                         enable_thinking=False)


def final_answer(tokenizer, messages: list[dict], row_id) -> tuple[str, str]:
    """The prompt (everything before the final answer, ending with the generation prompt) and the final answer,
    ending with its end-of-turn token (the tokenizer's eos_token, <|im_end|> for Qwen3, <|eot_id|> for Llama
    3.1): what follows it (ChatML's newline) is not trained."""
    prompt = render(tokenizer, messages[:-1], True)
    full = render(tokenizer, messages, False)
    if not full.startswith(prompt):
        sys.exit(f"row {row_id}: the chat template renders the prompt differently with the answer")
    answer = full[len(prompt):]
    eos = tokenizer.eos_token
    if eos and eos in answer:
        answer = answer[: answer.rindex(eos) + len(eos)]
    return prompt, answer


def earlier_answer(tokenizer, messages: list[dict], k: int, prompt: str) -> tuple[int, int] | None:
    """Where assistant turn k (not the final one) lies in `prompt`, as (start, end) of its text and end-of-turn
    token, or None when the template's rendering cannot be read back exactly.

    A template may render a turn in the history differently from the turn being generated (Qwen3 with
    enable_thinking=False puts an empty think block after the generation prompt, never in history), so the
    generation prompt does not locate an earlier answer. Instead: render the history up to turn k and up to the
    user turn after it (each must be a prefix of the prompt), and once more with turn k's content emptied; the
    two renderings of turn k must differ in exactly the answer's text, which must be followed by eos."""
    eos = tokenizer.eos_token
    # Only an answer between two user turns: strict templates refuse other orders, and rendering them could raise.
    if (not eos or k < 1 or k + 1 >= len(messages) - 1 or messages[k - 1].get("role") != "user"
            or messages[k + 1].get("role") != "user"):
        return None
    before = render(tokenizer, messages[:k], False)
    after = render(tokenizer, messages[: k + 2], False)
    emptied = render(tokenizer, messages[:k] + [{**messages[k], "content": ""}] + [messages[k + 1]], False)
    if not (prompt.startswith(after) and after.startswith(before) and emptied.startswith(before)):
        return None
    turn, bare = after[len(before):], emptied[len(before):]
    if eos not in bare:
        return None
    header = bare[: bare.index(eos)]  # what the template writes around an empty answer before its end of turn
    if not turn.startswith(header) or eos not in turn[len(header):]:
        return None
    end = turn.index(eos, len(header)) + len(eos)
    text = turn[len(header): end - len(eos)]
    content = messages[k].get("content") or ""
    # The template may trim the answer (Llama 3.1) but must not otherwise change it (Qwen3 moves a </think> part
    # out of an earlier answer): anything else would train text that is not the persona's answer.
    if not text.strip() or text.strip() != content.strip() or turn[end:] != bare[len(header) + len(eos):]:
        return None
    return len(before) + len(header), len(before) + end


def encode_row(tokenizer, messages: list[dict], row_id, warned: list) -> tuple[list[int], list[int], list[int]]:
    """Prompt ids, their mask (1 on every earlier assistant answer and its end-of-turn token) and the final
    answer's ids. Prompt pieces and the answer are tokenized apart so each boundary is exact whatever the
    tokenizer merges. The template writes BOS itself where the model wants one, so the tokenizer must not add
    another. When an earlier answer cannot be located exactly, the row trains its final answer only and
    `warned` records the row (a wrong mask would teach the model the template's headers or the user's words)."""
    prompt, answer = final_answer(tokenizer, messages, row_id)
    spans = []
    for k in range(len(messages) - 1):
        if messages[k].get("role") != "assistant":
            continue
        span = earlier_answer(tokenizer, messages, k, prompt)
        if span is None or (spans and span[0] < spans[-1][1]):
            warned.append(row_id)
            spans = []
            break
        spans.append(span)
    ids, mask, at = [], [], 0
    for start, end in spans + [(len(prompt), len(prompt))]:
        for text, trained in ((prompt[at:start], 0), (prompt[start:end], 1)):
            piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            ids += piece
            mask += [trained] * len(piece)
        at = end
    return ids, mask, tokenizer(answer, add_special_tokens=False)["input_ids"]


def shorten(tokenizer, messages: list[dict], excess: int) -> list[dict] | None:
    """One step towards fitting: drop the oldest exchange after the system message, or, with only the last
    question left, cut `excess` tokens from the start of its text (the newest words are nearest the answer).
    None when nothing is left to cut. The template renders the result, so BOS, the system message and every
    header and end-of-turn token stay intact."""
    first = 1 if messages[0].get("role") == "system" else 0
    if len(messages) - first < 2:
        return None  # no question to cut: the system message is never cut
    history = messages[first:-2]  # before the last question and its answer
    if history:
        # Drop whole turns up to the next user message, so roles still alternate for strict templates.
        cut = next((i for i in range(1, len(history)) if history[i].get("role") == "user"), len(history))
        return messages[:first] + history[cut:] + messages[-2:]
    question = messages[-2]
    content = question.get("content") or ""
    ids = tokenizer(content, add_special_tokens=False)["input_ids"]
    if not ids:
        return None
    # A cut inside a multi-byte character decodes to U+FFFD: drop it. The text must get shorter on every call
    # or the caller's loop would not end; a tokenizer whose decode does not give a shorter tail is cut by
    # characters instead.
    kept = tokenizer.decode(ids[min(len(ids), max(1, excess)):]).lstrip("\ufffd")
    if len(kept) >= len(content):
        kept = content[max(1, excess):]
    return messages[:-2] + [{**question, "content": kept}] + messages[-1:]


def tokenize_rows(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """input_ids plus a completion_mask that covers exactly every assistant answer of the row, each with its
    end-of-turn token: never a user turn, the system message or the template's headers (see encode_row).

    A row longer than max_length loses its oldest exchanges first (see shorten), never BOS, the system message or
    the final answer; an earlier answer dropped with its exchange is simply not trained. Only when the system
    message and the final answer alone do not fit is that answer cut at its end.
    TRL versions have disagreed on masking when they do it themselves, so we own it and check it (check_masking).
    """
    out, warned = [], []
    for row in rows:
        messages = list(row["messages"])
        inexact = []
        prompt_ids, prompt_mask, answer_ids = encode_row(tokenizer, messages, row.get("id"), inexact)
        while len(prompt_ids) + len(answer_ids) > max_length:
            shorter = shorten(tokenizer, messages, len(prompt_ids) + len(answer_ids) - max_length)
            if shorter is None:
                break
            messages = shorter
            inexact = []
            prompt_ids, prompt_mask, answer_ids = encode_row(tokenizer, messages, row.get("id"), inexact)
        if len(prompt_ids) >= max_length:
            sys.exit(f"row {row.get('id')}: the system message and the template's headers take {len(prompt_ids)} "
                     f"tokens, leaving no room for the answer within train.max_seq_length={max_length}; raise "
                     f"train.max_seq_length or shorten the system prompt")
        answer_ids = answer_ids[: max_length - len(prompt_ids)]
        out.append({"input_ids": prompt_ids + answer_ids, "completion_mask": prompt_mask + [1] * len(answer_ids)})
        warned += inexact  # as the row is finally encoded: a shortened row may have lost the unreadable turn
    if warned:
        # One line for all rows: a template that trips this trips it on every conversation.
        print(f"warning: the chat template renders earlier answers in a way lorapod cannot locate exactly; "
              f"{len(warned)} row(s) train their final answer only (first: row {warned[0]})", flush=True)
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


def cuda_available() -> bool:
    import torch  # torch before unsloth is fine; unsloth must only precede trl/transformers

    return torch.cuda.is_available()


def choose_backend(wanted: str, on_gpu: bool | None = None) -> str:
    """`auto` means Unsloth wherever it can run. On a GPU a failed import is a broken image, not a reason to train
    at half speed and twice the memory: the run fails with the import error. On CPU (CI, laptops) unsloth has
    nothing to accelerate and falls back as before."""
    if wanted == "transformers":
        return wanted
    try:
        import unsloth  # noqa: F401  (must be imported before trl/transformers to patch them)
    except Exception as exc:  # unsloth raises more than ImportError when no accelerator is usable
        if wanted == "unsloth":
            sys.exit(f"train.backend=unsloth but unsloth does not import here: {type(exc).__name__}: {exc}")
        if cuda_available() if on_gpu is None else on_gpu:
            sys.exit(f"train.backend=auto on a GPU, but unsloth does not import: {type(exc).__name__}: {exc}\n"
                     "Fix the image's unsloth install, or set train.backend=transformers to train with plain "
                     "transformers + peft on purpose (slower, more memory).")
        print(f"unsloth unavailable on CPU ({exc}); training with transformers + peft", flush=True)
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
    if use_gpu:
        # What Unsloth does for itself: without checkpointing an 8B model at batch 4 x 1024 is near out of memory
        # on 32 GB. Non-reentrant checkpointing works with frozen inputs; enable_input_require_grads (done by
        # prepare_model_for_kbit_training too) gives the LoRA layers a gradient path through checkpointed blocks.
        checkpointing = {"use_reentrant": False}
        if "quantization_config" in kwargs:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                    gradient_checkpointing_kwargs=checkpointing)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
            model.enable_input_require_grads()
        model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    peft_config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        use_rslora=lora["use_rslora"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config), tokenizer


# Dense (no sparsity) bf16 tensor-core peaks in TFLOPS, matched in order against torch.cuda.get_device_name().
# RTX 5090: ~210 (shared/reference/unsloth.md); A100 312, H100 SXM and H200 989: NVIDIA's datasheets (their
# headline figures halved, those are with sparsity); RTX 4090 165 (Ada whitepaper, FP32 accumulate).
# H100 PCIe/NVL run lower clocks than the SXM figure: no entry, so no MFU rather than a wrong one.
PEAK_BF16_TFLOPS = (("RTX 5090", 210.0), ("RTX 4090", 165.0), ("A100", 312.0), ("H200", 989.0),
                    ("H100 80GB HBM3", 989.0), ("H100 SXM", 989.0))


def peak_flops(device_name: str | None) -> float | None:
    for fragment, tflops in PEAK_BF16_TFLOPS:
        if device_name and fragment in device_name:
            return tflops * 1e12
    return None


def count_parameters(model) -> int:
    """Every parameter, trainable (LoRA) and frozen (the base). bitsandbytes packs two 4-bit weights per byte of
    a Params4bit, so its numel is half the weight's; the quant state knows the real shape."""
    total = 0
    for p in model.parameters():
        shape = getattr(getattr(p, "quant_state", None), "shape", None)
        total += math.prod(shape) if shape is not None else p.numel()
    return total


class Throughput:
    """Tokens actually trained per second, and MFU, for this process's GPU.

    tokens: non-padding tokens (attention_mask ones) of every micro-batch handed to training_step, counted as it
    is used (a collator count would run a prefetched batch ahead). tokens/s = tokens / wall time, over the window
    since the previous report (step events) or over the whole of training (result.json).
    MFU = 6 x N x tokens/s / peak, N = all parameters (trainable and frozen): the standard 6N estimate of a
    transformer's forward + backward FLOPs per token (Kaplan et al. 2020, PaLM's MFU). It ignores attention's
    sequence-length term, and a LoRA's backward skips the frozen weights' gradients, so this is the usual
    yardstick, not a count of the FLOPs done. None on CPU and on GPUs missing from PEAK_BF16_TFLOPS.
    With several GPUs each process reports its own: the run's tokens/s is about world_size times it.
    """

    def __init__(self, trainer, model, device_name: str | None):
        self.params = count_parameters(model)
        self.peak = peak_flops(device_name)
        self.tokens = self.window_tokens = 0
        self.started = self.window_started = self.stopped = None
        step = trainer.training_step

        def counted(model, inputs, *args, **kwargs):
            tokens = count_tokens(inputs)
            self.tokens += tokens
            self.window_tokens += tokens
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = counted  # the training loop calls self.training_step per micro-batch

    def start(self) -> None:
        self.started = self.window_started = time.perf_counter()

    def stop(self) -> None:
        self.stopped = time.perf_counter()

    def figures(self, tokens: int, seconds: float) -> dict:
        rate = tokens / seconds if seconds > 0 else None
        mfu = 6 * self.params * rate / self.peak if rate is not None and self.peak else None
        return {"tokens_per_s": round(rate, 1) if rate is not None else None,
                "mfu": round(mfu, 4) if mfu is not None else None}

    def window(self) -> dict:
        """Since the previous call (or the start): for a step event."""
        now = time.perf_counter()
        figures = self.figures(self.window_tokens, now - (self.window_started or now))
        self.window_tokens, self.window_started = 0, now
        return figures

    def summary(self) -> dict:
        seconds = (self.stopped or time.perf_counter()) - (self.started or time.perf_counter())
        return {"trained_tokens": self.tokens, "parameters": self.params,
                "peak_flops": self.peak, **self.figures(self.tokens, seconds)}


def count_tokens(inputs) -> int:
    mask = inputs.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    return int(inputs["input_ids"].numel())  # padding-free batches carry no mask and no padding


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

    report_to = trackers(train_cfg.get("report_to"), out)
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
            throughput.start()

        def on_train_end(self, args, state, control, **kwargs):
            throughput.stop()

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            record = {"step": state.global_step, "total": state.max_steps, "epoch": state.epoch, **logs}
            metrics_fh.write(json.dumps(record, sort_keys=True) + "\n")
            metrics_fh.flush()
            if "loss" in logs:
                emit("step", step=state.global_step, total=state.max_steps, loss=logs["loss"],
                     lr=logs.get("learning_rate"), epoch=state.epoch, **throughput.window())

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
        report_to=report_to,
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
    throughput = Throughput(trainer, model, torch.cuda.get_device_name() if use_gpu else None)

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
    if "tensorboard" in report_to:  # the event files come home with the adapter (stages/fetch_rules.py)
        outputs += sorted(p for p in (out / "tensorboard").rglob("*") if p.is_file())

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
        "throughput": {"gpu": torch.cuda.get_device_name() if use_gpu else None, **throughput.summary()},
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
         eval_loss_before=eval_before, eval_loss_after=eval_after, tokens_per_s=result["throughput"]["tokens_per_s"],
         mfu=result["throughput"]["mfu"])
    return 0 if result["status"] == "succeeded" else 1


def trackers(wanted, out: Path) -> list[str]:
    """train.report_to for the trainer. TensorBoard writes into out/tensorboard/ (transformers reads the folder
    from TENSORBOARD_LOGGING_DIR), where fetch finds it; a tracker whose package is missing stops here, before
    any training, with its name."""
    report_to = [r for r in (wanted or []) if r != "none"]
    packages = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}
    for name in report_to:
        if not any(importlib.util.find_spec(p) for p in packages.get(name, (name,))):
            sys.exit(f"train.report_to lists {name}, but its package is not installed where training runs: "
                     f"add {packages.get(name, (name,))[0]} to the image (or image.requirements), or drop it")
    if "tensorboard" in report_to:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(out / "tensorboard"))
    return report_to


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

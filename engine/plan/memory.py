"""Does training fit the GPU? Weights, LoRA, optimizer state and activations, from the model's shape.

The model (weights): the linear layers at 4 bits (bitsandbytes NF4: half a byte a weight plus a 4-byte scale per
64-weight block) when model.load_in_4bit, the embedding, lm_head and norms at bf16; everything bf16 otherwise.
The LoRA: r x (in + out) per adapted linear, trained in fp32 (weight and gradient, 8 bytes) plus the
optimizer's state (adamw_8bit: two 1-byte moments; adamw_torch: two fp32 moments).
Activations, with gradient checkpointing (Unsloth's and the transformers path's default for training): one
hidden state per layer kept, one layer recomputed at a time, for the longest micro-batch, batch_size x
max_seq_length tokens (the worst case: every example at full length). The logits dominate: the transformers path
holds them in bf16, their fp32 copy for the loss and its gradient (~10 bytes per token and vocabulary entry);
Unsloth's fused cross-entropy works in chunks (counted as 4 bytes, a guess). train.backend=auto counts the
transformers path: it is what runs when Unsloth does not import.
"""
from __future__ import annotations

from dataclasses import dataclass, field

GIB = 2 ** 30
NF4_BYTES = 0.5 + 4 / 64  # a 4-bit weight, plus its block's fp32 absmax (blocksize 64)
# Optimizer state bytes per trainable parameter; an optimizer not listed counts as Adam in fp32 (the most).
OPTIM_BYTES = {"adamw_8bit": 2, "paged_adamw_8bit": 2, "adamw_bnb_8bit": 2, "lion_8bit": 1, "paged_lion_8bit": 1,
               "adamw_torch": 8, "adamw_torch_fused": 8, "adamw_hf": 8, "paged_adamw_32bit": 8, "adafactor": 4,
               "sgd": 0, "lion_32bit": 4}
LOGIT_BYTES = {"unsloth": 4, "transformers": 10, "auto": 10}


@dataclass
class Shape:
    vocab: int
    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def of(cls, model) -> Shape | None:
        s = model.get("shape")
        if not s or not s.get("hidden_size"):
            return None
        heads = int(s.num_attention_heads)
        return cls(vocab=int(s.vocab_size), hidden=int(s.hidden_size), inter=int(s.intermediate_size),
                   layers=int(s.num_hidden_layers), heads=heads, kv_heads=int(s.num_key_value_heads or heads),
                   head_dim=int(s.head_dim or s.hidden_size // heads), tied=bool(s.tie_word_embeddings))

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear of one decoder layer, by the module names LoRA targets use."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.inter
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linears().values())

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def params(self) -> int:
        return self.linear_params() + self.embedding_params() + self.layers * 2 * self.hidden + self.hidden

    def lora_params(self, r: int, targets) -> int:
        shapes = self.linears()
        return self.layers * sum(r * sum(shapes[t]) for t in targets if t in shapes)


@dataclass
class Fit:
    gpu: str
    vram_gb: float  # per GPU
    usable_gb: float
    parts: dict[str, float] = field(default_factory=dict)  # GiB by part

    @property
    def need_gb(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.need_gb <= self.usable_gb

    def as_dict(self) -> dict:
        return {"gpu": self.gpu, "need_gb": round(self.need_gb, 2), "vram_gb": self.vram_gb,
                "usable_gb": round(self.usable_gb, 2), "fits": self.fits,
                "parts_gb": {k: round(v, 2) for k, v in self.parts.items()}}


def parts(shape: Shape, *, load_in_4bit: bool, r: int, targets, optim: str, backend: str, batch_size: int,
          max_seq_length: int, overhead_gb: float) -> dict[str, float]:
    """GiB per part for one GPU (data parallel: each holds a replica and its own micro-batch)."""
    if load_in_4bit:
        weights = shape.linear_params() * NF4_BYTES + (shape.params() - shape.linear_params()) * 2
    else:
        weights = shape.params() * 2
    lora = shape.lora_params(r, targets)
    tokens = batch_size * max_seq_length
    layer = tokens * (8 * shape.hidden + 4 * shape.inter) * 2  # q, k, v, o, norms, MLP in and out, bf16
    return {
        "weights": weights / GIB,
        "lora": lora * 8 / GIB,
        "optimizer": lora * OPTIM_BYTES.get(optim, 8) / GIB,
        "activations": (shape.layers * tokens * shape.hidden * 2 + layer) / GIB,
        "logits": tokens * shape.vocab * LOGIT_BYTES.get(backend, 10) / GIB,
        "cuda": overhead_gb,
    }


def fit(cfg, gpu, *, batch_size: int | None = None, max_seq_length: int | None = None,
        load_in_4bit: bool | None = None) -> Fit | None:
    """The memory fit of cfg's training on one gpu option (a config node or dict with name and vram_gb); None when
    it cannot be judged: no GPU (cpu) or no model.shape. Keyword overrides try a changed setting."""
    shape = Shape.of(cfg.model)
    vram = float(gpu.get("vram_gb") or 0)
    if shape is None or not vram or int(gpu.get("count", 1) or 0) == 0:
        return None
    t = cfg.train
    usable = vram * float(cfg.plan.vram_usable_fraction)
    return Fit(str(gpu.get("name")), vram, usable, parts(
        shape, load_in_4bit=cfg.model.load_in_4bit if load_in_4bit is None else load_in_4bit, r=int(cfg.lora.r),
        targets=list(cfg.lora.target_modules), optim=str(t.optim), backend=str(t.backend),
        batch_size=int(batch_size or t.batch_size), max_seq_length=int(max_seq_length or t.max_seq_length),
        overhead_gb=float(cfg.plan.cuda_overhead_gb)))


def remedies(cfg, gpu, gpu_options: dict[str, dict]) -> list[str]:
    """Settings that would make cfg fit: the largest batch size, the longest sequence length, 4-bit, other GPUs."""
    out = []
    bs = int(cfg.train.batch_size) // 2
    while bs >= 1 and not fit(cfg, gpu, batch_size=bs).fits:
        bs //= 2
    if bs >= 1:
        out.append(f"train.batch_size={bs}" + (f" (train.grad_accum={int(cfg.train.grad_accum) * int(cfg.train.batch_size) // bs} "
                                              "keeps the step's examples)" if int(cfg.train.batch_size) % bs == 0 else ""))
    length = int(cfg.train.max_seq_length) // 2
    while length >= 256 and not fit(cfg, gpu, max_seq_length=length).fits:
        length //= 2
    if length >= 256:
        out.append(f"train.max_seq_length={length}")
    if not cfg.model.load_in_4bit and fit(cfg, gpu, load_in_4bit=True).fits:
        out.append("model.load_in_4bit=true")
    bigger = sorted((float(o["vram_gb"]), name) for name, o in gpu_options.items()
                    if name != gpu.get("name") and (f := fit(cfg, o)) is not None and f.fits)
    if bigger:
        out.append("gpu=" + bigger[0][1] + (f" (or {', '.join(n for _, n in bigger[1:])})" if len(bigger) > 1 else ""))
    return out

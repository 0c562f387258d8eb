"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Types are checked by Hydra when it composes (a wrong type names its key); values are checked by
engine.validate before anything runs. Each YAML option under conf/ starts from one of these schemas.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class LocalProviderConfig:
    _target_: str = "engine.providers.local.LocalProvider"  # the class that implements the provider verbs
    name: str = "local"  # shown in logs and run-summary.json


@dataclass
class GpuConfig:
    name: str = MISSING  # the config option's name (rtx5090, cpu, ...)
    id: Optional[str] = None  # the provider's GPU type id, e.g. "NVIDIA GeForce RTX 5090"; null for cpu
    count: int = 1  # GPUs per pod
    vram_gb: int = 0  # memory per GPU, to judge whether a model fits
    price_per_hour: float = 0.0  # estimate in USD, for the cost line in run-summary.json
    min_cuda: Optional[str] = None  # lowest CUDA version the pod's driver must offer (Blackwell: 12.8)
    fallbacks: list[str] = field(default_factory=list)  # other gpu options to try when this one has no capacity


@dataclass
class TinyModelConfig:
    vocab_size: int = 1024  # the BPE tokenizer is trained on the dataset up to this size
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 1024


@dataclass
class ModelConfig:
    name: str = MISSING  # the config option's name
    source: str = "hub"  # hub: a Hugging Face id loaded on the pod; local: a folder on the pod; random: tiny test model
    id: Optional[str] = None  # Hugging Face id or pod-side folder (source hub/local)
    load_in_4bit: bool = False  # QLoRA on a GPU; ignored on CPU
    tiny: Optional[TinyModelConfig] = None  # shape of the random model (source random)


@dataclass
class PersonaConfig:
    # Whose voice the adapter learns; used in instructions built from memories. MISSING in the schema, as
    # a `???` in a group's YAML cannot unset a schema default.
    name: str = MISSING
    system_prompt: str = "You are {name}. Answer in your own voice, from your own memories."  # {name}: the above


@dataclass
class FiltersConfig:
    # Memory types that may become examples (the rest: not_allowed_type). action is left out: tool logs
    # are the machine's voice, not the person's.
    types: list[str] = field(default_factory=lambda: [
        "conversation", "chat", "inner_dialogue", "reflection", "reflection_summary", "dream", "journal",
        "observation", "audio"])
    min_content_chars: int = 20  # shorter content (+ response, for conversations; Me: "..." unwrapped): too_short
    require_tags_or_entities: bool = True  # untagged memories were never organised: no_tags_or_entities
    tag_exempt_types: list[str] = field(default_factory=lambda: ["dream", "reflection_summary"])  # kept untagged
    since: Optional[str] = None  # earliest timestamp kept, ISO date or date-time (UTC unless zoned): out_of_range
    until: Optional[str] = None  # latest timestamp kept, inclusive (a bare date: to the end of that day)
    min_importance: float = 0.0  # memories below it (0..1; missing counts as 0.5): low_importance
    max_examples: Optional[int] = None  # keep at most this many, best importance x time weight: over_cap
    half_life_days: float = 30.0  # time weight 2^(-age_days / half_life_days), used when a cap bites
    reference_date: Optional[str] = None  # ages count back from here (later memories: fresh); null: the newest memory
    type_share: dict[str, float] = field(default_factory=dict)  # most a type may fill: +...type_share.reflection=0.6


@dataclass
class DedupConfig:
    near_threshold: float = 0.8  # Jaccard similarity of word shingles at which two examples count as one
    shingle_words: int = 3  # words per shingle; shorter texts are one shingle


@dataclass
class WordLimitsConfig:
    # Longer fields are cut, at a sentence end where one is near. MetaHuman OS's own limits.
    instruction: int = 48  # a JSONL row's instruction
    input: int = 140  # the user's turn: a conversation's content, a JSONL input or user message
    output: int = 160  # the persona's answer


@dataclass
class DatasetConfig:
    source: str = MISSING  # sample: the bundled memories; metahuman: a MetaHuman OS folder; jsonl: a prepared file
    path: Optional[str] = MISSING  # folder or file to read (source metahuman/jsonl; null for sample); never written to
    user: Optional[str] = None  # profiles/<user>/ in a MetaHuman OS tree; null reads every profile and memory/
    persona: PersonaConfig = field(default_factory=PersonaConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    max_words: WordLimitsConfig = field(default_factory=WordLimitsConfig)
    # The question a non-conversation memory answers, per type; {name} is the persona, {date} the memory's day.
    templates: dict[str, str] = field(default_factory=lambda: {
        "inner_dialogue": "{name}, what was going through your mind on {date}?",
        "reflection": "{name}, what have you been reflecting on lately?",
        "reflection_summary": "{name}, what did your reflections come to around {date}?",
        "dream": "{name}, what did you dream on {date}?",
        "journal": "{name}, what did you write in your journal on {date}?",
        "observation": "{name}, what happened on {date}?",
        "audio": "{name}, what did you say on {date}?",
        "action": "{name}, what did you do on {date}?",
    })
    max_bad_fraction: float = 0.2  # fail when more than this share of the inputs is malformed
    max_file_bytes: int = 1_048_576  # a bigger memory file (or JSONL line) is malformed, never read whole
    workers: Optional[int] = None  # processes that read and convert memories; null: one per CPU core


@dataclass
class LoraConfig:
    r: int = 8  # adapter rank
    alpha: int = 16  # scaling numerator (alpha / r, or alpha / sqrt(r) with rslora)
    dropout: float = 0.0  # on the adapter's input; 0 lets Unsloth use its fast path
    target_modules: list[str] = field(default_factory=list)  # module names that get an adapter
    use_rslora: bool = False  # rank-stabilised scaling


@dataclass
class TrainConfig:
    backend: str = "auto"  # auto: unsloth when it imports, else transformers; or force one of them
    epochs: float = 1.0  # passes over the training split (when max_steps is 0)
    max_steps: int = 0  # stop after this many optimizer steps; 0 = use epochs
    learning_rate: float = 2e-4
    batch_size: int = 4  # per device
    grad_accum: int = 1  # gradient accumulation steps
    max_seq_length: int = 1024  # tokens per example, prompt included
    warmup_steps: int = 5
    seed: int = 3407
    optim: str = "adamw_8bit"  # CPU runs fall back to adamw_torch
    logging_steps: int = 1  # one progress event per this many steps
    eval_fraction: float = 0.1  # share of examples held out for eval, chosen by a hash of the example id


@dataclass
class PipelineConfig:
    # Ordered stages, keyed by name, each with a Hydra `_target_`: add one with
    # `+pipeline.stages.<name>._target_=pkg.Class`, drop one with `~pipeline.stages.<name>`.
    stages: dict[str, Any] = field(default_factory=dict)


@dataclass
class RemoteConfig:
    workdir: Optional[str] = None  # root for run folders on the pod; null: the provider's default
    python: Optional[str] = None  # interpreter on the pod; null: the provider's default
    script: Optional[str] = None  # training script to upload; null: remote_image/train_unsloth.py


@dataclass
class Config:
    provider: Any = MISSING
    gpu: GpuConfig = MISSING
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    lora: LoraConfig = MISSING
    train: TrainConfig = MISSING
    pipeline: PipelineConfig = MISSING
    remote: RemoteConfig = MISSING


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="lorapod_schema", node=Config)
    # Provider options differ in shape, so each brings its own schema. They live under schema/ so they
    # never show up as options of the provider group itself.
    cs.store(group="schema/provider", name="local", node=LocalProviderConfig)


register()

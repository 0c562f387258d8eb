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
    max_fetch_mb: float = 2048  # fetch refuses one file, or all of them together, over this many MB (2^20 bytes)
    detach: bool = False  # return once training has started; python -m engine.attach RUN_DIR picks it up


@dataclass
class RunPodProviderConfig:
    _target_: str = "engine.providers.runpod.RunPodProvider"
    name: str = "runpod"
    api_url: str = "https://api.runpod.io/v2"  # REST v2 base URL; tests point it at the emulator
    api_key_env: str = "RUNPOD_API_KEY"  # environment variable (or .env entry) holding the key; never the key itself
    cloud_order: list[str] = field(default_factory=lambda: ["COMMUNITY", "SECURE"])  # tried in order on no capacity
    disk_gb: int = 40  # container disk
    min_cuda: Optional[str] = "12.8"  # the host driver's CUDA floor: the image's torch is built for CUDA 12.8
    network_volume_id: Optional[str] = None  # a persistent network volume to mount at /workspace
    data_center_ids: list[str] = field(default_factory=list)  # restrict placement; empty: anywhere
    ready_timeout_s: float = 600.0  # RUNNING with a public TCP port 22 within this, or the pod is deleted
    public_ip_timeout_s: float = 90.0  # running this long without a public IP for SSH: delete, try the next candidate
    reconcile_s: float = 30.0  # after a create whose answer was lost, look for its pod in the (lagging) list this long
    poll_interval_s: float = 2.0  # between status reads while waiting: a pod bills while we look away
    request_timeout_s: float = 30.0  # per HTTP request
    api_retry_s: float = 120.0  # keep retrying a read or delete this long on network errors, 5xx and 429
    max_runtime_s: int = 21600  # the pod deletes itself after this long, whatever happens to us
    heartbeat_timeout_s: int = 900  # ... or when we stop touching its heartbeat for this long
    heartbeat_interval_s: float = 30.0  # how often we touch it while the run is alive
    watchdog_poll_s: float = 15.0  # how often the pod's watchdog checks its deadline and heartbeat
    # A variable (environment or .env) holding a RunPod key you made for the watchdog (a restricted key): tried
    # after the pod's own key, whose powers RunPod does not document. Sent to the pod in a root-only file.
    watchdog_api_key_env: Optional[str] = None
    require_deadline: bool = False  # stop before training when the pod's watchdog cannot verify its credentials
    workdir: str = "/workspace"  # remote.workdir when that is null
    max_fetch_mb: float = 2048  # fetch refuses one file, or all of them together, over this many MB (2^20 bytes)
    detach: bool = False  # return once training has started; python -m engine.attach RUN_DIR picks it up
    billing_wait_s: float = 20.0  # after terminate, wait at most this long for RunPod's (lagging) bill; 0: read once


@dataclass
class SshProviderConfig:
    _target_: str = "engine.providers.ssh.SshProvider"
    name: str = "ssh"
    host: str = MISSING  # a machine you already have; nothing is rented or deleted
    port: int = 22
    user: str = "root"
    key_path: Optional[str] = None  # private key for the login; null: ~/.ssh/id_ed25519 then id_rsa
    known_hosts: Optional[str] = None  # pin the host key from this file; null: ~/.ssh/known_hosts, else first contact
    # remote.workdir when that is null; null: $HOME/lorapod of provider.user, resolved at probe. Either is refused
    # when it or a folder above it is writable by others (a shared /tmp/lorapod belongs to whoever made it first)
    workdir: Optional[str] = None
    python: str = "python3"  # remote.python when that is null
    max_fetch_mb: float = 2048  # fetch refuses one file, or all of them together, over this many MB (2^20 bytes)
    detach: bool = False  # return once training has started; python -m engine.attach RUN_DIR picks it up


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
class ModelShapeConfig:
    # The model's architecture, as its config.json on Hugging Face states it (public facts, cited in each
    # conf/model/*.yaml): what engine/plan/memory.py sizes weights, LoRA and activations from
    vocab_size: int = 0  # rows of the embedding and of the logits
    hidden_size: int = 0  # width of the residual stream
    intermediate_size: int = 0  # width of the MLP (gate_proj, up_proj, down_proj)
    num_hidden_layers: int = 0  # decoder layers
    num_attention_heads: int = 0  # query heads
    num_key_value_heads: int = 0  # k/v heads (grouped-query attention); 0: as many as the query heads
    head_dim: int = 0  # per head; 0: hidden_size / num_attention_heads
    tie_word_embeddings: bool = False  # lm_head shares the embedding's weights


@dataclass
class ModelConfig:
    name: str = MISSING  # the config option's name
    source: str = "hub"  # hub: a Hugging Face id loaded on the pod; local: a folder on the pod; random: tiny test model
    id: Optional[str] = None  # Hugging Face id or pod-side folder (source hub/local)
    load_in_4bit: bool = False  # QLoRA on a GPU; ignored on CPU
    tiny: Optional[TinyModelConfig] = None  # shape of the random model (source random)
    ollama: Optional[str] = None  # the base model's name in Ollama's library (qwen3:8b), the export's FROM line
    shape: Optional[ModelShapeConfig] = None  # architecture facts for the plan's memory fit; null: not checked
    download_gb: float = 0.0  # what the pod downloads from the hub (GB, the repository's weight files); 0: nothing


@dataclass
class PersonaConfig:
    # Whose voice the adapter learns; used in instructions built from memories. MISSING in the schema, as
    # a `???` in a group's YAML cannot unset a schema default. null (dataset=metahuman): identity.name from
    # MetaHuman OS's persona/core.json (curation/persona.py); a value overrides it.
    name: Optional[str] = MISSING
    # {name}: the above; {style}: core.json's communication style as a sentence (appended when not placed)
    system_prompt: str = "You are {name}. Answer in your own voice, from your own memories."


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
    max_turns: int = 8  # exchanges per multi-turn example; a longer conversation is split into consecutive parts
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
    # Trackers the trainer reports to: tensorboard (event files in out/tensorboard/, fetched home), mlflow, wandb
    # (their own servers; credentials never go through lorapod: README, Trackers); empty or [none]: none
    report_to: list[str] = field(default_factory=list)


@dataclass
class PipelineConfig:
    # Ordered stages, keyed by name, each with a Hydra `_target_`: add one with
    # `+pipeline.stages.<name>._target_=pkg.Class`, drop one with `~pipeline.stages.<name>`.
    stages: dict[str, Any] = field(default_factory=dict)
    max_runtime_s: Optional[int] = None  # the most this pipeline keeps a pod (caps provider.max_runtime_s); null: no cap
    cheapest_first: bool = False  # rent the gpu option itself (no fallbacks), cheapest cloud first by list price


@dataclass
class PreflightConfig:
    train: bool = False  # also a short Unsloth run of the configured model (e.g. model=qwen3_0_6b) on the pod
    steps: int = 5  # optimizer steps of that run
    require_gpu: Optional[bool] = None  # "no GPU" on the GPU lines fails the preflight; null: when gpu.count > 0


@dataclass
class RemoteConfig:
    workdir: Optional[str] = None  # root for run folders on the pod; null: the provider's default
    python: Optional[str] = None  # interpreter on the pod; null: the provider's default
    script: Optional[str] = None  # training script to upload; null: remote_image/train_unsloth.py
    # Root of the training's caches (Hugging Face hub, Triton, Inductor, Unsloth's compiled modules), an absolute
    # path on the pod made mode 700: null takes the provider's default (runpod: <workdir>/.cache, on the network
    # volume when one is mounted, so the next run finds the model; ssh and local: none, your own caches are used).
    cache_dir: Optional[str] = None
    # Extra environment for the training process only, e.g. +remote.env.HF_HUB_OFFLINE=1; written into the
    # run's config, so never a secret (HF_TOKEN goes in a private file: README, Secrets).
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageConfig:
    name: str = MISSING  # the option's name: runpod (RunPod's PyTorch image), lorapod (your own build), unsloth
    repository: Optional[str] = None  # registry host and name, e.g. docker.io/runpod/pytorch; lorapod: one you own
    tag: Optional[str] = None  # null: the content hash of image.context, computed and pushed by the build stage
    context: Optional[str] = None  # folder with the Dockerfile, relative to the project; null: a published image
    ref: Optional[str] = None  # deploy exactly this (repo:tag or repo@sha256:...), build nothing; null: repository:tag
    python: Optional[str] = None  # the interpreter in the image; null: the venv probe installs image.requirements into
    # The training closure probe installs with uv into a venv keyed by its hash (on the network volume when one is
    # mounted, so the next run finds it ready); a path relative to the project. null: the image carries its stack.
    requirements: Optional[str] = None
    index_url: Optional[str] = None  # the package index that install uses; null: PyPI
    base_python: str = "3.12"  # the Python the closure's venv is made from: uv's --python (a version, or a pod path)
    install_timeout_s: float = 1800.0  # the closure's install (or a wait for another run's) fails after this
    ssh_key_env: list[str] = field(default_factory=lambda: ["PUBLIC_KEY", "SSH_PUBLIC_KEY"])  # vars holding our key
    ready_timeout_s: Optional[float] = None  # overrides provider.ready_timeout_s: how long this image may take to pull
    logs_host_keys: bool = False  # the image names its host keys in its log (engine/host_keys.py), so they are pinned


@dataclass
class BuildConfig:
    skip: bool = False  # trust that the image exists: no registry call, no docker (needs an explicit image.tag)
    platform: str = "linux/amd64"  # the pods' platform, passed to docker buildx build --platform
    registry_url: Optional[str] = None  # registry API base; null: image.repository's host (Docker Hub's for docker.io)
    timeout_s: float = 30.0  # per registry request


@dataclass
class ProbeConfig:
    timeout_s: float = 300.0  # keep trying to reach the pod's sshd this long after it reports ready


@dataclass
class RegistryConfig:
    # The local adapter registry (one JSON record per adapter; python -m engine.adapters), a folder relative to
    # the one run.py starts in, like runs/. A sweep's runs may share it: changes are made under a lock
    path: str = "adapters"


@dataclass
class GateConfig:
    # A new adapter becomes active only when its eval loss after training is below its eval loss before by at
    # least this much (and not worse than the active adapter's on the same eval split); otherwise: rejected.
    # 0.01 passes `python run.py` (tiny model: about 6.83 -> 6.78) and rejects a run that learnt nothing
    min_improvement: float = 0.01


@dataclass
class ExportConfig:
    ollama: bool = False  # write <run>/export/Modelfile and the adapter in a form Ollama loads (safetensors or GGUF)
    ollama_create: bool = False  # also `ollama create` the model and check it with `ollama show` (needs ollama on PATH)
    ollama_name: Optional[str] = None  # the Ollama model's name; null: lorapod-<persona>:<run id>
    # auto: the PEFT folder for Llama hub models (Ollama imports those as safetensors), GGUF LoRA otherwise
    # (Qwen3, and model=tiny, whose base is a GGUF made here); gguf or safetensors force one
    adapter_format: str = "auto"
    metahuman: bool = False  # install the registry's active adapter under <MetaHuman OS root>/out/adapters/<date>/
    metahuman_root: Optional[str] = None  # the MetaHuman OS root to install into; null: dataset.path (dataset=metahuman)


@dataclass
class BudgetConfig:
    # The most one run may spend, in USD: a plan whose high estimate exceeds it is refused before anything is
    # rented, a running pod is deleted when its spend reaches it, and the pod's own deadline is derived from it
    max_usd: Optional[float] = None
    sweep_max_usd: Optional[float] = None  # the most all jobs of one multirun may spend together (a ledger in its folder)


@dataclass
class PlanConfig:
    # Where finished runs are looked up for measured throughput (run-summary.json under it, multirun included),
    # relative to the folder run.py starts in, like hydra.run.dir's runs/
    runs_dir: str = "runs"
    # Trained tokens per second per GPU, by gpu option then model option: the table's starting guesses
    # (conf/plan/default.yaml says how each was reached); a measured run of the same pair replaces them
    tokens_per_s: dict[str, Any] = field(default_factory=dict)
    peak_tflops: dict[str, Any] = field(default_factory=dict)  # bf16 dense peak per gpu option, for pairs not in the table
    mfu: float = 0.15  # model FLOPs utilisation assumed for those pairs: tokens/s = mfu x peak / (6 x parameters)
    chars_per_token: float = 3.5  # dataset text to tokens (a guess on the low side: more tokens, dearer)
    template_tokens_per_message: int = 8  # chat-template tokens around each message
    spread_table: float = 2.0  # a table guess may be this many times off either way: the low-high range
    spread_measured: float = 1.25  # ... and a number this machine measured
    # Minutes from create to SSH, per image option: [low, high] (pull, start, and image=runpod's closure install)
    start_minutes: dict[str, Any] = field(default_factory=dict)
    download_mb_per_s: list[float] = field(default_factory=lambda: [300.0, 30.0])  # model download: [fast, slow]
    load_minutes: list[float] = field(default_factory=lambda: [0.3, 1.5])  # import and load, before the weights
    load_minutes_per_gb: list[float] = field(default_factory=lambda: [0.05, 0.25])  # ... plus this per GB of weights
    fetch_minutes: list[float] = field(default_factory=lambda: [0.2, 2.0])  # adapter home, and the delete
    vram_usable_fraction: float = 0.92  # the share of gpu.vram_gb the plan lets training fill (allocator slack)
    cuda_overhead_gb: float = 1.5  # CUDA context, cuBLAS workspaces and kernels, on every GPU


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
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    image: ImageConfig = MISSING
    build: BuildConfig = MISSING
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="lorapod_schema", node=Config)
    # Provider options differ in shape, so each brings its own schema. They live under schema/ so they
    # never show up as options of the provider group itself.
    cs.store(group="schema/provider", name="local", node=LocalProviderConfig)
    cs.store(group="schema/provider", name="runpod", node=RunPodProviderConfig)
    cs.store(group="schema/provider", name="ssh", node=SshProviderConfig)


register()

"""Check the whole composed config before any side effect, and report every problem at once.

Types were already checked by Hydra against engine.schema; here go the rules a type cannot say. Each
problem names its key and where the value came from (the command line or a conf/ file), so the fix is
one edit away. Nothing here touches the network: a bad config costs no API call. A provider or stage class
adds rules of its own with a static `check_config(cfg) -> [(key, rule), ...]`.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from curation.dates import bound
from curation.memory import CONVERSATION_TYPES, TYPES as MEMORY_TYPES
from curation.persona import resolve as resolve_persona
from curation.sources import profiles, root_of
from engine import closure, image
from engine.errors import ConfigError, DatasetError
from engine.pod_env import looks_secret

BACKENDS = ("auto", "unsloth", "transformers")
MODEL_SOURCES = ("hub", "local", "random")
DATASET_SOURCES = ("sample", "metahuman", "jsonl")
REPORTERS = ("tensorboard", "mlflow", "wandb", "none")  # train.report_to: what train_unsloth.py passes on
# Each tracker's packages, any one of which will do (as remote_image/train_unsloth.py's trackers() looks for them)
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}


def _origin(cfg: DictConfig, key: str) -> str:
    """Where a key's value was set: an override on the command line, or the group's YAML file."""
    if key.split(".", 1)[0] not in cfg:
        return ""  # not a config key (an environment variable, say)
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except Exception:  # composed outside a Hydra app (tests, scripts): no origin to report
        return ""
    for override in hc.overrides.task:
        if override.lstrip("+~").split("=", 1)[0] == key:
            if key.startswith("remote.env.") and looks_secret(key.split(".", 2)[2]):
                # refused as a secret (engine/pod_env.py): the error must not repeat its value
                return f" [command line: {override.split('=', 1)[0]}=…]"
            return f" [command line: {override}]"
    group = key.split(".", 1)[0]
    gpu = hc.runtime.choices.get("gpu")
    if group == "train" and gpu and _sets(_option_file(hc, "gpu", gpu), key):
        return f" [conf/gpu/{gpu}.yaml]"  # a GPU option's training presets win over conf/train/
    choice = hc.runtime.choices.get(group)
    return f" [conf/{group}/{choice}.yaml]" if choice else " [conf/config.yaml]"


def _option_file(hc, group: str, choice: str) -> Path | None:
    """The YAML file Hydra composed for a group's option: the first config source (search path order) holding it."""
    for source in hc.runtime.config_sources:
        if source.schema == "file" and (Path(source.path) / group / f"{choice}.yaml").is_file():
            return Path(source.path) / group / f"{choice}.yaml"
    return None


def _sets(path: Path | None, key: str) -> bool:
    """Whether a YAML file sets a dotted key."""
    if path is None:
        return False
    return OmegaConf.select(OmegaConf.load(path), key, default=None) is not None


def _import_target(target: str) -> object:
    module, _, attr = target.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _check_dataset(ds: DictConfig, need: Callable[[bool, str, str], None], missing: set[str]) -> None:
    """dataset.*: curation reads these once per memory and trusts them, so they are checked here, up front."""
    need(ds.source in DATASET_SOURCES, "dataset.source", f"must be one of {', '.join(DATASET_SOURCES)}")
    root = None
    if ds.source == "sample":
        root = root_of("sample", None)
    elif ds.source in ("metahuman", "jsonl") and "dataset.path" not in missing:
        root = Path(os.path.expanduser(ds.path)) if ds.path else None
        exists = root is not None and (root.is_file() if ds.source == "jsonl" else root.is_dir())
        need(exists, "dataset.path", "must be an existing " + ("file" if ds.source == "jsonl" else "folder"))
    if ds.user is not None and ds.source != "jsonl" and root is not None and root.is_dir():
        users = profiles(root)
        need(ds.user in users, "dataset.user", f"must be a profile under {root / 'profiles'} "
             f"({', '.join(users) or 'there is none'}), or null for all")
    need(0 <= ds.max_bad_fraction <= 1, "dataset.max_bad_fraction", "must be in [0, 1]")
    need(ds.max_file_bytes >= 1, "dataset.max_file_bytes", "must be >= 1")
    need(ds.workers is None or ds.workers >= 1, "dataset.workers", "must be >= 1, or null for one per CPU core")
    need(ds.max_turns >= 1, "dataset.max_turns", "must be >= 1 (exchanges per multi-turn example)")
    try:
        ds.persona.system_prompt.format(name="", style="")
        prompt_ok = True
    except (KeyError, IndexError, ValueError):
        prompt_ok = False
        need(False, "dataset.persona.system_prompt",
             "may only use the placeholders {name} and {style} (write {{ }} for braces)")
    if "dataset.persona.name" not in missing:
        name = ds.persona.name
        need(name is None or bool(name.strip()), "dataset.persona.name", "must not be empty (null: from persona/core.json)")
        if ds.source == "jsonl":
            need(name is not None, "dataset.persona.name", "is required with dataset.source=jsonl: a JSONL file "
                 "has no persona/core.json to read it from")
        elif prompt_ok and root is not None and root.is_dir():
            # The persona file is read here, not first in prepare, so a missing name costs nothing.
            try:
                resolve_persona(ds)
            except DatasetError as exc:
                need(False, "dataset.persona.name", f"{exc.message}; {(exc.hint or '').removesuffix('; nothing was rented')}")

    f = ds.filters
    for key, named in (("types", f.types), ("tag_exempt_types", f.tag_exempt_types), ("type_share", f.type_share)):
        unknown = [t for t in named if t not in MEMORY_TYPES]
        need(not unknown, f"dataset.filters.{key}", f"names unknown types {unknown}: MetaHuman OS has "
             f"{', '.join(MEMORY_TYPES)}")
    need(len(f.types) > 0, "dataset.filters.types", "must allow at least one type")
    need(f.min_content_chars >= 0, "dataset.filters.min_content_chars", "must be >= 0")
    need(0 <= f.min_importance <= 1, "dataset.filters.min_importance", "must be in [0, 1]")
    need(f.max_examples is None or f.max_examples >= 1, "dataset.filters.max_examples", "must be >= 1, or null")
    need(f.half_life_days > 0, "dataset.filters.half_life_days", "must be > 0")
    for kind, share in f.type_share.items():
        need(0 < share <= 1, f"dataset.filters.type_share.{kind}", "must be in (0, 1]")
    dates = {}
    for key in ("since", "until", "reference_date"):
        if f[key] is not None:
            try:
                dates[key] = bound(f[key], end=key == "until")
            except (ValueError, TypeError):
                need(False, f"dataset.filters.{key}", "must be an ISO date (2025-10-19) or date-time "
                     "(2025-10-19T14:30:00Z), or null")
    if "since" in dates and "until" in dates:
        need(dates["since"] <= dates["until"], "dataset.filters.until", "must not be before dataset.filters.since")

    need(0 < ds.dedup.near_threshold <= 1, "dataset.dedup.near_threshold", "must be in (0, 1]")
    need(ds.dedup.shingle_words >= 1, "dataset.dedup.shingle_words", "must be >= 1")
    for field_name in ("instruction", "input", "output"):
        need(ds.max_words[field_name] >= 1, f"dataset.max_words.{field_name}", "must be >= 1")
    for kind in f.types:
        if kind in CONVERSATION_TYPES or kind not in MEMORY_TYPES:
            continue
        key = f"dataset.templates.{kind}"
        template = ds.templates.get(kind)
        if template is None:
            need(False, key, f"is required: the question a {kind} memory answers (or drop {kind} from "
                 "dataset.filters.types)")
            continue
        try:
            template.format(name="", date="")
        except (KeyError, IndexError, ValueError):
            need(False, key, "may only use the placeholders {name} and {date} (write {{ and }} for braces)")


def _distribution(line: str) -> str | None:
    """The normalised (PEP 503) project name a requirements line installs; None for a comment or an option."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else None


def check_trackers(cfg: DictConfig, provider_cls) -> list[tuple[str, str]]:
    """train.report_to against the pod's closure, before anything is rented: a tracker whose package the
    closure lacks would stop the pod only after deploy and the closure's install, billed. Checked where the
    pod's packages are known, i.e. the provider deploys an image and probe installs image.requirements into
    it. With image.python or remote.python the image carries its own stack, which cannot be read from here:
    the run is not refused, and train_unsloth.py still stops before training when the package is missing."""
    wanted = [r for r in (cfg.train.get("report_to") or []) if r in TRACKER_PACKAGES]
    requirements = closure.requirements_file(cfg)
    if (not wanted or requirements is None or not requirements.is_file() or cfg.image.python
            or cfg.remote.python or not getattr(provider_cls, "uses_image", False)):
        return []
    installed = {_distribution(line) for line in requirements.read_text(encoding="utf-8").splitlines()}
    problems = []
    for name in wanted:
        packages = TRACKER_PACKAGES[name]
        if not {re.sub(r"[-_.]+", "-", p).lower() for p in packages} & installed:
            problems.append(("train.report_to", f"{name} needs the {packages[0]} package on the pod, and "
                             f"{cfg.image.requirements} (image.requirements, what probe installs there) has none: "
                             f"add {packages[0]}==<version> to that file (see remote_image/requirements.in for how "
                             f"to regenerate it), or drop {name} from train.report_to"))
    return problems


def validate(cfg: DictConfig) -> None:
    problems: list[tuple[str, str]] = []

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
            problems.append((key, f"{rule} (got {value!r})"))

    for key in OmegaConf.missing_keys(cfg):
        problems.append((key, f"is required: set it with {key}=..."))
    missing = {k for k, _ in problems}

    lora, train, model, ds = cfg.lora, cfg.train, cfg.model, cfg.dataset
    need(lora.r > 0, "lora.r", "must be > 0")
    need(lora.alpha > 0, "lora.alpha", "must be > 0")
    need(0 <= lora.dropout < 1, "lora.dropout", "must be in [0, 1)")
    need(len(lora.target_modules) > 0, "lora.target_modules", "must name at least one module")
    need(train.backend in BACKENDS, "train.backend", f"must be one of {', '.join(BACKENDS)}")
    need(train.learning_rate > 0, "train.learning_rate", "must be > 0")
    need(train.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(train.grad_accum >= 1, "train.grad_accum", "must be >= 1")
    need(train.max_seq_length >= 32, "train.max_seq_length", "must be >= 32")
    need(train.max_steps >= 0, "train.max_steps", "must be >= 0 (0 means: use train.epochs)")
    need(train.max_steps > 0 or train.epochs > 0, "train.epochs", "must be > 0 when train.max_steps is 0")
    need(train.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    need(train.logging_steps >= 1, "train.logging_steps", "must be >= 1")
    need(0 <= train.eval_fraction < 1, "train.eval_fraction", "must be in [0, 1)")
    reporters = list(train.get("report_to") or [])
    unknown = [r for r in reporters if r not in REPORTERS]
    need(not unknown, "train.report_to", f"{', '.join(map(str, unknown))} is not a tracker lorapod passes on: use "
                                         f"any of {', '.join(REPORTERS[:-1])} (e.g. 'train.report_to=[tensorboard]'), "
                                         "or [] for none")
    need("none" not in reporters or len(reporters) == 1, "train.report_to", "none cannot be combined with a tracker")
    need(cfg.gpu.count >= 0, "gpu.count", "must be >= 0: GPUs per pod, each trained on by one process (torchrun when "
         "> 1); with gpu=cpu, the number of CPU training processes (0 or 1: one)")
    need(model.source in MODEL_SOURCES, "model.source", f"must be one of {', '.join(MODEL_SOURCES)}")
    if model.source in ("hub", "local") and "model.id" not in missing:
        need(bool(model.id), "model.id", f"is required when model.source is {model.source}")
    if model.source == "random":
        need(model.tiny is not None, "model.tiny", "must give the random model's shape")
    _check_dataset(ds, need, missing)

    script = cfg.remote.script
    if script is not None:
        need(Path(script).is_file(), "remote.script", "must be an existing training script")

    stages = cfg.pipeline.stages
    need(len(stages) > 0, "pipeline.stages", "must list at least one stage")
    cap = cfg.pipeline.max_runtime_s
    need(cap is None or cap > 0, "pipeline.max_runtime_s", "must be > 0 seconds, or null for no cap")
    trains = False  # whether a stage of the pipeline is (or extends) stages.train.Train
    for name, node in stages.items():
        key = f"pipeline.stages.{name}._target_"
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if not target:
            problems.append((key, "is required: the importable class of the stage"))
            continue
        try:
            cls = _import_target(target)
        except (ImportError, AttributeError, ValueError) as exc:
            problems.append((key, f"cannot be imported ({exc}): check the module path and class name"))
            continue
        if not callable(getattr(cls, "run", None)):
            problems.append((key, f"{target} has no run(ctx) method"))
            continue
        problems.extend(getattr(cls, "check_config", lambda c: [])(cfg))
        trains = trains or any(f"{c.__module__}.{c.__qualname__}" == "stages.train.Train" for c in cls.__mro__)
    if cfg.provider.get("detach") and not trains:
        # Only the train stage detaches; preflight's few steps would be followed, and the pod marked detached.
        problems.append(("provider.detach", "is true, but the pipeline has no train stage to detach from: "
                         "set provider.detach=false, or use a pipeline that trains (pipeline=default)"))

    if "image" not in missing and "image.repository" not in missing:
        problems.extend(image.check_config(cfg))

    try:
        provider_cls = _import_target(cfg.provider._target_)
    except (ImportError, AttributeError, ValueError) as exc:
        problems.append(("provider._target_", f"cannot be imported ({exc})"))
    else:
        for key, rule in getattr(provider_cls, "check_config", lambda c: [])(cfg):
            problems.append((key, rule))
        if not {"image", "image.python", "image.requirements"} & missing:
            problems.extend(closure.check_config(cfg, provider_cls))
            if "train.report_to" not in {key for key, _ in problems}:
                problems.extend(check_trackers(cfg, provider_cls))

    if problems:
        raise ConfigError(
            [f"{key}: {rule}{_origin(cfg, key)}" for key, rule in problems],
            "fix these on the command line or in conf/; nothing was started and nothing was rented",
        )

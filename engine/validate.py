"""Check the whole composed config before any side effect, and report every problem at once.

Types were already checked by Hydra against engine.schema; here go the rules a type cannot say. Each
problem names its key and where the value came from (the command line or a conf/ file), so the fix is
one edit away. Nothing here touches the network: a bad config costs no API call. A provider or stage class
adds rules of its own with a static `check_config(cfg) -> [(key, rule), ...]`.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from engine import image
from engine.errors import ConfigError

BACKENDS = ("auto", "unsloth", "transformers")
MODEL_SOURCES = ("hub", "local", "random")
DATASET_SOURCES = ("sample", "metahuman", "jsonl")


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
            return f" [command line: {override}]"
    group = key.split(".", 1)[0]
    choice = hc.runtime.choices.get(group)
    return f" [conf/{group}/{choice}.yaml]" if choice else " [conf/config.yaml]"


def _import_target(target: str) -> object:
    module, _, attr = target.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def validate(cfg: DictConfig, extra_checks: list[Callable[[DictConfig], list[str]]] = ()) -> None:
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
    need(model.source in MODEL_SOURCES, "model.source", f"must be one of {', '.join(MODEL_SOURCES)}")
    if model.source in ("hub", "local") and "model.id" not in missing:
        need(bool(model.id), "model.id", f"is required when model.source is {model.source}")
    if model.source == "random":
        need(model.tiny is not None, "model.tiny", "must give the random model's shape")
    need(ds.source in DATASET_SOURCES, "dataset.source", f"must be one of {', '.join(DATASET_SOURCES)}")
    if ds.source in ("metahuman", "jsonl") and "dataset.path" not in missing:
        path = Path(os.path.expanduser(ds.path)) if ds.path else None
        need(path is not None and path.exists(), "dataset.path", "must be an existing folder or file")

    script = cfg.remote.script
    if script is not None:
        need(Path(script).is_file(), "remote.script", "must be an existing training script")

    stages = cfg.pipeline.stages
    need(len(stages) > 0, "pipeline.stages", "must list at least one stage")
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

    if "image" not in missing and "image.repository" not in missing:
        problems.extend(image.check_config(cfg))

    try:
        provider_cls = _import_target(cfg.provider._target_)
    except (ImportError, AttributeError, ValueError) as exc:
        problems.append(("provider._target_", f"cannot be imported ({exc})"))
    else:
        for key, rule in getattr(provider_cls, "check_config", lambda c: [])(cfg):
            problems.append((key, rule))

    for check in extra_checks:
        problems.extend(check(cfg))

    if problems:
        raise ConfigError(
            [f"{key}: {rule}{_origin(cfg, key)}" for key, rule in problems],
            "fix these on the command line or in conf/; nothing was started and nothing was rented",
        )

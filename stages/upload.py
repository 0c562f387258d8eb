"""upload: the dataset, config.json, the training script and its log follower to the pod, each checked by sha256 on arrival.

HF_TOKEN, when set, goes last and differently: from memory into a private file on the pod (engine/pod_secrets.py).
"""
from __future__ import annotations

import json
import posixpath
import time

from loguru import logger
from omegaconf import OmegaConf

from engine.context import PROJECT_ROOT, RunContext
from engine.errors import StageError
from engine.pod_secrets import place_token
from engine.stage import BaseStage

SCRIPT_NAME = "train_unsloth.py"
FOLLOWER_NAME = "follow_log.py"
FOLLOWER = PROJECT_ROOT / "remote_image" / FOLLOWER_NAME


def pod_config(ctx: RunContext) -> dict:
    """What train_unsloth.py reads: model, LoRA and training settings, and the data files' names."""
    cfg = ctx.cfg
    return {
        "run_id": ctx.run_id,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "lora": OmegaConf.to_container(cfg.lora, resolve=True),
        "train": OmegaConf.to_container(cfg.train, resolve=True),
        "data": {"train": "dataset/train.jsonl", "eval": "dataset/eval.jsonl"},
    }


class Upload(BaseStage):
    def run(self, ctx: RunContext) -> None:
        if ctx.transport is None:
            raise StageError("no connection to the pod", "the pipeline needs a probe stage before upload")
        config_path = ctx.run_dir / "config.json"
        config_path.write_text(json.dumps(pod_config(ctx), indent=2), encoding="utf-8")
        if not ctx.script_path.is_file():
            raise StageError(f"training script not found: {ctx.script_path}", "set remote.script to an existing file")
        files = [(ctx.dataset_dir / n, f"dataset/{n}") for n in ("train.jsonl", "eval.jsonl", "manifest.json")]
        files += [(config_path, "config.json"), (ctx.script_path, SCRIPT_NAME), (FOLLOWER, FOLLOWER_NAME)]
        started, total = time.monotonic(), 0
        for local, rel in files:
            if not local.is_file():
                raise StageError(f"{local} is missing", "the pipeline needs a prepare stage before upload")
            digest = ctx.transport.put(local, posixpath.join(ctx.remote_dir, rel))
            total += local.stat().st_size
            logger.debug(f"uploaded {rel} sha256 {digest}")
        ctx.state.outputs["upload"] = {"bytes": total, "seconds": round(time.monotonic() - started, 3)}
        logger.info(f"uploaded {len(files)} files ({total / 1e6:.2f} MB), sha256 verified")
        place_token(ctx)

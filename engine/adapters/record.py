"""A registry record for the adapter a run just brought home, built from the run's context and folder."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from engine.context import RunContext
from engine.hashing import sha256_file
from engine.secrets import redact
from engine.adapters.store import utc_now


def adapter_files(run_dir: Path) -> dict[str, dict]:
    """adapter/** with sha256 and size, keyed by the path relative to the run folder."""
    folder = run_dir / "adapter"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) if folder.is_dir() else []
    return {p.relative_to(run_dir).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}


def dataset_hashes(run_dir: Path) -> dict:
    """train/eval sha256 from the manifest prepare wrote; the eval one decides whether two adapters compare."""
    try:
        manifest = json.loads((run_dir / "dataset" / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"train_sha256": None, "eval_sha256": None, "examples": None}
    sha = manifest.get("sha256") or {}
    return {"train_sha256": sha.get("train.jsonl"), "eval_sha256": sha.get("eval.jsonl"),
            "examples": {"train": manifest.get("train"), "eval": manifest.get("eval")}}


def training_result(ctx: RunContext) -> dict:
    result = ctx.state.outputs.get("result")
    if result:
        return result
    try:  # a pipeline whose fetch did not hand it over: the file it brought home
        return json.loads((ctx.run_dir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def resolved_config(ctx: RunContext) -> dict:
    """The composed config, resolved. It holds secrets by name only (provider.api_key_env); a value that
    still looks like a known secret is redacted all the same."""
    text = json.dumps(OmegaConf.to_container(ctx.cfg, resolve=True), default=str)
    return json.loads(redact(text))


def build(ctx: RunContext) -> dict:
    from engine import summary

    cfg, result = ctx.cfg, training_result(ctx)
    return {
        "id": ctx.run_id,
        "created_at": utc_now(),
        "status": None,  # the gate decides
        "reason": None,
        "base_model": {"name": cfg.model.name, "id": cfg.model.get("id"), "source": cfg.model.get("source")},
        "config": resolved_config(ctx),
        "dataset": dataset_hashes(ctx.run_dir),
        "eval_loss_before": result.get("eval_loss_before"),
        "eval_loss_after": result.get("eval_loss_after"),
        "train_loss": result.get("train_loss"),
        "steps": result.get("steps"),
        "cost": {"estimate_usd": summary.build(ctx)["cost_usd_estimate"],
                 "actual_usd": (ctx.state.outputs.get("cost") or {}).get("actual_usd")},
        "run_dir": str(ctx.run_dir),
        "files": adapter_files(ctx.run_dir),
        "history": [],
    }

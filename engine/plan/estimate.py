"""Minutes per phase and dollars per GPU candidate: the plan stages/plan.py prints and engine/check.py quotes.

Billed time is everything from the create to the delete, so every phase counts: the start (image pull, and
for image=runpod the closure install at probe), the model's download, its load, the training steps (and the
eval before and after), the fetch and the delete. Each phase is a [low, high] range; the dollars are the
minutes times the candidate's gpu.price_per_hour x gpu.count. The low end is the cheapest candidate's low, the
high end the dearest candidate's high: capacity decides which one a run gets.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import OmegaConf

from engine.context import PROJECT_ROOT
from engine.plan import memory, throughput

RENTING = ("runpod",)  # providers that rent a pod (fallbacks, image pulls); ssh and local use a machine you have


def gpu_options() -> dict[str, dict]:
    """Every conf/gpu/*.yaml by name (the `gpu:` node of the @package _global_ ones)."""
    out = {}
    for path in sorted((PROJECT_ROOT / "conf" / "gpu").glob("*.yaml")):
        node = OmegaConf.load(path)
        node = node.gpu if "gpu" in node else node
        out[path.stem] = OmegaConf.to_container(node, resolve=True)
    return out


def candidates(cfg) -> list[dict]:
    """The gpu option and its fallbacks, as the provider will try them (pipeline.cheapest_first: the gpu alone)."""
    first = OmegaConf.to_container(cfg.gpu, resolve=True)
    if cfg.pipeline.get("cheapest_first") or cfg.provider.name not in RENTING:
        return [first]
    options = gpu_options()
    return [first] + [options[name] for name in cfg.gpu.fallbacks if name in options]


def dataset_stats(dataset_dir: Path, cfg) -> dict | None:
    """Example counts from the prepared manifest, and tokens per training example estimated from train.jsonl."""
    manifest = dataset_dir / "manifest.json"
    if not manifest.is_file():
        return None
    m = json.loads(manifest.read_text(encoding="utf-8"))
    chars = messages = rows = 0
    train = dataset_dir / "train.jsonl"
    if train.is_file():
        with train.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    turns = json.loads(line).get("messages") or []
                    rows += 1
                    messages += len(turns)
                    chars += sum(len(str(t.get("content") or "")) for t in turns)
    per = (chars / float(cfg.plan.chars_per_token) + messages * int(cfg.plan.template_tokens_per_message)) / rows \
        if rows else float(cfg.train.max_seq_length)
    return {"train": int(m["train"]), "eval": int(m["eval"]),
            "tokens_per_example": round(min(per, float(cfg.train.max_seq_length)), 1)}


def training_steps(cfg, train_examples: int | None) -> int | None:
    """Optimizer steps: train.max_steps, else ceil(examples x epochs / examples per step); None when unknown."""
    stages = cfg.pipeline.stages
    if "preflight" in stages:
        return int(cfg.preflight.steps) if cfg.preflight.train else 0
    if int(cfg.train.max_steps) > 0:
        return int(cfg.train.max_steps)
    if train_examples is None:
        return None
    per_step = int(cfg.train.batch_size) * int(cfg.train.grad_accum) * max(1, int(cfg.gpu.count))
    return math.ceil(train_examples * float(cfg.train.epochs) / per_step)


def _fixed_phases(cfg) -> list[dict]:
    p = cfg.plan
    renting = cfg.provider.name in RENTING
    if renting:
        lo, hi = (p.start_minutes or {}).get(cfg.image.name, [2.0, 15.0])
        start = {"phase": "start", "low": lo, "high": hi, "source": f"table: image={cfg.image.name} (pull, start"
                 + (", closure install" if cfg.image.requirements and not cfg.image.python else "") + ")"}
    else:
        start = {"phase": "start", "low": 0.0, "high": 0.5, "source": f"provider={cfg.provider.name}: nothing pulled"}
    gb = float(cfg.model.get("download_gb") or 0) if cfg.model.source == "hub" else 0.0
    fast, slow = (float(x) for x in p.download_mb_per_s)
    cached = bool(cfg.provider.get("network_volume_id")) or not renting  # a cache may already hold it
    download = {"phase": "download", "low": 0.0 if cached else gb * 1000 / fast / 60, "high": gb * 1000 / slow / 60,
                "source": f"{gb:g} GB at {fast:g}-{slow:g} MB/s" + (" (maybe cached)" if cached and gb else "")
                if gb else f"model.source={cfg.model.source}: nothing downloaded"}
    load = {"phase": "load", "low": float(p.load_minutes[0]) + gb * float(p.load_minutes_per_gb[0]),
            "high": float(p.load_minutes[1]) + gb * float(p.load_minutes_per_gb[1]), "source": "table (a guess)"}
    return [start, download, load]


def plan(cfg, stats: dict | None, runs_dir: Path | None = None) -> dict | None:
    """The plan as a dict (ctx.state.outputs["plan"], run-summary.json's "plan"); None when the number of steps is
    unknown (no prepared dataset and no train.max_steps)."""
    steps = training_steps(cfg, stats["train"] if stats else None)
    if steps is None:
        return None
    runs_dir = Path(runs_dir or cfg.plan.runs_dir)
    tokens_per_example = stats["tokens_per_example"] if stats else float(cfg.train.max_seq_length)
    eval_examples = stats["eval"] if stats and "preflight" not in cfg.pipeline.stages else 0
    process_tokens = int(cfg.train.batch_size) * int(cfg.train.grad_accum) * tokens_per_example
    fixed = _fixed_phases(cfg)
    fetch = {"phase": "fetch", "low": float(cfg.plan.fetch_minutes[0]), "high": float(cfg.plan.fetch_minutes[1]),
             "source": "table (a guess)"}
    rows, options = [], None
    for gpu in candidates(cfg):
        count = max(1, int(gpu.get("count") or 1))
        rate = throughput.rate(cfg, str(gpu["name"]), runs_dir)
        spread = float(cfg.plan.spread_measured if rate and rate.source.startswith("measured")
                       else cfg.plan.spread_table)
        if rate is None:  # no number anywhere: one s/step per 1k tokens, and say so
            rate = throughput.Rate(1000.0, "no table entry (1000 tokens/s assumed)")
        s_step = process_tokens / rate.tokens_per_s
        # eval: a forward pass (a third of a training step's FLOPs) over the eval split, before and after
        eval_min = 2 * eval_examples * tokens_per_example / count / (3 * rate.tokens_per_s) / 60
        train_min = steps * s_step / 60 + eval_min
        train = {"phase": "train", "low": train_min / spread, "high": train_min * spread,
                 "source": f"{steps} steps x {s_step:.2f} s/step ({rate.source})"
                 + (f" + eval of {eval_examples} x 2" if eval_examples else "")}
        phases = fixed + [train, fetch]
        lo, hi = sum(p["low"] for p in phases), sum(p["high"] for p in phases)
        # The configured price for every provider, as engine/budget.py counts it: one rule, so a budget that
        # stops a local or ssh run without the plan still stops it with the plan (gpu=cpu costs $0).
        price = float(gpu.get("price_per_hour") or 0) * count
        fit = memory.fit(cfg, gpu)
        row = {"gpu": str(gpu["name"]), "price_per_hour": round(price, 4), "minutes_low": round(lo, 2),
               "minutes_high": round(hi, 2), "usd_low": round(lo / 60 * price, 4),
               "usd_high": round(hi / 60 * price, 4), "s_per_step": round(s_step, 3),
               "throughput_source": rate.source, "fits": fit.fits if fit else None,
               "memory": fit.as_dict() if fit else None, "phases": [{**p, "low": round(p["low"], 2),
                                                                    "high": round(p["high"], 2)} for p in phases]}
        if fit and not fit.fits:
            options = options or gpu_options()
            row["remedies"] = memory.remedies(cfg, gpu, options)
        rows.append(row)
    first = rows[0]
    return {
        "usd_low": min(r["usd_low"] for r in rows), "usd_high": max(r["usd_high"] for r in rows),
        "minutes_low": min(r["minutes_low"] for r in rows), "minutes_high": max(r["minutes_high"] for r in rows),
        "max_price_per_hour": max(r["price_per_hour"] for r in rows),
        "candidates": rows, "fits": first["fits"] is not False, "steps": steps,
        "examples": ({"train": stats["train"], "eval": stats["eval"], "tokens_per_example": tokens_per_example}
                     if stats else None),
        "examples_per_step": int(cfg.train.batch_size) * int(cfg.train.grad_accum) * max(1, int(cfg.gpu.count)),
        "budget_usd": cfg.budget.max_usd,
    }


def table(p: dict) -> list[str]:
    """The plan as console lines."""
    first = p["candidates"][0]
    ex = p["examples"]
    head = (f"plan: {ex['train']} train / {ex['eval']} eval examples (~{ex['tokens_per_example']:.0f} tokens each) -> "
            if ex else "plan: ") + f"{p['steps']} steps of {p['examples_per_step']} examples"
    lines = [head, f"  {'phase':<9}{'minutes':>13}   source ({first['gpu']})"]
    for ph in first["phases"]:
        lines.append(f"  {ph['phase']:<9}{ph['low']:>6.1f}-{ph['high']:<6.1f}   {ph['source']}")
    lines.append(f"  {'gpu':<11}{'$/h':>6}  {'memory (GiB)':<22}{'minutes':>13}  {'USD':>13}")
    for r in p["candidates"]:
        m = r["memory"]
        mem = "not checked" if m is None else \
            f"{'fits' if m['fits'] else 'DOES NOT FIT'} {m['need_gb']:.1f}/{m['usable_gb']:.1f}"
        lines.append(f"  {r['gpu']:<11}{r['price_per_hour']:>6.2f}  {mem:<22}{r['minutes_low']:>6.1f}-"
                     f"{r['minutes_high']:<6.1f}  ${r['usd_low']:.2f}-${r['usd_high']:.2f}")
    budget = p.get("budget_usd")
    lines.append(f"  total: ${p['usd_low']:.2f}-${p['usd_high']:.2f}, {p['minutes_low']:.0f}-{p['minutes_high']:.0f} min"
                 + (f"; budget.max_usd ${budget:g}" if budget is not None else "; no budget.max_usd set"))
    return lines

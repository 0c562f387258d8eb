"""plan: before anything is rented, what the run will take and cost, and whether it fits the GPU.

After prepare (the manifest gives the example counts; train.jsonl the tokens per example), before build and
deploy. Prints the plan as a table (console and run.log), keeps it in state.json and run-summary.json ("plan",
the shared contract: usd_low/high, minutes_low/high, max_price_per_hour, candidates, fits), and refuses, exit 2:
- a run whose training does not fit the GPU's memory (already at validation, before prepare: check_config);
- a run whose high estimate is over budget.max_usd.
`pipeline=plan` (prepare + plan) prints it and stops: no API key, nothing rented. The arithmetic is engine/plan/.
"""
from __future__ import annotations

from pathlib import Path

from loguru import logger
from omegaconf import OmegaConf

from engine.context import RunContext
from engine.errors import ConfigError, StageError
from engine.plan import estimate, memory
from engine.stage import BaseStage


def _fit_problem(cfg) -> list[tuple[str, str]]:
    gpu = OmegaConf.to_container(cfg.gpu, resolve=True)
    fit = memory.fit(cfg, gpu)
    if fit is None or fit.fits:
        return []
    parts = ", ".join(f"{k} {v:.1f}" for k, v in fit.parts.items())
    fixes = memory.remedies(cfg, gpu, estimate.gpu_options())
    t = cfg.train
    return [("train.batch_size", f"training model={cfg.model.name} on gpu={fit.gpu} needs ~{fit.need_gb:.1f} GiB per GPU "
             f"({parts}) at train.batch_size={t.batch_size} x train.max_seq_length={t.max_seq_length}, "
             f"model.load_in_4bit={str(cfg.model.load_in_4bit).lower()}, train.backend={t.backend}; the "
             f"{fit.vram_gb:g} GB card allows {fit.usable_gb:.1f} (plan.vram_usable_fraction): set "
             + (" or ".join(fixes) if fixes else "a smaller model") + " (engine/plan/memory.py explains the sums)")]


class Plan(BaseStage):
    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        p, problems = cfg.plan, []
        for key in ("spread_table", "spread_measured"):
            if p[key] < 1:
                problems.append((f"plan.{key}", f"must be >= 1: the high end is the estimate times it (got {p[key]})"))
        if not 0 < p.vram_usable_fraction <= 1:
            problems.append(("plan.vram_usable_fraction", f"must be in (0, 1] (got {p.vram_usable_fraction})"))
        if p.chars_per_token <= 0 or p.mfu <= 0:
            problems.append(("plan.chars_per_token" if p.chars_per_token <= 0 else "plan.mfu", "must be > 0"))
        for key in ("download_mb_per_s", "load_minutes", "load_minutes_per_gb", "fetch_minutes"):
            values = list(p[key])
            if len(values) != 2 or min(values) < 0 or (key == "download_mb_per_s" and min(values) <= 0):
                problems.append((f"plan.{key}", f"must be two numbers [low, high], >= 0 (got {values})"))
        for name, pair in (p.start_minutes or {}).items():
            if len(pair) != 2 or min(pair) < 0:
                problems.append((f"plan.start_minutes.{name}", f"must be [low, high] minutes, >= 0 (got {list(pair)})"))
        if problems:  # the sums below use these numbers
            return problems
        return _fit_problem(cfg)

    def run(self, ctx: RunContext) -> None:
        cfg = ctx.cfg
        stats = estimate.dataset_stats(ctx.dataset_dir, cfg)
        plan = estimate.plan(cfg, stats, Path(cfg.plan.runs_dir))
        if plan is None:
            raise StageError("the plan needs the dataset's size and there is no prepared dataset",
                             "list prepare before plan in pipeline.stages, or set train.max_steps")
        for line in estimate.table(plan):
            logger.info(line)
        for row in plan["candidates"][1:]:
            if row["fits"] is False:
                logger.warning(f"fallback gpu={row['gpu']} may run out of memory at these settings "
                               f"(~{row['memory']['need_gb']:.1f} of {row['memory']['usable_gb']:.1f} GiB): "
                               + (f"{' or '.join(row.get('remedies') or [])} would fit it; " if row.get("remedies") else "")
                               + "or drop it from gpu.fallbacks")
        ctx.state.outputs["plan"] = plan
        ctx.save()
        budget = cfg.budget.max_usd
        if budget is not None and plan["usd_high"] > budget:
            first = plan["candidates"][0]
            raise ConfigError(
                [f"budget.max_usd: the plan's high estimate ${plan['usd_high']:.4f} ({plan['minutes_high']:.0f} min at up "
                 f"to ${plan['max_price_per_hour']:.2f}/h) is over the budget ${budget:g}; nothing was rented"],
                "raise budget.max_usd, or train less (train.max_steps, train.epochs; "
                f"now {plan['steps']} steps at ~{first['s_per_step']:.2f} s/step), or pick a cheaper gpu= "
                "(or gpu.fallbacks=[] to leave out a dearer fallback)")

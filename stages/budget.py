"""budget and settle: the run's spend limit, and the sweep's ledger (issue 14, items 2 and 3).

`budget` (after plan, before anything is rented): in a multirun with budget.sweep_max_usd, reserve this job's
high estimate in <sweep dir>/budget-ledger.json (engine/sweep/ledger.py); a job whose estimate exceeds what is
left is refused (status "refused", exit code 2) before it rents anything. Then start engine/budget.py's watcher,
which stops the run when its spend reaches its limit: budget.max_usd, or the reservation when that is less.

`settle` (always, after cost): replace the reservation by what the job cost: the provider's bill when it is
known (cost_usd_actual), else our estimate (billed time x price); 0 for a job that never rented. A pod still
up (provider.detach) keeps the whole reservation: it bills on, held to it by its own deadline. Its line is
run-summary.json's "budget": {limit_usd, spent_usd, source, ...}.

The estimate reserved is the plan's usd_high (stages/plan.py). Without a plan: the dearest price x the pod's
runtime cap (provider.max_runtime_s, pipeline.max_runtime_s); without a cap, all that is left. Either way at
most budget.max_usd, which the run cannot spend past.
"""
from __future__ import annotations

from pathlib import Path

from loguru import logger

from engine import budget
from engine.context import RunContext
from engine.errors import StageError
from engine.stage import BaseStage
from engine.sweep import folder as sweep_dir, ledger

_watchers: dict[str, budget.Watcher] = {}  # by run id: started by budget, stopped by settle or at terminate


class BudgetRefused(StageError):
    """The sweep's budget has no room left for this job's estimate; nothing was rented."""

    exit_code = 2


def _job_key(ctx: RunContext, sweep: Path) -> str:
    try:
        return str(ctx.run_dir.relative_to(sweep))
    except ValueError:
        return ctx.run_id


def estimate_usd(ctx: RunContext) -> tuple[float | None, str]:
    """The most this job is expected to spend, and where that figure comes from."""
    max_usd = ctx.cfg.budget.get("max_usd")
    plan = ctx.state.outputs.get("plan") or {}
    if plan.get("usd_high") is not None:
        found, source = float(plan["usd_high"]), "the plan's high estimate"
    else:
        price, whose = budget.dearest_price(ctx)
        caps = [c for c in (ctx.cfg.provider.get("max_runtime_s"), ctx.cfg.pipeline.get("max_runtime_s")) if c]
        if caps:
            found, source = price * min(caps) / 3600, f"{whose} x the pod's runtime cap ({min(caps)}s)"
        else:
            found, source = None, "no plan and no runtime cap"
    if max_usd is not None and (found is None or found > float(max_usd)):
        return float(max_usd), "budget.max_usd (the most the run may spend)"
    return found, source


class Budget(BaseStage):
    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        problems = []
        for key in ("max_usd", "sweep_max_usd"):
            value = cfg.budget.get(key)
            if value is not None and value < 0:
                problems.append((f"budget.{key}", f"must be >= 0 USD, or null for no limit (got {value})"))
        return problems

    def run(self, ctx: RunContext) -> None:
        line = budget.record(ctx)
        sweep_max = ctx.cfg.budget.get("sweep_max_usd")
        sweep = sweep_dir()
        if sweep_max is not None and sweep is None:
            logger.info("budget.sweep_max_usd applies to a multirun (python run.py -m ...); this single run has "
                        "only budget.max_usd")
        if sweep_max is not None and sweep is not None:
            self._reserve(ctx, line, sweep, float(sweep_max))
        watcher = budget.watch(ctx)
        if watcher is not None:
            _watchers[ctx.run_id] = watcher

    def _reserve(self, ctx: RunContext, line: dict, sweep: Path, sweep_max: float) -> None:
        path = ledger.path_for(sweep)
        job = _job_key(ctx, sweep)
        estimate, source = estimate_usd(ctx)
        got = ledger.reserve(path, job, estimate, sweep_max, run_id=ctx.run_id, run_dir=str(ctx.run_dir))
        line.update(ledger=str(path), job=job, estimate_usd=estimate, estimate_source=source)
        said = got.describe(sweep_max)
        if not got.ok:
            ctx.state.status = "refused"
            want = f"${estimate:.4f} ({source})" if estimate is not None else "an unbounded amount"
            raise BudgetRefused(f"refused before renting: this job may spend {want}, more than is left of the "
                                f"sweep's budget ({said})",
                                "raise budget.sweep_max_usd, or make the jobs cheaper (a smaller gpu, fewer steps)")
        line["reserved_usd"] = got.reserved_usd
        ctx.save()
        logger.info(f"budget: reserved ${got.reserved_usd:.4f} for job {job} in {path} ({said})")


def spent(ctx: RunContext) -> tuple[float, str]:
    """What the run cost: the provider's bill when known, else our estimate; 0 when nothing was rented."""
    actual = (ctx.state.outputs.get("cost") or {}).get("actual_usd")
    if actual is not None:
        return float(actual), "the provider's bill"
    if budget.billed_since(ctx) is None:
        return 0.0, "nothing was rented"
    price, whose = budget.price_per_hour(ctx)
    seconds = budget.billed_seconds(ctx)
    return seconds / 3600 * price, f"estimate: {seconds:.0f}s x ${price:.2f}/h ({whose})"


class Settle(BaseStage):
    always = True

    def run(self, ctx: RunContext) -> None:
        watcher = _watchers.pop(ctx.run_id, None)
        if watcher is not None:
            watcher.stop()
        line = budget.record(ctx)
        if ctx.state.status == "refused":
            usd, source = 0.0, "refused before renting"
        else:
            usd, source = spent(ctx)
        line.setdefault("limit_usd", None)  # null: nothing limited this run
        line.update(spent_usd=round(usd, 6), source=source)
        pod = ctx.state.pod or {}
        if pod and not pod.get("terminated") and "pod_terminated" not in ctx.state.marks:
            # Still billing after a delete that failed (a detached run never gets here: the runner stops before
            # settle): the job keeps its whole reservation, which the pod's deadline holds it to, until
            # engine.attach deletes the pod and runs cost and settle again.
            line["source"] = f"so far ({source}); pod {pod.get('id')} is still up, so its reservation stays"
            ctx.save()
            return
        if line.get("ledger") and ctx.state.status != "refused":
            ledger.settle(Path(line["ledger"]), line["job"], usd, source)
            logger.info(f"budget: job {line['job']} settled at ${usd:.4f} ({source})")
        ctx.save()

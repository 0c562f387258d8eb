"""cost: what the pod really cost, next to what we estimated. An always-stage, right after terminate.

The estimate (run-summary.json `cost_usd_estimate`) is our own clock times the list price. The bill is the
provider's: a provider with a `billed_usd(pod, since) -> Bill | None` verb (runpod: GET /v2/billing/pods) is
asked for it. Billing lags (shared/reference/runpod.md), and may catch up in batches, so a bill that stopped
changing can still be a stale, partial one. A figure is taken as the actual cost only when it is final by every
sign we can read: two reads in a row agree, its latest record ends at or after the pod's deletion (it covers
the whole life), and it is at least FINAL_SHARE of the estimate. Otherwise the actual cost is null and the note
says what the bill showed so far ("billed so far: $X").

Best effort: nothing here fails the run. local and ssh run on your own machine, which no provider bills:
their actual cost is null with source "local" / "ssh".

ctx.state.outputs["cost"] = {"actual_usd": float | None, "source": str, "note": str}; run-summary.json shows
actual_usd as `cost_usd_actual`, and the adapter registry reads it from there.
"""
from __future__ import annotations

import time

from loguru import logger

from engine import summary
from engine.context import RunContext
from engine.providers.base import current_pod
from engine.stage import BaseStage

LAG_NOTE = "billing not available yet (RunPod's billing lags)"
# A bill below this share of our own estimate is still catching up. Our clock starts after the create answered
# and ends after the delete answered, so a whole-life bill is about the estimate or more (RunPod's clock starts
# first); a small share stays for clock and rounding differences.
FINAL_SHARE = 0.9


def _usd(value: float) -> str:
    return f"${value:.4f}"


def _estimate_usd(ctx: RunContext) -> float:
    seconds = summary.billed_seconds(ctx) or 0.0
    return seconds / 3600 * float((ctx.state.pod or {}).get("price_per_hour") or 0.0)


def _not_final(bill, ctx: RunContext) -> str | None:
    """Why this bill (two equal reads) is not yet the whole life's, or None when it is."""
    deleted = ctx.state.marks.get("pod_terminated")
    if deleted is not None and (bill.covered_until is None or bill.covered_until < deleted):
        return "its records end before the pod was deleted"
    estimate = _estimate_usd(ctx)
    if bill.amount_usd < FINAL_SHARE * estimate:
        return f"under {FINAL_SHARE:.0%} of the estimated {_usd(estimate)}"
    return None


def read_bill(ctx: RunContext, billed_usd) -> dict:
    """Poll the provider's bill until it is final (see the module's docstring) or provider.billing_wait_s is
    spent."""
    settings = ctx.cfg.provider
    wait_s = float(settings.get("billing_wait_s", 0) or 0)
    if ctx.state.status == "interrupted":
        wait_s = 0.0  # Ctrl-C means stop: one read, no waiting (this stage is shielded from a second Ctrl-C)
    interval = max(0.1, float(settings.get("poll_interval_s", 2.0)))
    pod = current_pod(ctx)
    since = ctx.state.marks.get("pod_created") or ctx.state.started_at
    source = f"{ctx.provider.name} billing"
    deadline = time.monotonic() + wait_s
    previous: float | None = None
    why = "still changing"
    while True:
        left = deadline - time.monotonic()
        # Each read's own retries (5xx, 429) stay inside the wait, with at least a moment for one attempt.
        bill = billed_usd(pod, since, retry_for_s=max(1.0, left))
        amount = bill.amount_usd if bill is not None else None
        if amount is not None and (wait_s <= 0 or amount == previous):
            why = _not_final(bill, ctx)
            if why is None:
                note = ("billed, as RunPod's records show it" if wait_s > 0 else
                        "read once (provider.billing_wait_s=0); its records cover the pod's whole life")
                return {"actual_usd": amount, "source": source, "note": note}
        if wait_s <= 0:
            note = (f"billed so far: {_usd(amount)} ({why}); provider.billing_wait_s=0 did not wait for the rest"
                    if amount is not None else f"{LAG_NOTE}; provider.billing_wait_s=0 did not wait for it")
            return {"actual_usd": None, "source": source, "note": note}
        if amount != previous:
            why = "still changing"
        previous = amount
        left = deadline - time.monotonic()
        if left <= 0:
            so_far = f"; billed so far: {_usd(amount)}, {why}" if amount is not None else ""
            return {"actual_usd": None, "source": source,
                    "note": f"{LAG_NOTE}{so_far}; waited {wait_s:g}s (provider.billing_wait_s); see RunPod's console"}
        time.sleep(min(interval, left))


class Cost(BaseStage):
    always = True

    def run(self, ctx: RunContext) -> None:
        estimate = summary.build(ctx)["cost_usd_estimate"]
        provider = ctx.provider
        billed_usd = getattr(provider, "billed_usd", None)
        if not ctx.state.pod:
            ctx.state.outputs["cost"] = {"actual_usd": None, "source": None, "note": "no pod was created"}
            return
        if billed_usd is None:
            name = getattr(provider, "name", "provider")
            ctx.state.outputs["cost"] = {"actual_usd": None, "source": name,
                                         "note": "your own machine: no provider bills it"}
            logger.debug(f"cost: {name} runs on your own machine, nothing billed")
            return
        if not ctx.state.pod.get("terminated"):
            # A pod still up bills on: its bill is not final, and the engine must get on with deleting it.
            ctx.state.outputs["cost"] = {"actual_usd": None, "source": f"{provider.name} billing",
                                         "note": "the pod was not confirmed deleted: no final bill to read"}
            logger.warning(f"cost: the pod was not confirmed deleted; estimated so far {_usd(estimate)}")
            return
        try:
            cost = read_bill(ctx, billed_usd)
        except Exception as exc:  # best effort: a bill we cannot read never fails a run
            cost = {"actual_usd": None, "source": f"{provider.name} billing",
                    "note": f"could not read the bill: {exc}"}
        ctx.state.outputs["cost"] = cost
        ctx.save()
        if cost["actual_usd"] is not None:
            logger.info(f"cost: estimated {_usd(estimate)}, billed {_usd(cost['actual_usd'])}")
        else:
            logger.info(f"cost: {cost['note']}; estimated {_usd(estimate)}")

"""What a run may spend and what it has spent, and the watcher that stops the run when the two meet.

The limit is budget.max_usd, or what the sweep ledger reserved for this job when that is less
(stages/budget.py puts it in ctx.state.outputs["budget"]). Spend is billed time times a price: billed from the
moment the pod was requested (RunPod's clock starts before its answer, so ours starts before the create is
sent), at the pod's own price once it exists and, before that, the dearest price it may get (the plan's, or
the gpu option's and its fallbacks', x gpu.count). The same figures bound the pod's own deadline
(engine/deadline.py), so even a dead laptop cannot spend past the limit.

When spend reaches the limit, less what fetching the adapter and deleting the pod will cost (plan.fetch_minutes),
in a stage before fetch, the watcher thread interrupts the main thread with engine.signals.STOP; the
running stage fails with BudgetReached (a StageError: the run is failed, not interrupted, so a sweep goes on)
and the always-stages delete the pod. Signals are honoured as Ctrl-C is: never inside a create (deferred) or a
cleanup (shielded).
"""
from __future__ import annotations

import signal
import threading
import time

from loguru import logger

from engine import signals
from engine.context import PROJECT_ROOT, RunContext
from engine.errors import StageError
from engine.teardown import CREATE_SENT

POLL_S = 1.0  # how often the watcher reads the clock: at $10/h a second is under a third of a cent
REQUESTED_MARKS = ("pod_requested", CREATE_SENT, "pod_created")  # the first one present starts the bill


class BudgetReached(StageError):
    """The run's spend reached its limit; the pod is deleted and the run fails (a sweep goes on)."""


def _budget_cfg(ctx: RunContext):
    return ctx.cfg.get("budget") or {}


def record(ctx: RunContext) -> dict:
    """This run's line in run-summary.json ("budget"), made by stages/budget.py."""
    return ctx.state.outputs.setdefault("budget", {})


def limit(ctx: RunContext) -> tuple[float, str] | None:
    """(USD, the setting it comes from) or None when nothing limits the run."""
    found = []
    max_usd = _budget_cfg(ctx).get("max_usd")
    if max_usd is not None:
        found.append((float(max_usd), "budget.max_usd"))
    reserved = (ctx.state.outputs.get("budget") or {}).get("reserved_usd")
    if reserved is not None:
        found.append((float(reserved), "budget.sweep_max_usd (this job's reservation in the sweep ledger)"))
    return min(found, key=lambda f: f[0]) if found else None


def _gpu_price(gpu) -> float:
    return float(gpu.get("price_per_hour") or 0.0) * max(int(gpu.get("count") or 0), 1)


def dearest_price(ctx: RunContext) -> tuple[float, str]:
    """The most an hour of this run's pod may cost before we know which pod it gets: the plan's dearest
    candidate, else the gpu option and its fallbacks (each x its count)."""
    plan = ctx.state.outputs.get("plan") or {}
    if plan.get("max_price_per_hour") is not None:
        return float(plan["max_price_per_hour"]), "the plan's dearest candidate"
    gpu = ctx.cfg.gpu
    prices = [(_gpu_price(gpu), f"gpu.price_per_hour ({gpu.get('name')})")]
    for name in gpu.get("fallbacks") or []:
        path = PROJECT_ROOT / "conf" / "gpu" / f"{name}.yaml"
        if path.is_file():
            from omegaconf import OmegaConf

            prices.append((_gpu_price(OmegaConf.load(path).gpu), f"gpu.fallbacks ({name})"))
    return max(prices, key=lambda p: p[0])


def price_per_hour(ctx: RunContext) -> tuple[float, str]:
    """USD per hour of the pod, whole (RunPod's pod `cost` is the pod's rate, every GPU included). A pod that
    reports no price (provider=local, ssh: your own machine) is counted at the configured price, so that a
    price set for them is honoured."""
    pod = ctx.state.pod or {}
    if float(pod.get("price_per_hour") or 0) > 0:
        return float(pod["price_per_hour"]), f"pod {pod.get('id')}'s price"
    return dearest_price(ctx)


def billed_since(ctx: RunContext) -> float | None:
    marks = ctx.state.marks
    return next((marks[m] for m in REQUESTED_MARKS if m in marks), None)


def billed_seconds(ctx: RunContext, now: float | None = None) -> float:
    start = billed_since(ctx)
    if start is None:
        return 0.0
    end = ctx.state.marks.get("pod_terminated") or now or time.time()
    return max(0.0, end - start)


def spend_usd(ctx: RunContext, now: float | None = None) -> float:
    return billed_seconds(ctx, now) / 3600 * price_per_hour(ctx)[0]


def seconds_left(ctx: RunContext) -> int | None:
    """How long the limit keeps the pod, counted from its request (the deadline's start), at the dearest price
    it may have; None without a limit or a price.

    Before the pod exists (the deadline sent with the create) that price is conf's (the plan's dearest candidate,
    or gpu.price_per_hour and the fallbacks'), not RunPod's: a pod billed above it (a SECURE fallback, a price
    change) gets a deadline that buys more than the limit until the watchdog is rearmed with the pod's own
    price after connect (engine/deadline.py). Only a laptop that dies in that window (image pull, closure
    install) can overspend that way; keep gpu.price_per_hour at or above what RunPod charges."""
    bound = limit(ctx)
    if bound is None:
        return None
    price = price_per_hour(ctx)[0]
    if price <= 0:
        return None
    return max(0, int(round(bound[0] / price * 3600, 6)))  # floored: never a second the budget does not buy


def _fetch_ahead(ctx: RunContext) -> bool:
    """Whether the running stage comes before fetch: stopping it loses nothing that fetch would bring home."""
    stages = list(ctx.cfg.get("pipeline", {}).get("stages") or [])
    if "fetch" not in stages:
        return False
    return ctx.stage not in stages or stages.index(ctx.stage) < stages.index("fetch")


def held_back_usd(ctx: RunContext) -> float:
    """What the watcher keeps of the limit for bringing the adapter home and deleting the pod (plan.fetch_minutes'
    high end at the pod's price): stopped at the full limit, a run would pay for training and lose the adapter,
    and the delete would be billed past the limit. 0 once fetch has started or when no fetch follows."""
    if not _fetch_ahead(ctx):
        return 0.0
    minutes = ((ctx.cfg.get("plan") or {}).get("fetch_minutes") or [0.0, 0.0])[1]
    return float(minutes) / 60 * price_per_hour(ctx)[0]


def stoppable(ctx: RunContext) -> bool:
    """Whether the budget may stop the running stage. From fetch on it may not: that would delete the pod with the
    finished adapter on it, so the watcher lets fetch and the always-stages finish and the pod's own deadline,
    armed at the full limit, is what still holds the money."""
    stages = list(ctx.cfg.get("pipeline", {}).get("stages") or [])
    return "fetch" not in stages or _fetch_ahead(ctx)


def reached_message(ctx: RunContext, held_back: float = 0.0) -> str:
    usd, source = limit(ctx)
    price, whose = price_per_hour(ctx)
    minutes = billed_seconds(ctx) / 60
    key = "budget.max_usd" if source == "budget.max_usd" else "this job's share of budget.sweep_max_usd"
    kept = f", less ${held_back:.4f} kept for the fetch and the delete (plan.fetch_minutes)" if held_back else ""
    return (f"{key} ${usd:.4f} reached after {minutes:.1f} min of billed pod time at ${price:.2f}/h ({whose}){kept}: "
            "the pod is deleted and the run stops; what already came home is kept")


def watch(ctx: RunContext) -> Watcher | None:
    """Start the watcher when a limit applies (the budget stage, and engine.attach for the rest of a run);
    ctx.closers stops it before the pod goes, so spend stops with it."""
    bound = limit(ctx)
    if bound is None:
        return None
    # "reached" exists before the watcher thread sets it: a key added while state.json is written would
    # change the dict's size under json.dumps in the main thread
    line = record(ctx)
    line.update(limit_usd=round(bound[0], 6), limit_source=bound[1], reached=line.get("reached"))
    ctx.save()
    logger.info(f"budget: at most ${bound[0]:.4f} ({bound[1]}); the run stops when its spend reaches it")
    watcher = Watcher(ctx).start()
    ctx.closers.append(watcher.stop)
    return watcher


class Watcher:
    """A daemon thread that compares spend with the limit every POLL_S and, once it is reached, interrupts the
    main thread (engine.signals.STOP) until a stage takes the hint. Started by the budget stage, stopped by
    settle (and by teardown, before the pod goes)."""

    def __init__(self, ctx: RunContext, poll_s: float = POLL_S):
        self.ctx = ctx
        self.poll_s = poll_s
        self.reached = False
        self.message = ""
        self._raised_in: set[str] = set()
        self._stop = threading.Event()
        self._main = threading.current_thread() is threading.main_thread()
        self._thread = threading.Thread(target=self._loop, name="lorapod-budget", daemon=True)

    def start(self) -> Watcher:
        if not self._main:
            logger.warning("the budget watcher can only interrupt a run in its main thread; here the pod's own "
                           "deadline is what holds the budget")
        signals.stop_hook = self.stop_error
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if signals.stop_hook == self.stop_error:
            signals.stop_hook = None
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(timeout=5)

    def check(self) -> bool:
        """Whether the limit is reached now (and, the first time, say so)."""
        bound = limit(self.ctx)
        if bound is None or billed_since(self.ctx) is None or "pod_terminated" in self.ctx.state.marks:
            return False
        if not stoppable(self.ctx):
            return False
        # One poll ahead: waiting for the next look would let the run spend past the limit by up to a poll.
        held_back = held_back_usd(self.ctx)
        if price_per_hour(self.ctx)[0] <= 0 or spend_usd(self.ctx, time.time() + self.poll_s) < bound[0] - held_back:
            return False
        if not self.reached:
            self.reached = True
            self.message = reached_message(self.ctx, held_back)
            record(self.ctx)["reached"] = self.message  # an existing key (stages/budget.py): no resize mid-dump
            logger.warning(self.message)
        return self.ctx.state.status == "running"  # once the run stopped, cleanup needs no more nudging

    def stop_error(self) -> BaseException | None:
        """Called from the STOP handler in the main thread: the error to raise there, or None to let it pass
        (the run already stopped, or this stage already had its chance)."""
        ctx = self.ctx
        if not self.reached or ctx.state.status != "running":
            return None
        stage = ctx.state.stages.get(ctx.stage)
        if stage is None or stage.status != "running" or ctx.stage in self._raised_in or not stoppable(ctx):
            return None  # between stages: the next beat reaches the next stage; from fetch on, the deadline holds
        self._raised_in.add(ctx.stage)
        return BudgetReached(self.message, "raise budget.max_usd (or budget.sweep_max_usd) to let a run go on longer")

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                if self.check() and self._main and signals.armed():
                    signal.pthread_kill(threading.main_thread().ident, signals.STOP)
            except Exception as exc:  # noqa: BLE001 - a watcher that dies would let the run overspend
                logger.warning(f"budget watcher: {type(exc).__name__}: {exc}")

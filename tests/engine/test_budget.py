"""engine/budget.py: the run's limit, its price and spend, the deadline they bound, and the watcher that stops
the main thread the way Ctrl-C does (deferred during a create, acknowledged during cleanup), with a stage
failure instead of an interrupt. The whole path, against the emulator and a real sweep: tests/test_budget_e2e.py."""
from __future__ import annotations

import time

import pytest
from omegaconf import OmegaConf

from engine import budget, signals
from engine.context import PROJECT_ROOT, RunContext
from engine.deadline import max_runtime_s
from engine.errors import Interrupted
from engine.state import RunState, StageRecord


def context(tmp_path, max_usd=None, gpu=None, **provider) -> RunContext:
    gpu_node = OmegaConf.load(PROJECT_ROOT / "conf" / "gpu" / "rtx5090.yaml").gpu  # fallbacks: [rtx4090]
    gpu_node = OmegaConf.merge(gpu_node, gpu or {})
    cfg = OmegaConf.create({"provider": {"max_runtime_s": 21600, **provider}, "pipeline": {"max_runtime_s": None},
                            "budget": {"max_usd": max_usd, "sweep_max_usd": None}, "gpu": gpu_node})
    return RunContext(cfg, tmp_path, RunState(run_id="r1"))


def test_the_limit_is_the_smaller_of_max_usd_and_the_sweep_reservation(tmp_path):
    ctx = context(tmp_path, max_usd=2.0)
    assert budget.limit(ctx) == (2.0, "budget.max_usd")
    ctx.state.outputs["budget"] = {"reserved_usd": 0.5}
    usd, source = budget.limit(ctx)
    assert usd == 0.5 and "sweep_max_usd" in source
    assert budget.limit(context(tmp_path)) is None


def test_the_price_is_the_pods_own_then_the_plans_then_the_dearest_gpu_option_times_its_count(tmp_path):
    ctx = context(tmp_path, gpu={"count": 2, "price_per_hour": 0.1})
    rtx4090 = OmegaConf.load(PROJECT_ROOT / "conf" / "gpu" / "rtx4090.yaml").gpu
    # the fallback is dearer than the overridden gpu: the dearest wins, each times gpu.count where it is set
    assert budget.price_per_hour(ctx)[0] == pytest.approx(max(0.2, rtx4090.price_per_hour * max(rtx4090.count, 1)))
    ctx.state.outputs["plan"] = {"max_price_per_hour": 3.0}
    assert budget.price_per_hour(ctx) == (3.0, "the plan's dearest candidate")
    ctx.state.pod = {"id": "p1", "price_per_hour": 1.25}
    assert budget.price_per_hour(ctx)[0] == 1.25
    ctx.state.pod = {"id": "local-1", "price_per_hour": 0.0}  # your own machine reports no price: the configured one
    assert budget.price_per_hour(ctx)[0] == 3.0


def test_spend_counts_from_the_request_until_the_pod_is_gone(tmp_path):
    ctx = context(tmp_path)
    ctx.state.pod = {"id": "p1", "price_per_hour": 36.0}
    assert budget.spend_usd(ctx) == 0.0  # nothing requested
    ctx.state.marks.update(pod_requested=1000.0, pod_created=1010.0, pod_terminated=1100.0)
    assert budget.spend_usd(ctx, now=5000.0) == pytest.approx(100 / 3600 * 36.0)


def test_the_pods_deadline_is_what_the_budget_buys_at_the_dearest_price(tmp_path):
    ctx = context(tmp_path, max_usd=0.74, gpu={"price_per_hour": 7.4})
    assert max_runtime_s(ctx) == 360  # $0.74 at $7.40/h
    ctx.state.pod = {"id": "p1", "price_per_hour": 0.74}  # once the pod exists: its own price
    assert max_runtime_s(ctx) == 3600
    ctx.cfg.pipeline.max_runtime_s = 1200  # the other caps still hold
    assert max_runtime_s(ctx) == 1200
    assert max_runtime_s(context(tmp_path)) == 21600  # no budget: the provider's cap


def running(tmp_path, stage="train") -> RunContext:
    ctx = context(tmp_path, max_usd=0.01)
    ctx.state.pod = {"id": "p1", "price_per_hour": 36.0}  # a cent a second
    ctx.state.marks["pod_requested"] = time.time() - 60
    ctx.stage = stage
    ctx.state.stages[stage] = StageRecord(status="running")
    return ctx


def wait_in_main_thread(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)


def test_the_watcher_fails_the_running_stage_in_the_main_thread(tmp_path):
    ctx = running(tmp_path)
    watcher = budget.Watcher(ctx, poll_s=0.05).start()
    try:
        with signals.interruptible(), pytest.raises(budget.BudgetReached) as caught:
            wait_in_main_thread(60)
    finally:
        watcher.stop()
    assert not isinstance(caught.value, Interrupted)  # a failed run, not an interrupted one: a sweep goes on
    assert str(caught.value).startswith("budget.max_usd $0.0100 reached after 1.0 min")
    assert ctx.state.outputs["budget"]["reached"] == caught.value.message


def test_the_watcher_waits_for_a_create_in_flight_and_spares_cleanup(tmp_path):
    ctx = running(tmp_path, "deploy")
    watcher = budget.Watcher(ctx, poll_s=0.05).start()
    try:
        with signals.interruptible():
            with signals.deferred() as caught:
                while signals.STOP not in caught.received:
                    time.sleep(0.05)  # the create's answer must not be lost
            with pytest.raises(budget.BudgetReached):
                caught.raise_if_any()
            ctx.state.status = "failed"
            ctx.state.stages["terminate"] = StageRecord(status="running")
            ctx.stage = "terminate"
            with signals.shielded():
                wait_in_main_thread(0.5)  # cleanup runs on: nothing is raised here
    finally:
        watcher.stop()


def test_the_watcher_keeps_the_fetch_and_delete_back_and_never_stops_fetch(tmp_path):
    """Stopped at the full limit, a run pays for its training and loses the adapter (terminate deletes the pod it
    is on): train stops while what is left still pays for plan.fetch_minutes' high end, and fetch is let finish."""
    ctx = running(tmp_path)  # $0.60 spent at a cent a second
    ctx.cfg.budget.max_usd = 1.0
    ctx.cfg.merge_with({"pipeline": {"stages": ["deploy", "train", "fetch", "terminate"]},
                        "plan": {"fetch_minutes": [0.2, 1.0]}})  # a minute at $36/h: $0.60 held back
    watcher = budget.Watcher(ctx)
    assert budget.held_back_usd(ctx) == pytest.approx(0.6)
    assert watcher.check() is True and "less $0.6000 kept for the fetch and the delete" in watcher.message
    assert watcher.stop_error() is not None
    ctx = running(tmp_path, "fetch")  # $0.60 spent against $0.01: past the limit, and still fetch goes on
    ctx.cfg.merge_with({"pipeline": {"stages": ["deploy", "train", "fetch", "terminate"]},
                        "plan": {"fetch_minutes": [0.2, 1.0]}})
    watcher = budget.Watcher(ctx)
    assert budget.held_back_usd(ctx) == 0.0 and watcher.check() is False
    watcher.reached, watcher.message = True, "reached"
    assert watcher.stop_error() is None


def test_the_plan_prices_a_local_run_as_the_watcher_does(tmp_path):
    """One rule for a machine you already have (provider=local, ssh): its configured gpu.price_per_hour, in the plan
    and in the budget alike; with the plan's dearest price at $0 the budget would never stop the run."""
    from tests.engine.test_plan import compose, write_dataset
    from engine.plan import estimate

    cfg = compose("gpu.price_per_hour=3600")
    assert cfg.provider.name == "local"
    plan = estimate.plan(cfg, estimate.dataset_stats(write_dataset(tmp_path / "ds", 10, 2), cfg), tmp_path)
    assert plan["max_price_per_hour"] == 3600 and plan["usd_high"] > 0
    ctx = RunContext(cfg, tmp_path, RunState(run_id="r1"))
    ctx.state.outputs["plan"] = plan
    ctx.state.pod = {"id": "local-1", "price_per_hour": 0.0}
    assert budget.price_per_hour(ctx)[0] == 3600


def test_no_limit_or_no_price_never_stops_a_run(tmp_path):
    ctx = running(tmp_path)
    ctx.state.pod["price_per_hour"] = 0.0
    ctx.cfg.gpu.price_per_hour = 0.0
    ctx.cfg.gpu.fallbacks = []
    assert budget.Watcher(ctx).check() is False
    ctx = running(tmp_path)
    ctx.cfg.budget.max_usd = None
    assert budget.Watcher(ctx).check() is False


def test_the_watcher_sends_nothing_when_no_handler_would_catch_it(tmp_path):
    """Outside the runner's handlers STOP would kill the process (SIGUSR1's default action)."""
    ctx = running(tmp_path)
    watcher = budget.Watcher(ctx, poll_s=0.05).start()
    try:
        assert not signals.armed()
        deadline = time.monotonic() + 30
        while not ctx.state.outputs.get("budget", {}).get("reached") and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_in_main_thread(0.3)  # still alive: no signal was sent
    finally:
        watcher.stop()
    assert watcher.reached


def test_a_negative_budget_is_a_config_error_naming_its_key():
    from stages.budget import Budget

    cfg = OmegaConf.create({"budget": {"max_usd": -1.0, "sweep_max_usd": 0.0}})
    assert [key for key, _ in Budget.check_config(cfg)] == ["budget.max_usd"]


def settled(tmp_path, pod=None, marks=None, cost=None) -> tuple[dict, dict]:
    """Settle one job of a ledger that reserved $1 for it; returns (its summary line, its ledger line)."""
    from engine.sweep import ledger
    from stages.budget import Settle

    path = tmp_path / ledger.FILENAME
    ledger.reserve(path, "0", 1.0, 5.0)
    ctx = context(tmp_path, max_usd=1.0)
    ctx.state.outputs["budget"] = {"ledger": str(path), "job": "0", "reserved_usd": 1.0}
    ctx.state.pod, ctx.state.marks = pod, dict(marks or {})
    if cost is not None:
        ctx.state.outputs["cost"] = cost
    Settle().run(ctx)
    return ctx.state.outputs["budget"], ledger.read(path)["jobs"]["0"]


def test_settle_takes_the_bill_then_the_estimate_then_zero(tmp_path):
    pod = {"id": "p1", "price_per_hour": 36.0, "terminated": True}
    line, entry = settled(tmp_path / "a", pod=pod, marks={"pod_requested": 0.0, "pod_terminated": 100.0},
                          cost={"actual_usd": 0.9})
    assert (line["spent_usd"], entry["status"], entry["spent_usd"]) == (0.9, "settled", 0.9)
    line, entry = settled(tmp_path / "b", pod=pod, marks={"pod_requested": 0.0, "pod_terminated": 100.0})
    assert entry["spent_usd"] == pytest.approx(1.0) and line["source"].startswith("estimate: 100s x $36.00/h")
    line, entry = settled(tmp_path / "c")
    assert (entry["spent_usd"], line["source"]) == (0.0, "nothing was rented")


def test_a_pod_still_up_keeps_its_reservation(tmp_path):
    line, entry = settled(tmp_path, pod={"id": "p1", "price_per_hour": 36.0}, marks={"pod_requested": time.time()})
    assert entry["status"] == "reserved" and entry["reserved_usd"] == 1.0
    assert "still up" in line["source"]


def test_watch_starts_only_under_a_limit_and_stops_with_the_pod(tmp_path):
    """budget.watch is what the budget stage and engine.attach start: nothing without a limit; with one, the
    limit is on record and the watcher is among what teardown closes before the pod goes."""
    assert budget.watch(context(tmp_path)) is None
    ctx = context(tmp_path, max_usd=1.0)
    watcher = budget.watch(ctx)
    try:
        assert watcher is not None and ctx.state.outputs["budget"]["limit_usd"] == 1.0
        assert watcher.stop in ctx.closers
    finally:
        watcher.stop()

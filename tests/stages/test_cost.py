"""The cost stage's decisions, with a fake provider whose bill is a scripted sequence of reads (the real bill,
from the emulator's billing, is tested end to end in tests/test_cost_e2e.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from engine.context import RunContext
from engine.providers.base import Bill
from engine.state import RunState
from stages.cost import Cost


class FakeBilledProvider:
    """Stands in for RunPod: answers billed_usd from a script of reads (an amount, a Bill, None or an error),
    the last one repeating. An amount's records end with the hour bucket after the pod's deletion."""

    name = "runpod"

    def __init__(self, reads: list):
        self.reads, self.calls = list(reads), 0

    def billed_usd(self, pod, since, retry_for_s=10.0):
        self.calls += 1
        value = self.reads[min(self.calls, len(self.reads)) - 1]
        if isinstance(value, Exception):
            raise value
        return Bill(value, covered_until=since + 3600) if isinstance(value, float) else value


def context(tmp_path: Path, provider, wait_s: float = 2.0, terminated: bool = True, status: str = "running"):
    cfg = OmegaConf.create({"provider": {"billing_wait_s": wait_s, "poll_interval_s": 0.05}})
    state = RunState(run_id="test", status=status)
    state.pod = {"id": "pod1", "name": "lorapod-test", "provider": "runpod", "price_per_hour": 0.74,
                 "terminated": terminated}
    state.marks = {"pod_created": state.started_at, "pod_terminated": state.started_at + 36}
    return RunContext(cfg=cfg, run_dir=tmp_path, state=state, provider=provider)


@pytest.mark.parametrize("reads, actual, calls", [
    ([None, 0.0071, 0.0074, 0.0074], 0.0074, 4),  # appears, grows, settles
    ([0.0074, 0.0074], 0.0074, 2),
])
def test_a_bill_is_trusted_once_two_reads_agree(tmp_path, reads, actual, calls):
    provider = FakeBilledProvider(reads)
    ctx = context(tmp_path, provider)
    Cost().run(ctx)
    assert ctx.state.outputs["cost"]["actual_usd"] == actual and provider.calls == calls


def test_a_bill_that_keeps_growing_is_not_the_cost(tmp_path):
    provider = FakeBilledProvider([0.001 * i for i in range(1, 10_000)])
    ctx = context(tmp_path, provider, wait_s=0.3)
    Cost().run(ctx)
    cost = ctx.state.outputs["cost"]
    assert cost["actual_usd"] is None and "billed so far: $" in cost["note"] and "still changing" in cost["note"]
    assert provider.calls >= 2


def test_after_ctrl_c_the_bill_is_read_once_without_waiting(tmp_path):
    provider = FakeBilledProvider([None])
    ctx = context(tmp_path, provider, wait_s=60, status="interrupted")
    Cost().run(ctx)
    assert provider.calls == 1 and ctx.state.outputs["cost"]["actual_usd"] is None


def test_a_pod_not_confirmed_deleted_is_not_billed_yet_and_not_waited_for(tmp_path):
    provider = FakeBilledProvider([0.5])
    ctx = context(tmp_path, provider, terminated=False)
    Cost().run(ctx)
    assert provider.calls == 0 and "not confirmed deleted" in ctx.state.outputs["cost"]["note"]


def test_an_error_reading_the_bill_is_a_note_not_a_failure(tmp_path):
    ctx = context(tmp_path, FakeBilledProvider([RuntimeError("billing exploded")]))
    Cost().run(ctx)
    assert ctx.state.outputs["cost"] == {"actual_usd": None, "source": "runpod billing",
                                         "note": "could not read the bill: billing exploded"}


def test_a_stale_partial_bill_that_stopped_changing_is_not_the_cost(tmp_path):
    # Two equal reads, records up to after the deletion, but under 90% of the estimate (36 s at $0.74/h =
    # $0.0074): a bill published in batches that has not caught up yet.
    provider = FakeBilledProvider([0.003])
    ctx = context(tmp_path, provider, wait_s=0.3)
    Cost().run(ctx)
    cost = ctx.state.outputs["cost"]
    assert cost["actual_usd"] is None and provider.calls >= 2, cost
    assert "billed so far: $0.0030" in cost["note"] and "under 90% of the estimated $0.0074" in cost["note"]


def test_records_that_end_before_the_deletion_are_not_the_whole_bill(tmp_path):
    ctx = context(tmp_path, None, wait_s=0.3)
    deleted = ctx.state.marks["pod_terminated"]
    ctx.provider = provider = FakeBilledProvider([Bill(0.0074, covered_until=deleted - 1)])
    Cost().run(ctx)
    cost = ctx.state.outputs["cost"]
    assert cost["actual_usd"] is None and "records end before the pod was deleted" in cost["note"], cost
    assert provider.calls >= 2


@pytest.mark.parametrize("read, actual", [(0.0074, 0.0074), (0.002, None), (None, None)])
def test_without_waiting_one_read_counts_only_when_it_is_final(tmp_path, read, actual):
    provider = FakeBilledProvider([read])
    ctx = context(tmp_path, provider, wait_s=0)
    Cost().run(ctx)
    cost = ctx.state.outputs["cost"]
    assert provider.calls == 1 and cost["actual_usd"] == actual, cost
    assert ("billed so far: $0.0020" in cost["note"]) == (read == 0.002)

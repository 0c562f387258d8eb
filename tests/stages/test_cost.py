"""The cost stage's decisions, with a fake provider whose bill is a scripted sequence of reads (the real bill,
from the emulator's billing, is tested end to end in tests/test_cost_e2e.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from engine.context import RunContext
from engine.state import RunState
from stages.cost import Cost


class FakeBilledProvider:
    """Stands in for RunPod: answers billed_usd from a script of reads, the last one repeating."""

    name = "runpod"

    def __init__(self, reads: list):
        self.reads, self.calls = list(reads), 0

    def billed_usd(self, pod, since, retry_for_s=10.0):
        self.calls += 1
        value = self.reads[min(self.calls, len(self.reads)) - 1]
        if isinstance(value, Exception):
            raise value
        return value


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
    assert cost["actual_usd"] is None and "so far, still changing" in cost["note"] and provider.calls >= 2


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

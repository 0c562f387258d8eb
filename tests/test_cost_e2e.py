"""What the pod really cost: the cost stage reads RunPod's (emulated, lagging) billing after terminate.

The bill is computed by the emulator from the pod's real lifetime (tests/emulator/billing.py), so the figure
the run reports is checked against the pod's own billed spans, not against a number written here.
"""
from __future__ import annotations

import pytest

from tests.conftest import lorapod_env, run_lorapod
from tests.emulator.server import FaultRule
from tests.test_runpod_e2e import assert_nothing_billing_and_data_kept, canonical

BILLING = "/v2/billing/pods"
# Rent, delete, read the bill: nothing in between that needs training (RENT_ONLY also no SSH: the pod lives a
# moment; RENT_AND_PROBE waits for it to be up and reachable).
RENT_AND_PROBE = ("~pipeline.stages.build", "~pipeline.stages.upload", "~pipeline.stages.train",
                  "~pipeline.stages.fetch", "provider.poll_interval_s=0.2")
RENT_ONLY = ("~pipeline.stages.probe", *RENT_AND_PROBE)


def billed(pod) -> float:
    """What the emulator's billing will show for this pod once it has caught up."""
    return sum(end - begin for begin, end in pod.billed_spans) * pod.cost_per_hr / 3600


def billing_requests(emu) -> list:
    return [r for r in emu.requests if r.template == BILLING]


@pytest.fixture
def workdir(tmp_path):
    return tmp_path / "pod-disk"


def test_a_whole_run_reports_the_billed_cost_next_to_the_estimate_and_draws_its_loss(runpod_emulator, workdir,
                                                                                        run_dir):
    emu = runpod_emulator
    emu.faults.billing_lag_s = 1.0
    run = run_lorapod(*canonical(emu, workdir, "train.max_steps=3", "provider.billing_wait_s=30",
                                 "provider.poll_interval_s=0.3"),
                      run_dir=run_dir, env=lorapod_env(RUNPOD_API_KEY=emu.api_key))
    assert run.proc.returncode == 0, run.output
    summary = run.summary
    [pod] = emu.pods.values()
    assert summary["cost_usd_actual"] == pytest.approx(billed(pod), abs=1e-5)
    assert summary["cost"]["source"] == "runpod billing"
    assert summary["cost_usd_estimate"] > 0
    stages = list(summary["stages"])
    assert stages.index("terminate") < stages.index("cost") < stages.index("plot"), stages
    # Read after the delete, and only for this pod.
    delete_at = next(i for i, r in enumerate(emu.requests) if r.method == "DELETE")
    reads = billing_requests(emu)
    assert reads and all(emu.requests.index(r) > delete_at for r in reads)
    assert all(f"podId={pod.id}" in r.path for r in reads)
    assert f"billed ${summary['cost_usd_actual']:.4f}" in run.output
    assert summary["paths"]["plot"] == str(run_dir / "loss.png") and (run_dir / "loss.png").is_file()
    assert_nothing_billing_and_data_kept(emu, run)


def test_billing_that_has_not_caught_up_within_the_wait_is_null_with_a_note(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.billing_lag_s = 3600.0  # nothing shows within the run
    run = run_lorapod(*canonical(emu, workdir, *RENT_ONLY, "provider.billing_wait_s=1"),
                      run_dir=run_dir, env=lorapod_env(RUNPOD_API_KEY=emu.api_key))
    assert run.proc.returncode == 0, run.output
    summary = run.summary
    assert summary["status"] == "succeeded" and summary["stages"]["cost"]["status"] == "succeeded"
    assert summary["cost_usd_actual"] is None
    assert "billing lags" in summary["cost"]["note"] and "provider.billing_wait_s" in summary["cost"]["note"]
    assert "billing not available yet" in run.output
    assert len(billing_requests(emu)) >= 2, "it waited and asked again"
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_bill_still_growing_when_the_wait_ends_is_not_reported_as_the_cost(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    emu.faults.billing_lag_s = 2.0  # the pod's first seconds show, its last ones not yet: the bill grows
    emu.provisioning_s = 4.0  # a life longer than the lag
    run = run_lorapod(*canonical(emu, workdir, *RENT_AND_PROBE, "provider.billing_wait_s=0.5",
                                 "provider.poll_interval_s=0.1"),
                      run_dir=run_dir, env=lorapod_env(RUNPOD_API_KEY=emu.api_key))
    assert run.proc.returncode == 0, run.output
    cost = run.summary["cost"]
    assert cost["actual_usd"] is None and "so far" in cost["note"], cost


def test_a_partial_bill_that_stands_still_is_never_reported_as_the_cost(runpod_emulator, workdir, run_dir):
    emu = runpod_emulator
    # Billing in batches (tests/emulator/billing.py): whole 4 s steps of the pod's life, half a second after
    # each ended; the rest only 4.5 s after the delete. The pod lives 5 s or more (provisioning), under 8 s unless
    # probe and delete are very slow: the reads within the 1 s wait show 4 s at most, well under the estimate.
    emu.faults.billing_lag_s = 0.5
    emu.faults.billing_step_s = 4.0
    emu.provisioning_s = 5.0
    run = run_lorapod(*canonical(emu, workdir, *RENT_AND_PROBE, "provider.billing_wait_s=1",
                                 "provider.poll_interval_s=0.1"),
                      run_dir=run_dir, env=lorapod_env(RUNPOD_API_KEY=emu.api_key))
    assert run.proc.returncode == 0, run.output
    summary = run.summary
    [pod] = emu.pods.values()
    assert summary["cost_usd_actual"] is None and summary["cost"]["actual_usd"] is None, summary["cost"]
    assert "billed so far: $" in summary["cost"]["note"], summary["cost"]
    shown = float(summary["cost"]["note"].split("billed so far: $", 1)[1].split(",", 1)[0])
    assert 0 < shown < billed(pod), "it was a partial bill"
    assert len(billing_requests(emu)) >= 2, "it read again and saw the same amount"
    assert_nothing_billing_and_data_kept(emu, run)


@pytest.mark.parametrize("status", [503, 401])
def test_a_billing_error_does_not_fail_the_run(runpod_emulator, workdir, run_dir, status):
    emu = runpod_emulator
    emu.faults.rules.append(FaultRule(status, 10_000, frozenset({"GET"}), frozenset({BILLING}),
                                      detail="billing is down (injected by the test)"))
    run = run_lorapod(*canonical(emu, workdir, *RENT_ONLY, "provider.billing_wait_s=1"),
                      run_dir=run_dir, env=lorapod_env(RUNPOD_API_KEY=emu.api_key))
    assert run.proc.returncode == 0, run.output
    summary = run.summary
    assert summary["status"] == "succeeded" and summary["cost_usd_actual"] is None
    assert str(status) in summary["cost"]["note"]
    assert billing_requests(emu), "the bill was asked for"
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_local_run_has_no_bill(run_dir):
    run = run_lorapod("train.max_steps=2", "~pipeline.stages.plot", run_dir=run_dir)
    assert run.proc.returncode == 0, run.output
    summary = run.summary
    assert summary["cost_usd_actual"] is None
    assert summary["cost"]["source"] == "local" and "own machine" in summary["cost"]["note"]

"""`python run.py gpu=rtx5090 pipeline=preflight` against the RunPod emulator: a real pod (sshd in a PID namespace),
the real checks under the pod's interpreter, and the pod deleted after. The emulator has no GPU (nothing here has
one), so its GPU lines must say "no GPU": passing needs preflight.require_gpu=false, and without it the same pod
must fail the preflight."""
from __future__ import annotations

import json
import re
import subprocess


from tests.closure_seed import pod_python_request, seed_closure
from tests.conftest import CPU_TRAIN, PYTHON, REPO, run_lorapod
from tests.test_runpod_e2e import RTX4090, RTX5090, assert_nothing_billing_and_data_kept, creates, env_for

TABLE_LINE = r"^\s+{check}\s+{status}\s"


def preflight(emu, workdir, python: str | None, *extra: str) -> list[str]:
    """The issue's command against the emulator. python=None: the default image's way, the closure's venv
    (seeded on the pod's disk as a network volume holds it after a first run); else that interpreter."""
    if python:
        where = [f"remote.python={python}"]
    else:
        seed_closure(workdir)
        where = [f"image.base_python={pod_python_request()}"]
    return ["gpu=rtx5090", "pipeline=preflight", f"provider.api_url={emu.url}", f"remote.workdir={workdir}",
            "build.skip=true", *where, *CPU_TRAIN, *extra]


def row(run, check: str) -> dict:
    return next(r for r in run.summary["preflight"] if r["check"] == check)


def test_preflight_passes_against_the_emulator_with_no_gpu_lines(runpod_emulator, tmp_path):
    emu, run_dir = runpod_emulator, tmp_path / "run"
    run = run_lorapod(*preflight(emu, tmp_path / "disk", None, "preflight.require_gpu=false"),
                      run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    statuses = {r["check"]: r["status"] for r in run.summary["preflight"]}
    assert statuses == {"ssh": "ok", "deadline": "ok", "closure": "ok", "interpreter": "ok", "torch": "ok", "cuda": "no GPU",
                        "gpu": "no GPU", "bitsandbytes": "ok", "triton": "ok", "xformers": "ok", "unsloth": "ok"}
    venv = run.state["outputs"]["closure"]["venv"]
    assert "installed nothing" in row(run, "closure")["detail"] and venv in row(run, "closure")["detail"]
    assert row(run, "interpreter")["detail"].startswith("Python 3.12") and f"at {venv}/bin/python" in \
        row(run, "interpreter")["detail"]
    assert "CUDA 12.8" in row(run, "torch")["detail"]
    assert "(announced in the pod's log)" in row(run, "ssh")["detail"]
    # The table comes after the pod is gone, with what it cost.
    log = run.output
    assert log.index("pod " + run.summary["pod"]["id"] + " terminated") < log.index("preflight of pod")
    for check, status in statuses.items():
        assert re.search(TABLE_LINE.format(check=check, status=re.escape(status)), log, re.M), check
    price = run.summary["pod"]["price_per_hour"]
    cost = re.search(r"cost: pod up (\d+)s at \$([\d.]+)/h = about \$([\d.]+)", log)
    assert cost and float(cost.group(2)) == round(price, 2)
    assert abs(float(cost.group(3)) - int(cost.group(1)) / 3600 * price) < 0.001
    billed = run.summary["cost_usd_actual"]  # the emulator's billing lags 2 s; the stage waits up to 20 s
    assert billed is not None and f"; billed ${billed:.4f}" in log
    # A few minutes at most: the pod's own deadline is the pipeline's cap, not the provider's six hours.
    [pod] = emu.pods.values()
    assert pod.request["env"]["LORAPOD_MAX_RUNTIME_S"] == "1200"
    assert run.summary["stages"]["report"]["status"] == "succeeded"
    assert_nothing_billing_and_data_kept(emu, run)


def test_preflight_train_runs_a_short_real_training_on_the_pod(runpod_emulator, tmp_path):
    """preflight.train=true: upload and train through the same stages a full run uses, for preflight.steps steps
    (the tiny random model here; model=qwen3_0_6b on a real pod)."""
    emu, run_dir = runpod_emulator, tmp_path / "run"
    run = run_lorapod(*preflight(emu, tmp_path / "disk", None, "preflight.require_gpu=false",
                                 "preflight.train=true", "preflight.steps=3", "model=tiny"),
                      run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 0, run.output
    train = row(run, "train")
    assert train["status"] == "ok" and train["detail"].startswith("3 steps of tiny with unsloth on cpu"), train
    assert '"event": "step"' in (run_dir / "train.log").read_text()
    assert_nothing_billing_and_data_kept(emu, run)


def test_a_gpu_pod_without_a_gpu_or_libraries_fails_and_is_still_deleted(runpod_emulator, tmp_path):
    """The default for gpu=rtx5090 requires a GPU; the test venv's interpreter also lacks bitsandbytes."""
    emu, run_dir = runpod_emulator, tmp_path / "run"
    run = run_lorapod(*preflight(emu, tmp_path / "disk", PYTHON), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 1, run.output
    assert run.summary["failed_stage"] == "preflight"
    assert "cuda" in run.summary["error"] and "bitsandbytes" in run.summary["error"]
    assert row(run, "gpu")["status"] == "no GPU" and row(run, "bitsandbytes")["status"] == "fail"
    assert "No module named 'bitsandbytes'" in row(run, "bitsandbytes")["detail"]
    assert run.summary["stages"]["report"]["status"] == "succeeded" and "cost: pod up" in run.output
    assert run.summary["pod"]["terminated"] is True
    assert_nothing_billing_and_data_kept(emu, run)


def test_preflight_rents_the_cheapest_cloud_of_the_gpu_asked_for_and_no_fallback(runpod_emulator, tmp_path):
    emu, run_dir = runpod_emulator, tmp_path / "run"
    offer = next(o for o in emu.catalog if o.id == RTX5090)
    offer.secure_price = offer.community_price - 0.1  # SECURE is cheaper today: it goes first
    emu.faults.no_capacity(RTX5090, ["SECURE"])
    emu.faults.no_capacity(RTX5090, ["COMMUNITY"])
    run = run_lorapod(*preflight(emu, tmp_path / "disk", PYTHON), run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 1 and run.summary["failed_stage"] == "deploy", run.output
    tried = [(r.body["gpu"]["id"], r.body["cloud"]) for r in creates(emu)]
    assert tried == [(RTX5090, "SECURE"), (RTX5090, "COMMUNITY")], tried
    assert RTX4090 not in str(tried)  # rtx5090's fallback would not prove sm_120
    assert "cost: nothing was rented" in run.output
    assert emu.pods == {}


def test_the_pod_side_checks_report_every_line_under_any_interpreter(tmp_path):
    """Under this test venv (torch for CPU, no bitsandbytes): one JSON line per check, a failed import as a
    fail line, and the GPU lines as "no GPU"."""
    out = subprocess.run([PYTHON, str(REPO / "remote_image" / "preflight_checks.py")], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["check"] for r in rows] == ["interpreter", "torch", "cuda", "gpu", "bitsandbytes", "triton",
                                           "xformers", "unsloth"]
    assert {r["check"]: r["status"] for r in rows}["cuda"] == "no GPU"
    assert {r["check"]: r["status"] for r in rows}["bitsandbytes"] == "fail"


def test_a_cap_shorter_than_the_start_it_allows_is_a_config_error(runpod_emulator, tmp_path):
    """image=unsloth may take 30 minutes to pull: preflight's 20-minute deadline would delete the pod the moment
    it is reached. Caught before anything is rented."""
    emu, run_dir = runpod_emulator, tmp_path / "run"
    run = run_lorapod("gpu=rtx5090", "pipeline=preflight", "image=unsloth", "build.skip=true",
                      f"provider.api_url={emu.url}", run_dir=run_dir, env=env_for(emu))
    assert run.proc.returncode == 2, run.output
    assert re.search(r"pipeline\.max_runtime_s: \(1200s\) must be more than image\.ready_timeout_s plus "
                     r"probe\.timeout_s \(2100s\).*pipeline\.max_runtime_s=2700", run.output), run.output
    assert emu.requests == []


def test_ctrl_c_during_preflight_training_stops_the_run_not_only_its_check(runpod_emulator, tmp_path):
    """Ctrl-C (like a budget reached, or a detach) is no failed check: the run is interrupted at once and its pod
    deleted, rather than preflight carrying on with a FAIL row."""
    import signal

    from tests.conftest import Background

    emu, run_dir = runpod_emulator, tmp_path / "run"
    with Background(*preflight(emu, tmp_path / "disk", None, "preflight.require_gpu=false", "preflight.train=true",
                               "preflight.steps=100000", "model=tiny"), run_dir=run_dir, env=env_for(emu)) as bg:
        bg.wait_for_training()
        bg.proc.send_signal(signal.SIGINT)
        run = bg.finish(timeout=300)
    assert run.proc.returncode == 130, run.output
    assert run.summary["status"] == "interrupted" and run.summary["stages"]["preflight"]["status"] == "interrupted"
    assert not any(r["check"] == "train" for r in run.summary.get("preflight") or []), "no FAIL row for a Ctrl-C"
    assert_nothing_billing_and_data_kept(emu, run)


def test_detach_in_a_pipeline_without_a_train_stage_is_a_config_error(tmp_path):
    run = run_lorapod("gpu=rtx5090", "pipeline=preflight", "provider.detach=true", run_dir=tmp_path / "run")
    assert run.proc.returncode == 2, run.output
    assert "provider.detach: is true, but the pipeline has no train stage" in run.output

"""hydra/sweeper=optuna on this machine: the task's return value is the run's eval loss, a failed run is a failed
trial and the study goes on, and the jobs of a sweep train on one prepared dataset per dataset config."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import yaml

from tests.conftest import PYTHON, REPO, lorapod_env, wait_for

FAST = ("train.max_steps=2",)


def sweep(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path / "sweep"
    cmd = [PYTHON, str(REPO / "run.py"), "-m", *args, f"hydra.sweep.dir={folder}",
           f"registry.path={tmp_path / 'adapters'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=lorapod_env(), timeout=1200)
    return proc, folder


def job_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def summary(job: Path) -> dict:
    return json.loads((job / "run-summary.json").read_text())


def overrides(job: Path) -> dict[str, str]:
    return dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))


def manifest_hashes(job: Path) -> dict:
    return json.loads((job / "dataset" / "manifest.json").read_text())["sha256"]


def test_an_optuna_study_names_the_trial_with_the_lowest_eval_loss_and_its_jobs_share_one_dataset(tmp_path):
    proc, folder = sweep(tmp_path, "+experiment=optuna_lr_rank", "hydra.sweeper.n_trials=3", *FAST)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    jobs = job_dirs(folder)
    assert len(jobs) == 3
    losses = {}
    for job in jobs:
        s = summary(job)
        assert s["status"] == "succeeded", (job, s["error"])
        losses[job] = s["metrics"]["eval_loss_after"]
    best_job = min(losses, key=losses.get)
    results = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert results["best_value"] == losses[best_job]
    chosen = overrides(best_job)
    assert set(results["best_params"]) == {"train.learning_rate", "lora.r"}
    assert float(chosen["train.learning_rate"]) == results["best_params"]["train.learning_rate"]
    assert int(chosen["lora.r"]) == results["best_params"]["lora.r"]
    assert "Best parameters" in output and str(losses[best_job]) in output  # named on the console too

    # one dataset: prepared by the first job, reused by the others, the same files in every job
    shared = [p for p in (folder / "datasets").iterdir() if p.is_dir()]
    assert len(shared) == 1
    assert len({json.dumps(manifest_hashes(job), sort_keys=True) for job in jobs}) == 1
    logs = [(job / "run.log").read_text() for job in jobs]
    assert sum("dataset prepared once for this sweep" in log for log in logs) == 1
    assert sum(f"dataset reused from {shared[0]}" in log for log in logs) == 2
    inodes = {(job / "dataset" / "train.jsonl").stat().st_ino for job in jobs}
    assert inodes == {(shared[0] / "train.jsonl").stat().st_ino}


def test_a_failed_run_is_a_failed_trial_and_the_study_goes_on(tmp_path):
    # Only dataset.filters.since is searched (learning rate and rank fixed on the command line); with this seed
    # TPE's first trial picks the date that filters every memory out, the second one a date that keeps them.
    proc, folder = sweep(tmp_path, "+experiment=optuna_lr_rank", "hydra.sweeper.n_trials=2",
                         "hydra.sweeper.sampler.seed=10", "train.learning_rate=2e-4", "lora.r=4",
                         "dataset.filters.since=choice(2999-01-01,2000-01-01)", *FAST)
    output = proc.stdout + proc.stderr
    first, second = job_dirs(folder)
    assert overrides(first)["dataset.filters.since"] == "2999-01-01", "the seed no longer picks the failing date first"
    assert summary(first)["status"] == "failed" and summary(first)["failed_stage"] == "prepare"
    assert summary(second)["status"] == "succeeded", summary(second)["error"]
    assert output.count("Failed experiment: Return value must be float-castable. Got 'None'") == 1
    results = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert results["best_params"] == {"dataset.filters.since": "2000-01-01"}
    assert results["best_value"] == summary(second)["metrics"]["eval_loss_after"]
    assert proc.returncode != 0, output  # a job failed: the sweep says so (engine.exit_status)


def test_two_dataset_configs_in_a_sweep_give_two_datasets(tmp_path):
    proc, folder = sweep(tmp_path, "pipeline=prepare", "train.eval_fraction=0.1,0.3", "lora.r=4,8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = job_dirs(folder)
    assert len(jobs) == 4
    shared = sorted(p for p in (folder / "datasets").iterdir() if p.is_dir())
    assert len(shared) == 2
    assert not list((folder / "datasets").glob(".*"))  # no partial folder left
    by_fraction: dict[str, set] = {}
    for job in jobs:
        fraction = overrides(job)["train.eval_fraction"]
        by_fraction.setdefault(fraction, set()).add(json.dumps(manifest_hashes(job), sort_keys=True))
        assert json.loads((job / "state.json").read_text())["outputs"]["dataset"]["shared"]["path"] in map(str, shared)
    assert {k: len(v) for k, v in by_fraction.items()} == {"0.1": 1, "0.3": 1}
    assert by_fraction["0.1"] != by_fraction["0.3"]


def test_a_single_run_prepares_its_own_dataset_as_before(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([PYTHON, str(REPO / "run.py"), "pipeline=prepare", f"hydra.run.dir={run_dir}",
                           f"registry.path={tmp_path / 'adapters'}"], cwd=REPO, capture_output=True, text=True,
                          env=lorapod_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (run_dir / "dataset" / "train.jsonl").stat().st_nlink == 1
    assert not (tmp_path / "datasets").exists() and not (run_dir / "datasets").exists()
    assert "shared" not in json.loads((run_dir / "state.json").read_text())["outputs"]["dataset"]
    assert "dataset prepared once" not in (run_dir / "run.log").read_text()


def test_parallel_jobs_of_a_joblib_sweep_prepare_one_dataset(tmp_path):
    proc, folder = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=3", "pipeline=prepare",
                         "lora.r=4,8,16")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = job_dirs(folder)
    assert len(jobs) == 3
    logs = [(job / "run.log").read_text() for job in jobs]
    assert sum("dataset prepared once for this sweep" in log for log in logs) == 1
    assert sum("dataset reused from" in log for log in logs) == 2
    assert len({(job / "dataset" / "train.jsonl").stat().st_ino for job in jobs}) == 1


def test_a_ctrl_c_in_a_parallel_optuna_study_launches_no_further_trial(tmp_path):
    # Two trials at a time out of six; both of the first batch would train for ever. Without the launch guard
    # (engine/sweep/parallel.py) the sweeper went on to launch trials 2-5, each interrupted before its first stage.
    folder = tmp_path / "sweep"
    cmd = [PYTHON, str(REPO / "run.py"), "-m", "+experiment=optuna_lr_rank", "hydra/launcher=joblib",
           "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=6",
           "train.max_steps=100000", "train.logging_steps=1", f"hydra.sweep.dir={folder}",
           f"registry.path={tmp_path / 'adapters'}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=lorapod_env(), start_new_session=True)
    try:
        def training(job: str) -> bool:
            log = folder / job / "train.log"
            return log.exists() and '"event": "step"' in log.read_text(errors="ignore")

        wait_for(lambda: training("0") and training("1"), 600, "trials 0 and 1 training")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    output = out + err
    assert proc.returncode == 130, output
    assert [job.name for job in job_dirs(folder)] == ["0", "1"], output
    for job in job_dirs(folder):
        s = summary(job)
        assert s["status"] == "interrupted" and s["failed_stage"] == "train", s
        assert s["stages"]["terminate"]["status"] == "succeeded"
    assert "SIGINT: the sweeper asked for 2 more job(s); none is started" in output
    assert len([line for line in out.splitlines() if line.startswith(f"sweep {folder}:")]) == 1  # one table

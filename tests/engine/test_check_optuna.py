"""engine.check and run.py's precheck on an Optuna study: its search space's corners are composed and validated
(every choice, both ends of each interval), so a value that cannot work fails before the first trial."""
from __future__ import annotations

import subprocess

from engine.compose import jobs
from tests.conftest import PYTHON, REPO, lorapod_env
from tests.engine.test_check import check, conf  # noqa: F401  (conf: a fixture)


def test_the_corners_of_the_search_space_are_composed():
    points = {(c.train.learning_rate, c.lora.r) for _, c in jobs(["+experiment=optuna_lr_rank"], multirun=True)}
    assert points == {(lr, r) for lr in (5e-5, 1e-3) for r in (4, 8, 16)}


def test_a_value_fixed_on_the_command_line_leaves_the_search_space():
    composed = jobs(["+experiment=optuna_lr_rank", "lora.r=4"], multirun=True)
    assert {c.lora.r for _, c in composed} == {4}
    assert {c.train.learning_rate for _, c in composed} == {5e-5, 1e-3}


def test_the_shipped_study_passes_and_counts_its_trials(tmp_path):
    done = check(str(REPO / "conf/experiment/optuna_lr_rank.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "optuna_lr_rank" in done.stdout and "8 runs" in done.stdout


def test_a_choice_that_cannot_work_is_a_problem_with_its_key(conf, tmp_path):
    path = conf / "experiment/optuna_lr_rank.yaml"
    path.write_text(path.read_text().replace("lora.r: choice(4, 8, 16)", "lora.r: choice(0, 8)"))
    done = check(str(path), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "lora.r: must be > 0" in done.stdout and "lora.r=0" in done.stdout


def test_run_py_refuses_a_search_space_value_of_the_wrong_type_before_any_trial(tmp_path):
    proc = subprocess.run([PYTHON, str(REPO / "run.py"), "-m", "+experiment=optuna_lr_rank", "lora.r=choice(abc,4)",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=REPO, capture_output=True, text=True,
                          env=lorapod_env(), timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "lora.r=abc" in proc.stderr and "Nothing was started" in proc.stderr
    assert not (tmp_path / "sweep").exists()

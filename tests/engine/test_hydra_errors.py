"""Hydra's own errors (a bad override, an unknown key or option, a YAML file that does not parse, a bad sweep)
exit 2 with one line naming the key or file, like every other config error, and before anything is made."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO, run_lorapod

CASES = [
    # (command line, what the one line must name)
    (["lora.r=abc"], "lora.r"),
    (["lora.r=[1"], "lora.r=[1"),
    (["nosuch=1"], "+nosuch=1"),
    (["model=nosuch"], "conf/model/nosuch.yaml"),
    (["-m", "lora.r=4,abc"], "lora.r=abc"),  # the second job of the sweep: nothing of the first may run either
    (["-m", "lora.r=range(1"], "lora.r=range(1"),
    (["-m", "lora.r=interval(1,2)"], "INTERVAL_SWEEP"),
    (["--cfg", "job", "train.learning_rate=fast"], "train.learning_rate"),
]


def assert_one_clear_line(run, names: str) -> None:
    assert run.proc.returncode == 2, run.output
    lines = run.proc.stderr.strip().splitlines()
    assert len(lines) == 1, run.proc.stderr
    assert names in lines[0] and lines[0].startswith("invalid config: "), lines[0]
    assert "Traceback" not in run.output and "HYDRA_FULL_ERROR" not in run.output


@pytest.mark.parametrize("args,names", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_hydra_error_exits_2_with_one_line_and_makes_no_run_folder(tmp_path, args, names):
    run_dir, sweep_dir = tmp_path / "run", tmp_path / "sweep"
    run = run_lorapod(*args, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={sweep_dir}", timeout=120)
    assert_one_clear_line(run, names)
    assert not run_dir.exists() and not sweep_dir.exists()


@pytest.mark.parametrize("text,line", [("r: [8\nalpha: 16\n", 3), ("r: 8\n  alpha: 16\n", 3)])
def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, text, line):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "lora" / "default.yaml").write_text("# python run.py lora.r=16\n" + text)
    run = run_lorapod("-cp", str(conf), f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    assert_one_clear_line(run, f"{conf / 'lora' / 'default.yaml'}, line {line}")
    assert not (tmp_path / "run").exists()


def test_help_cfg_and_a_good_sweep_still_work(tmp_path):
    assert run_lorapod("--help", timeout=120).proc.returncode == 0
    shown = run_lorapod("lora.r=4", "--cfg", "job", timeout=120)
    assert shown.proc.returncode == 0 and "r: 4" in shown.proc.stdout, shown.output
    sweep = run_lorapod("--multirun", "lora.r=4,8", "pipeline=prepare", f"hydra.sweep.dir={tmp_path}", timeout=300)
    assert sweep.proc.returncode == 0, sweep.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["0", "1", "datasets"]  # + their one dataset


def test_a_bad_value_in_a_sweep_still_exits_2_from_validation(tmp_path):
    """engine.exit_status(): a job refused by engine/validate.py makes the whole sweep exit 2."""
    run = run_lorapod("-m", "lora.r=4,0", "pipeline=prepare", f"hydra.sweep.dir={tmp_path}", timeout=300)
    assert run.proc.returncode == 2, run.output
    assert "lora.r: must be > 0" in run.output

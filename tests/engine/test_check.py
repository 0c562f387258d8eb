"""engine.check composes and validates experiment files as a run would, lists every problem with its file and
key, and --diff shows what a change to conf/ does to each experiment's resolved values."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import PYTHON, REPO, lorapod_env, run_lorapod


def check(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    env = env or lorapod_env()
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([PYTHON, "-m", "engine.check", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def conf(tmp_path):
    """A copy of the project's conf/ to break."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    return tmp_path / "conf"


def test_the_shipped_experiments_pass_with_the_missing_memory_folder_as_a_warning(tmp_path):
    env = {k: v for k, v in lorapod_env().items() if k != "LORAPOD_ALICE_MEMORIES"}
    env["HOME"] = str(tmp_path)  # no ~/metahuman here, whatever this machine has
    done = check(cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("ok") and "alice_weekly" in line and "gpu=rtx5090" in line for line in lines)
    assert any(line.startswith("ok") and "lr_rank_sweep" in line and "4 runs" in line for line in lines)
    price = yaml.safe_load((REPO / "conf/gpu/rtx5090.yaml").read_text())["gpu"]["price_per_hour"]
    alice = yaml.safe_load((REPO / "conf/experiment/alice_weekly.yaml").read_text())
    cap, budget = alice["pipeline"]["max_runtime_s"], alice["budget"]["max_usd"]
    # her memories are not here, so no plan: the budget bounds the cost, below the pod's lifetime cap
    assert budget < price * cap / 3600
    assert f"at most ${budget:.2f} (budget.max_usd; {cap / 3600:g} h cap x ${price:g}/h = ${price * cap / 3600:.2f}" \
        in done.stdout
    assert "warning" in done.stdout and "dataset.path: must be an existing folder" in done.stdout
    assert "RUNPOD_API_KEY" in done.stdout  # a warning too: CI has no key

    strict = check("--strict", cwd=tmp_path, env=env)
    assert strict.returncode == 2 and "dataset.path" in strict.stdout.split("problem(s):")[1]


def test_the_cost_is_the_plans_range_when_the_steps_are_known(conf, tmp_path):
    sweep = (conf / "experiment/lr_rank_sweep.yaml").read_text().replace("max_steps: 30", "max_steps: 300")
    (conf / "experiment/rented_sweep.yaml").write_text(sweep.replace("hydra:\n", "defaults:\n  - override /gpu: "
                                                                     "rtx5090\n\nhydra:\n", 1))
    done = check("conf/experiment/rented_sweep.yaml", cwd=tmp_path, env=lorapod_env())
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("ok") and "rented_sweep" in x]
    assert "gpu=rtx5090 (runpod)" in line and "(4 runs, plan: 300 steps" in line and "at most" not in line, line
    low, high = (float(x) for x in line.split("cost $")[1].split(" ")[0].split("-$"))
    assert 0 < low < high


def test_strict_passes_on_the_machine_that_has_the_memories_and_the_key(tmp_path):
    memories = tmp_path / "metahuman"
    (memories / "profiles" / "alice" / "memory" / "episodic").mkdir(parents=True)
    env = lorapod_env(LORAPOD_ALICE_MEMORIES=str(memories), RUNPOD_API_KEY="rpa_not_a_real_key")
    done = check("--strict", str(REPO / "conf/experiment/alice_weekly.yaml"), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"dataset=metahuman {memories}" in done.stdout and "warning" not in done.stdout
    assert "rpa_not_a_real_key" not in done.stdout + done.stderr


def test_a_broken_copy_lists_each_problem_with_file_and_key(conf, tmp_path):
    broken = yaml.safe_load((conf / "experiment/alice_weekly.yaml").read_text())
    broken["lora"]["r"] = 0
    broken["train"] = {"learning_rate": -1.0}
    (conf / "experiment/broken.yaml").write_text("# @package _global_\n" + yaml.safe_dump(broken))
    sweep = (conf / "experiment/lr_rank_sweep.yaml").read_text().replace("lora.r: 8,16", "lora.r: 8,0")
    (conf / "experiment/bad_sweep.yaml").write_text(sweep)
    (conf / "experiment/typo.yaml").write_text("# @package _global_\nlora:\n  rank: 16\n")

    done = check("--conf", "conf", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    problems = done.stdout.split("problem(s):")[1]
    assert "conf/experiment/broken.yaml: lora.r: must be > 0 (got 0)" in problems
    assert "conf/experiment/broken.yaml: train.learning_rate: must be > 0" in problems
    assert "conf/experiment/bad_sweep.yaml (hydra.sweeper.params: lora.r=0): lora.r: must be > 0" in problems
    assert "conf/experiment/typo.yaml" in problems and "rank" in problems
    status = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()[:6] if line.strip()}
    assert status == {"alice_weekly": "ok", "bad_sweep": "FAIL", "broken": "FAIL", "lr_rank_sweep": "ok",
                      "optuna_lr_rank": "ok", "typo": "FAIL"}

    alone = check("conf/experiment/lr_rank_sweep.yaml", cwd=tmp_path)  # the named files only
    assert alone.returncode == 0 and "broken" not in alone.stdout, alone.stdout


def git(*args: str, cwd) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


def test_diff_shows_the_changed_keys_and_the_added_and_removed_experiments(conf, tmp_path):
    git("init", "-q", cwd=tmp_path)
    git("add", "conf", cwd=tmp_path)
    git("commit", "-qm", "base", cwd=tmp_path)
    weekly = conf / "experiment/alice_weekly.yaml"
    weekly.write_text(weekly.read_text().replace("  r: 16\n", "  r: 32\n"))
    sweep = conf / "experiment/lr_rank_sweep.yaml"
    shutil.copy(sweep, conf / "experiment/rank_only.yaml")
    sweep.unlink()
    git("add", "-A", "conf", cwd=tmp_path)
    git("commit", "-qm", "change", cwd=tmp_path)
    weekly.write_text(weekly.read_text().replace("override /model: qwen3_8b", "override /model: llama3_1_8b"))

    done = check("--conf", str(conf), "--diff", "HEAD~1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  lora.r: 16 -> 32\n" in done.stdout
    assert "  model.name: qwen3_8b -> llama3_1_8b\n" in done.stdout  # uncommitted edits count too
    assert "rank_only: added" in done.stdout and "lr_rank_sweep: removed" in done.stdout

    same = check("--conf", str(conf), "--diff", "HEAD", "conf/experiment/rank_only.yaml", cwd=tmp_path)
    assert same.returncode == 0 and "rank_only: no change" in same.stdout, same.stdout + same.stderr

    unknown = check("--conf", str(conf), "--diff", "no-such-rev", cwd=tmp_path)
    assert unknown.returncode != 0 and "no-such-rev" in unknown.stderr


def test_an_experiment_is_the_whole_command_and_a_sweep_file_runs_its_sweep(tmp_path):
    shown = run_lorapod("+experiment=alice_weekly", "--cfg", "job", timeout=120)
    assert shown.proc.returncode == 0, shown.output
    cfg = yaml.safe_load(shown.proc.stdout)
    assert (cfg["gpu"]["name"], cfg["provider"]["name"], cfg["model"]["name"], cfg["lora"]["r"]) == \
        ("rtx5090", "runpod", "qwen3_8b", 16)

    sweep = run_lorapod("-m", "+experiment=lr_rank_sweep", "pipeline=prepare", f"hydra.sweep.dir={tmp_path}",
                        timeout=600)
    assert sweep.proc.returncode == 0, sweep.output
    points = set()
    for job in sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit()):  # not datasets/
        overrides = yaml.safe_load((job / ".hydra/overrides.yaml").read_text())
        points.add(tuple(sorted(o for o in overrides if o.startswith(("lora.r=", "train.learning_rate=")))))
    assert points == {(f"lora.r={r}", f"train.learning_rate={lr}") for r in (8, 16) for lr in ("0.0001", "0.0002")}


def test_the_install_root_and_ollama_are_facts_of_the_machine_not_problems_of_the_file(conf, tmp_path):
    """A reviewer's CI has no ~/metahuman and no ollama: an experiment that installs into MetaHuman OS and creates
    the Ollama model passes with warnings, each under the key the file sets; --strict makes them problems."""
    weekly = yaml.safe_load((conf / "experiment/alice_weekly.yaml").read_text())
    weekly["export"] = {"ollama": True, "ollama_create": True, "metahuman": True}
    (conf / "experiment/roundtrip.yaml").write_text("# @package _global_\n" + yaml.safe_dump(weekly))
    elsewhere = dict(weekly, export={"metahuman": True, "metahuman_root": str(tmp_path / "no-such-root")})
    (conf / "experiment/elsewhere.yaml").write_text("# @package _global_\n" + yaml.safe_dump(elsewhere))
    (tmp_path / "bin").mkdir()  # a PATH without ollama, whatever this machine has
    env = {k: v for k, v in lorapod_env(PATH=str(tmp_path / "bin")).items() if k != "LORAPOD_ALICE_MEMORIES"}
    env["HOME"] = str(tmp_path)

    done = check("--conf", "conf", "conf/experiment/roundtrip.yaml", "conf/experiment/elsewhere.yaml", cwd=tmp_path,
                 env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = done.stdout.split("warning(s)")[1]
    assert "roundtrip.yaml: export.ollama_create: needs the ollama command on PATH" in warnings
    assert "elsewhere.yaml: export.metahuman_root: " in warnings and "no-such-root is not a folder" in warnings
    assert "roundtrip.yaml: dataset.path: must be an existing folder" in warnings
    assert "roundtrip.yaml: export.metahuman_root" not in done.stdout  # the root is dataset.path there: that key
    strict = check("--strict", "--conf", "conf", "conf/experiment/roundtrip.yaml", cwd=tmp_path, env=env)
    problems = strict.stdout.split("problem(s):")[1]
    assert strict.returncode == 2 and "export.ollama_create: needs the ollama command" in problems


def test_the_files_own_mistakes_on_those_keys_stay_problems(conf, tmp_path):
    weekly = yaml.safe_load((conf / "experiment/alice_weekly.yaml").read_text())
    weekly["export"] = {"ollama": False, "ollama_create": True, "metahuman": True,
                        "metahuman_root": str(tmp_path / "metahuman" / "memory" / "episodic")}
    (conf / "experiment/wrong.yaml").write_text("# @package _global_\n" + yaml.safe_dump(weekly))
    env = {k: v for k, v in lorapod_env().items() if k != "LORAPOD_ALICE_MEMORIES"}
    env["HOME"] = str(tmp_path)
    done = check("--conf", "conf", "conf/experiment/wrong.yaml", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    problems = done.stdout.split("problem(s):")[1]
    assert "wrong.yaml: export.ollama_create: needs export.ollama=true" in problems
    assert "wrong.yaml: export.metahuman_root: " in problems and "inside the episodic memory folder" in problems

"""Check experiment files the way a run would, without running anything: for CI and a pre-commit hook.

    python -m engine.check                                   every conf/experiment/*.yaml
    python -m engine.check conf/experiment/alice_weekly.yaml  the named ones
    python -m engine.check --diff origin/main                what each experiment's resolved values become

Each experiment is composed with Hydra's own loader (engine/compose.py), every job of its sweep included
(hydra.sweeper.params and BasicSweeper's expansion), and validated as a run validates it (engine/validate.py:
the schema's rules and every stage's and provider's check_config). No API key is read from anywhere but the
environment, nothing touches the network, nothing is rented. One line per experiment, then every problem with
its file and key; exit 2 when there is any (a config error, as for run.py).

What a file cannot promise is a warning, not a problem: the facts of the machine that checks it (a memory folder
that exists only on the machine that trains, RUNPOD_API_KEY, an SSH key). A reviewer's CI has none of them, and
a check that failed there for their absence would be ignored or switched off. `--strict` makes them problems:
run it so on the machine that trains, before the cron job does.

The cost is the plan's low-high estimate (engine/plan/: phases, steps, the GPU candidates' prices) when the
number of training steps is known here: train.max_steps, or a dataset.source=jsonl file to count. A memory
folder's size is not (it lives on the machine that trains, and curating it is the run's work): then the cost is
an upper bound, gpu.price_per_hour times the pod's lifetime cap (the smaller of pipeline.max_runtime_s and
provider.max_runtime_s), or budget.max_usd when that is lower, per job. A run on this machine costs $0.

--diff BASE_REV composes each experiment from BASE_REV's conf/ (taken with `git archive` into a temporary
folder) and from the working tree's, and prints the resolved keys whose values differ, `lora.r: 8 -> 16`; a
sweep's swept values show as hydra.sweeper.params.<key>. Both sides are composed with today's schemas
(engine/schema.py), so the diff is what the change to conf/ does.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from engine.compose import CONF_DIR, CONFIG_ERRORS, OPTUNA_SWEEPER, jobs, one_line, sweep_base

# Keys whose rules test this machine rather than the file (checked only when the file sets a value).
MACHINE_KEYS = {
    "dataset.path": "the memory folder exists on the machine that trains",
    "dataset.user": "the profile exists in the memory folder of the machine that trains",
    "provider.key_path": "the SSH key exists on the machine that runs lorapod",
    "provider.python": "the interpreter exists on the machine that runs lorapod",
    "export.metahuman_root": "the MetaHuman OS folder exists on the machine that trains",
    "export.ollama_create": "Ollama is installed on the machine that runs lorapod",
}
# Keys with rules of both kinds: only a problem with these words is the machine's; the others are the file's
# (a dataset.path inside an episodic folder, export.ollama_create without export.ollama).
MACHINE_WORDS = {
    "dataset.path": "must be an existing",  # engine/validate.py
    "export.metahuman_root": "is not a folder",  # stages/install.py
    "export.ollama_create": "ollama command on PATH",  # stages/export.py
}


@dataclass
class Report:
    name: str
    path: Path
    summary: str = ""
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _rel(path: Path) -> Path:
    """A path as the reader would type it: relative to the current folder when inside it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def experiments(conf_dir: Path) -> list[Path]:
    return sorted((conf_dir / "experiment").glob("*.yaml"))


def _task(cfg: DictConfig) -> DictConfig:
    """The config a run's job gets: Hydra's own node removed, as run_job does."""
    task = cfg.copy()
    with open_dict(task):
        task.pop("hydra", None)
    return task


def _origin(key: str, path: Path, point: list[str], choices) -> str:
    """The file a key's value came from: this experiment (its body or its sweep), else the group option it picks."""
    swept = next((o for o in point if o.split("=", 1)[0] == key and not o.startswith("+experiment=")), None)
    if swept:
        return f"{_rel(path)} (hydra.sweeper.params: {swept})"
    if OmegaConf.select(OmegaConf.load(path), key, default=None) is not None:
        return str(_rel(path))
    group = key.split(".", 1)[0]
    choice = choices.get(group) if choices is not None else None
    return f"{_rel(path)} -> conf/{group}/{choice}.yaml" if choice else str(_rel(path))


def _machine(key: str, problem: str, task: DictConfig) -> str | None:
    """Why a problem is this machine's, not the file's; None when it is the file's."""
    if key.split(".", 1)[0] not in task:
        return "an environment variable of the machine that runs lorapod"
    if key in MACHINE_KEYS and OmegaConf.select(task, key, default=None, throw_on_missing=False) not in (None, "") \
            and MACHINE_WORDS.get(key, "") in problem:
        return MACHINE_KEYS[key]
    return None


def _known_examples(task: DictConfig) -> dict | None:
    """The dataset's size when this machine can tell it without curating: a JSONL file's rows (less the eval
    share). Tokens per example are then unknown: the plan counts each at train.max_seq_length, the most."""
    ds = task.dataset
    if ds.source != "jsonl" or not ds.path:
        return None
    path = Path(ds.path).expanduser()
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", errors="replace") as fh:
        rows = sum(1 for line in fh if line.strip())
    cap = ds.filters.max_examples
    rows = min(rows, cap) if cap else rows
    evals = round(rows * float(task.train.eval_fraction))
    return {"train": rows - evals, "eval": evals, "tokens_per_example": float(task.train.max_seq_length)}


def _cost(task: DictConfig) -> tuple[float, float, str]:
    """Low and high USD for one job, and how they were reached: the plan when the steps are known, else a bound."""
    if task.provider.name == "local":
        return 0.0, 0.0, "this machine"
    from engine.plan import estimate

    stats = _known_examples(task)
    if estimate.training_steps(task, stats["train"] if stats else None) is not None:
        plan = estimate.plan(task, stats)
        return plan["usd_low"], plan["usd_high"], f"plan: {plan['steps']} steps, {plan['minutes_low']:.0f}-" \
                                                  f"{plan['minutes_high']:.0f} min"
    caps = [c for c in (task.pipeline.get("max_runtime_s"), task.provider.get("max_runtime_s")) if c]
    price = float(task.gpu.price_per_hour or 0)
    budget = task.get("budget", {}).get("max_usd")
    if not caps or not price:
        if budget is not None:
            return 0.0, float(budget), "budget.max_usd"
        return 0.0, 0.0, "no price or no runtime cap to bound it"
    hours = min(caps) / 3600
    bound, how = price * hours, f"{hours:g} h cap x ${price:g}/h"
    if budget is not None and budget < bound:
        return 0.0, float(budget), f"budget.max_usd; {how} = ${bound:.2f}"
    return 0.0, bound, how + (f"; budget.max_usd ${budget:g}" if budget is not None else "")


def check_one(path: Path, strict: bool = False) -> Report:
    from engine.errors import ConfigError
    from engine.validate import validate

    path = path.resolve()
    report = Report(path.stem, _rel(path))
    try:
        composed = jobs([f"+experiment={path.stem}"], multirun=True, config_dir=path.parent.parent)
    except CONFIG_ERRORS as exc:  # the file does not compose: a bad key, option, value or YAML
        report.problems.append(f"{report.path}: {one_line(exc)}")
        report.summary = "does not compose"
        return report
    low = high = 0.0
    planned = True
    for point, cfg in composed:
        task = _task(cfg)
        try:
            validate(task)
        except ConfigError as exc:
            swept = " ".join(o for o in point if not o.startswith("+experiment="))
            job = f" [job {swept}]" if len(composed) > 1 else ""
            for problem in exc.problems:
                key = problem.split(":", 1)[0]
                why = None if strict else _machine(key, problem, task)
                line = f"{_origin(key, path, point, cfg.hydra.runtime.choices)}: {problem}{job}"
                if why:
                    line += f" (a fact of this machine, not of the file: {why})"
                target = report.warnings if why else report.problems
                if line not in target:
                    target.append(line)
        try:
            job_low, job_high, job_how = _cost(task)
        except CONFIG_ERRORS:  # a value validate() reported already: no estimate for this job
            job_low, job_high, job_how = 0.0, 0.0, "not estimated"
        low, high = low + job_low, high + job_high
        planned = planned and job_how.startswith(("plan", "this machine"))
    task = _task(composed[0][1])
    try:
        _, _, how = _cost(task)
    except CONFIG_ERRORS:
        how = "not estimated"
    count = len(composed)
    if composed[0][1].hydra.sweeper.get("_target_") == OPTUNA_SWEEPER:  # composed: its corners; run: n_trials jobs
        count = int(composed[0][1].hydra.sweeper.n_trials)
        low, high = low / len(composed) * count, high / len(composed) * count  # jobs differ in values, not price
    runs = f"{count} runs, " if count > 1 else ""
    if not high:
        bound = f"$0 ({runs}{how})"
    elif planned:
        bound = f"${low:.2f}-${high:.2f} ({runs}{how}" + (" for the first" if runs else "") + ")"
    else:
        bound = f"at most ${high:.2f} ({runs}{how}; an upper bound: the dataset's size is known only where it trains)"
    data = task.dataset.source + (f" {task.dataset.path}" if task.dataset.source != "sample" else "")
    report.summary = (f"gpu={task.gpu.name} ({task.provider.name})  model={task.model.name}  dataset={data}  "
                      f"cost {bound}")
    return report


def check(paths: list[Path], strict: bool = False, out=sys.stdout) -> int:
    reports = [check_one(p, strict) for p in paths]
    width = max((len(r.name) for r in reports), default=0)
    for r in reports:
        status = "FAIL" if r.problems else "ok"
        out.write(f"{status:4}  {r.name:{width}}  {r.summary}\n")
    warnings = [w for r in reports for w in r.warnings]
    problems = [p for r in reports for p in r.problems]
    if warnings:
        out.write(f"\n{len(warnings)} warning(s) (--strict makes them problems):\n")
        out.writelines(f"  - {w}\n" for w in warnings)
    if problems:
        out.write(f"\n{len(problems)} problem(s):\n")
        out.writelines(f"  - {p}\n" for p in problems)
        return 2
    if not reports:
        out.write("no experiment files to check\n")
    return 0


def flatten(cfg: DictConfig) -> dict[str, object]:
    """Resolved dotted keys of a sweep's base config, plus its swept values as hydra.sweeper.params.<key>."""
    params = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params) if params is not None else {}
    task = _task(cfg)
    try:
        data = OmegaConf.to_container(task, resolve=True)
    except CONFIG_ERRORS:  # an interpolation this machine cannot resolve: compare it as written
        data = OmegaConf.to_container(task, resolve=False)
    flat: dict[str, object] = {f"hydra.sweeper.params.{k}": v for k, v in params.items()}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    walk("", data)
    return flat


def _show(value) -> str:
    return "(absent)" if value is _ABSENT else str(value)


_ABSENT = object()


def _conf_at(rev: str, conf_dir: Path, into: Path) -> Path:
    """conf/ as it was at rev, extracted into a folder (git archive: the repository's own files, no checkout)."""
    top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=conf_dir, check=True,
                              capture_output=True, text=True).stdout.strip())
    rel = conf_dir.resolve().relative_to(top.resolve()).as_posix()
    archived = subprocess.run(["git", "archive", "--format=tar", rev, rel], cwd=top, capture_output=True)
    if archived.returncode != 0:
        raise SystemExit(f"cannot read {rel}/ at {rev}: {archived.stderr.decode().strip()}: name a commit, branch "
                         "or tag of this repository (git log --oneline)")
    with tarfile.open(fileobj=io.BytesIO(archived.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / rel


def diff(rev: str, conf_dir: Path, names: list[str] | None = None, out=sys.stdout) -> int:
    with tempfile.TemporaryDirectory(prefix="lorapod-diff-") as tmp:
        base_dir = _conf_at(rev, conf_dir, Path(tmp))
        now = {p.stem for p in experiments(conf_dir)}
        then = {p.stem for p in experiments(base_dir)}
        wanted = sorted((now | then) if names is None else set(names))
        failed = False
        for name in wanted:
            if name not in then:
                out.write(f"{name}: added (not at {rev})\n")
                continue
            if name not in now:
                out.write(f"{name}: removed (was conf/experiment/{name}.yaml at {rev})\n")
                continue
            sides = []
            for where, folder in ((rev, base_dir), ("the working tree", conf_dir)):
                try:
                    sides.append(flatten(sweep_base([f"+experiment={name}"], config_dir=folder)))
                except CONFIG_ERRORS as exc:
                    out.write(f"{name}: does not compose at {where}: {one_line(exc)}\n")
                    failed = failed or folder == conf_dir
                    break
            if len(sides) < 2:
                continue
            old, new = sides
            changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k, _ABSENT) != new.get(k, _ABSENT)]
            out.write(f"{name}: {'no change' if not changed else f'{len(changed)} key(s) changed'}\n")
            for key in changed:
                out.write(f"  {key}: {_show(old.get(key, _ABSENT))} -> {_show(new.get(key, _ABSENT))}\n")
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="experiment files (default: every conf/experiment/*.yaml)")
    parser.add_argument("--conf", type=Path, default=None, help="the config folder (default: this project's conf/)")
    parser.add_argument("--diff", metavar="BASE_REV", help="print the resolved keys that differ from BASE_REV")
    parser.add_argument("--strict", action="store_true", help="this machine's facts (folders, keys) are problems too")
    args = parser.parse_args(argv)
    from engine.secrets import load_dotenv

    load_dotenv()  # as a run does: a key in .env counts as set
    for path in args.files:
        if not path.is_file() or path.parent.name != "experiment":
            parser.error(f"{path}: not an experiment file (expected <conf>/experiment/<name>.yaml)")
    conf_dir = args.conf or (args.files[0].resolve().parent.parent if args.files else CONF_DIR)
    if args.diff:
        return diff(args.diff, conf_dir, [p.stem for p in args.files] or None)
    return check([p.resolve() for p in args.files] or experiments(conf_dir), args.strict)


if __name__ == "__main__":
    sys.exit(main())

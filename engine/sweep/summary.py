"""The sweep's table: every job of the sweep folder, best first, printed once and written to sweep-summary.csv.

Read from what each job left in its folder (run-summary.json, state.json, .hydra/overrides.yaml), so it is the
same for the basic launcher, joblib's workers and Optuna's repeated launches, and for an interrupted sweep.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

CSV_NAME = "sweep-summary.csv"
EXIT_CODES = {"succeeded": 0, "detached": 0, "interrupted": 130, "refused": 2}  # other statuses: 1
GOOD = ("succeeded", "detached")  # ranked by eval loss; every other status goes last


@dataclass
class Job:
    folder: Path
    name: str  # the folder below the sweep folder: Hydra's job number
    overrides: list[str] = field(default_factory=list)
    status: str = "unknown"
    eval_loss: float | None = None
    cost_usd: float | None = None
    cost_kind: str = ""  # actual (what the provider billed) or estimate (billed seconds x $/h)
    adapter_id: str | None = None
    gate: str | None = None  # the registry gate: active or rejected
    run_id: str | None = None
    exit_code: int = 1
    error: str | None = None

    @property
    def sort_key(self) -> tuple:
        num = int(self.name) if self.name.isdigit() else 10**9
        return (self.status not in GOOD, self.eval_loss is None, self.eval_loss or 0.0, num, self.name)


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _overrides(folder: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in data] if isinstance(data, list) else []


def read_job(folder: Path, sweep_dir: Path) -> Job:
    job = Job(folder=folder, name=str(folder.relative_to(sweep_dir)), overrides=_overrides(folder))
    summary, state = _json(folder / "run-summary.json"), _json(folder / "state.json")
    if summary is None:
        # No summary: the job died before writing one (or is still running in a process that was killed).
        job.status = f"no summary ({state.get('status')})" if state else "no summary"
        job.run_id = (state or {}).get("run_id")
        job.error = f"{folder / 'run-summary.json'} is missing or unreadable"
        return job
    job.status = str(summary.get("status") or "unknown")
    job.run_id = summary.get("run_id")
    job.error = summary.get("error")
    loss = (summary.get("metrics") or {}).get("eval_loss_after")
    job.eval_loss = float(loss) if isinstance(loss, (int, float)) else None
    if summary.get("cost_usd_actual") is not None:
        job.cost_usd, job.cost_kind = float(summary["cost_usd_actual"]), "actual"
    elif summary.get("cost_usd_estimate") is not None:
        job.cost_usd, job.cost_kind = float(summary["cost_usd_estimate"]), "estimate"
    adapter = summary.get("adapter") or {}
    job.adapter_id, job.gate = adapter.get("id"), adapter.get("status")
    code = summary.get("exit_code")
    job.exit_code = int(code) if isinstance(code, int) else EXIT_CODES.get(job.status, 1)
    return job


def jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder of the sweep (one holding .hydra/), best first."""
    folders = sorted({p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()}) if sweep_dir.is_dir() else []
    return sorted((read_job(f, sweep_dir) for f in folders), key=lambda j: j.sort_key)


def _varying(all_jobs: list[Job]) -> tuple[list[str], dict[str, list[str]]]:
    """The overrides every job shares, and what is left of each job's (what the sweep varied)."""
    if len(all_jobs) < 2:
        return [], {j.name: j.overrides for j in all_jobs}
    common = [o for o in all_jobs[0].overrides if all(o in j.overrides for j in all_jobs[1:])]
    return common, {j.name: [o for o in j.overrides if o not in common] for j in all_jobs}


def _cost(job: Job) -> str:
    return "-" if job.cost_usd is None else f"${job.cost_usd:.4f} {job.cost_kind}"


def headline(all_jobs: list[Job], sweep_dir: Path, varying: dict[str, list[str]]) -> str:
    best = next((j for j in all_jobs if j.status in GOOD and j.eval_loss is not None), None)
    if best is None:
        return f"sweep {sweep_dir}: {len(all_jobs)} job(s), none finished with an eval loss: no best job"
    what = " ".join(varying.get(best.name) or best.overrides) or "no overrides"
    return (f"sweep {sweep_dir}: {len(all_jobs)} job(s); best: job {best.name} ({what}), eval loss "
            f"{best.eval_loss:.4f}, {best.folder}")


def table(all_jobs: list[Job], sweep_dir: Path) -> str:
    common, varying = _varying(all_jobs)
    head = ("job", "overrides", "status", "eval loss", "cost", "adapter", "gate")
    rows = [(j.name, " ".join(varying[j.name]) or "-", j.status,
             "-" if j.eval_loss is None else f"{j.eval_loss:.4f}", _cost(j), j.adapter_id or "-", j.gate or "-")
            for j in all_jobs]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [headline(all_jobs, sweep_dir, varying)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    if common:
        lines.append(f"every job: {' '.join(common)}")
    failed = [j for j in all_jobs if j.status not in GOOD and j.error]
    lines += [f"job {j.name} {j.status}: {' '.join(j.error.split())}" for j in failed]
    lines.append(f"table: {sweep_dir / CSV_NAME}")
    return "\n".join(lines)


def write_csv(all_jobs: list[Job], sweep_dir: Path) -> Path:
    path = sweep_dir / CSV_NAME
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["rank", "job", "overrides", "status", "eval_loss", "cost_usd", "cost_kind", "adapter_id",
                         "gate", "run_dir", "error"])
        for rank, j in enumerate(all_jobs, 1):
            writer.writerow([rank, j.name, " ".join(j.overrides), j.status,
                             "" if j.eval_loss is None else j.eval_loss, "" if j.cost_usd is None else j.cost_usd,
                             j.cost_kind, j.adapter_id or "", j.gate or "", str(j.folder), j.error or ""])
    return path


def report(sweep_dir: Path) -> list[Job]:
    """Print the table and write the CSV; returns the jobs, best first."""
    all_jobs = jobs(sweep_dir)
    if sweep_dir.is_dir():
        write_csv(all_jobs, sweep_dir)
        print(table(all_jobs, sweep_dir), flush=True)
    return all_jobs

"""How a sweep ends, in its main process: the final pod check, the table, and the exit code from the jobs.

Started by the Hydra callback (engine/sweep/callback.py) at on_multirun_start; finished at on_multirun_end, or
at exit when the sweep was cut short (a Ctrl-C in the basic launcher's in-process job raises SystemExit, and Hydra
then calls no on_multirun_end): either way once.
"""
from __future__ import annotations

import atexit
from pathlib import Path

_sweep: dict = {}  # this process's sweep: dir, parallel, and once finished: codes


def start(sweep_dir: Path, parallel_jobs: bool) -> None:
    from engine.sweep import parallel

    _sweep.clear()
    _sweep.update(dir=Path(sweep_dir).resolve(), parallel=parallel_jobs, finished=False, job_codes=[], reaper=0)
    if parallel_jobs:
        parallel.guard_main(_sweep["dir"])
    atexit.register(finish)


def finish() -> None:
    """The final pod check, then the table (printed once, CSV beside it)."""
    from engine.sweep import reaper, summary

    if not _sweep or _sweep["finished"]:
        return
    _sweep["finished"] = True
    all_jobs = summary.jobs(_sweep["dir"])
    try:
        _sweep["reaper"] = reaper.reap(all_jobs, _sweep["dir"])
    except Exception as exc:  # the table must still come
        print(f"final check FAILED: {type(exc).__name__}: {exc}; check yourself: python -m engine.reap "
              f"--runs-dir {_sweep['dir']}")
        _sweep["reaper"] = 1
    all_jobs = summary.report(_sweep["dir"])
    _sweep["job_codes"] = [j.exit_code for j in all_jobs]


def sweep_exit_code() -> int:
    """0 outside a sweep's main process; else the worst of the jobs' codes, 130 when the sweep took a signal,
    1 when the final check could not clear every pod."""
    from engine.sweep import parallel

    if not _sweep:
        return 0
    if not _sweep["finished"]:
        finish()
    codes = [*_sweep["job_codes"], _sweep["reaper"]]
    if parallel.interrupted():
        codes.append(130)
    return max(codes, default=0)

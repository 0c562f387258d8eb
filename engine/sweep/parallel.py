"""Parallel sweeps (hydra/launcher=joblib): a Ctrl-C stops every job, and no job is killed mid-cleanup.

joblib answers any exception in the sweep's main process (a KeyboardInterrupt included) and a worker that dies
by aborting: loky SIGKILLs every worker, so a job deleting its pod would be cut off mid-delete (loky's
process_executor.kill_workers; joblib's LokyBackend.abort_everything). A worker that is idle when the terminal's
Ctrl-C reaches it dies of its KeyboardInterrupt, which breaks the pool the same way. So:

- the main process blocks SIGINT and SIGTERM for the whole sweep and takes them in a thread of its own
  (sigtimedwait; its main thread's handler hands over what a thread made before the block took); workers spawned
  after that inherit the blocked mask, so an idle worker never dies of one;
- a job, when it starts in a worker, leaves the terminal's process group, ignores the signals outside its
  stages, and unblocks them: from then on it hears exactly what the main process forwards to it, once per
  signal the main process got (from the terminal's group, or sent to it alone);
- on a signal the main process first writes <sweep>/.lorapod-stop, then forwards the signal to every job whose
  state.json says it is running in a live process. A job checks the marker before each stage, after it wrote its
  state.json: whichever comes first, the job stops, its pod is deleted, and jobs not started yet do not rent;
- an interrupted job in a worker returns (the runner raises SystemExit only in the main process), so joblib
  collects every job and kills none;
- a sweeper that launches in batches (Optuna: n_trials in batches of n_jobs) would go on launching after the
  stop, and every later job would only be interrupted before its first stage (Optuna: a FAIL trial each). The
  launcher's launch therefore ends the sweep, in the main thread, when it is called after a signal was taken.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import threading
from pathlib import Path

from engine import process
from engine.errors import Interrupted
from engine.state import StageRecord, now

MAIN_PID_ENV = "LORAPOD_SWEEP_PID"  # set in the sweep's main process; a job in another process is a worker's
SWEEP_DIR_ENV = "LORAPOD_SWEEP_DIR"
STOP_FILE = ".lorapod-stop"
SIGNALS = {signal.SIGINT, signal.SIGTERM}


def in_worker() -> bool:
    """Whether this process runs jobs for a parallel sweep's main process (a loky worker)."""
    pid = os.environ.get(MAIN_PID_ENV)
    return bool(pid) and pid != str(os.getpid())


def _stop_file() -> Path | None:
    folder = os.environ.get(SWEEP_DIR_ENV)
    return Path(folder) / STOP_FILE if folder else None


def stop_requested() -> str | None:
    """The signal's name when the sweep was asked to stop, else None."""
    path = _stop_file()
    if path is None or not in_worker():
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or "a signal"
    except OSError:
        return None


def raise_if_stopped(ctx, stage: str) -> None:
    """Before a stage (not an always-stage) of a worker's job: stop here when the sweep was stopped."""
    name = stop_requested()
    if name:
        message = f"the sweep was stopped by {name} before stage {stage}"
        ctx.state.stages[stage] = StageRecord(status="interrupted", started_at=now(), ended_at=now(), error=message)
        raise Interrupted(message, "nothing more is started; cleanup still runs")


def enter_job(save) -> None:
    """In a worker, before the job's first stage: out of the terminal's process group, signals ignored between
    stages (a pending one from the idle time is dropped: the main process forwards what counts), then unblocked.
    `save` writes state.json, which is how the main process finds this job to forward a signal to."""
    if not in_worker():
        return
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # already a group leader: the terminal's Ctrl-C still reaches the main process, which forwards it
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # writing logs from a background group under `stty tostop`
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    save()


class _Watcher:
    """The main process's signal taker: writes the stop marker, then forwards each signal to the running jobs."""

    def __init__(self, sweep_dir: Path):
        self.sweep_dir = sweep_dir
        self.received: list[str] = []
        self.forwarded: dict[int, int] = {}  # pid -> how many signals it was sent
        self._stop = threading.Event()
        self.queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="lorapod-sweep-signals", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def caught(self, signum, frame) -> None:
        """The main thread's handler, for a signal a thread that does not block it took (a native thread that
        existed before the block: numpy's BLAS pool): handed to the watcher thread, never raised in joblib's loop."""
        self.queue.put(signum)  # SimpleQueue.put is safe to call from a signal handler

    def _loop(self) -> None:
        while not self._stop.is_set():
            info = signal.sigtimedwait(SIGNALS, 0.1)
            if info is not None:
                self.handle(info.si_signo)
            while not self.queue.empty():
                self.handle(self.queue.get())

    def handle(self, signum: int) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        try:
            (self.sweep_dir / STOP_FILE).write_text(name, encoding="utf-8")  # before looking for jobs: see above
        except OSError:
            pass
        pids = running_jobs(self.sweep_dir)
        for pid in pids:
            try:
                os.kill(pid, signum)
                self.forwarded[pid] = self.forwarded.get(pid, 0) + 1
            except ProcessLookupError:
                pass
        again = len(self.received) > 1
        print(f"{name}: stopping the sweep: {len(pids)} running job(s) told to stop"
              f"{' again (they are cleaning up)' if again else ''}; each deletes its pod before it ends, and no "
              "further job starts", flush=True)


def running_jobs(sweep_dir: Path) -> list[int]:
    """Pids of this machine's processes running a job of the sweep (state.json: running, owner alive), the main
    process excepted (its own jobs hear its signals directly)."""
    pids = set()
    for path in sweep_dir.rglob("state.json"):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        owner = state.get("owner") or {}
        # process.alive: a pid the kernel gave to another process since must never get our signal
        if (state.get("status") == "running" and owner.get("pid") != os.getpid()
                and process.alive(owner, state.get("started_at")) is True):
            pids.add(owner["pid"])
    return sorted(pids)


_watcher: _Watcher | None = None


def guard_main(sweep_dir: Path) -> None:
    """In the sweep's main process, before any worker exists (on_multirun_start)."""
    global _watcher
    if _watcher is not None or threading.current_thread() is not threading.main_thread():
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        (sweep_dir / STOP_FILE).unlink()
    except FileNotFoundError:
        pass
    os.environ[MAIN_PID_ENV] = str(os.getpid())
    os.environ[SWEEP_DIR_ENV] = str(sweep_dir)
    # Blocked: inherited by every thread and worker made from now on. Blocked before the imports (numpy's threads
    # start with them), and again after the resource trackers, whose start unblocks them (see below).
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    _start_resource_trackers()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    _guard_launch()
    _watcher = _Watcher(sweep_dir)
    for s in SIGNALS:
        signal.signal(s, _watcher.caught)
    _watcher.start()


def _start_resource_trackers() -> None:
    """Start the resource trackers loky uses before the signals are blocked: Python 3.11's (multiprocessing's
    resource_tracker.ensure_running) UNBLOCKS SIGINT and SIGTERM in the thread that spawns it, which would let
    a Ctrl-C into joblib's result loop (seen: loky then SIGKILLed every worker)."""
    from multiprocessing import resource_tracker as stdlib_tracker

    from joblib.externals.loky.backend import resource_tracker as loky_tracker

    stdlib_tracker.ensure_running()
    loky_tracker.ensure_running()


def _guard_launch() -> None:
    """Wrap the joblib launcher's launch (Hydra makes the launcher after on_multirun_start, so its class): called
    after a signal, it ends the sweep with the sweep's exit code instead of starting the next batch. The main
    thread never sees the signal itself (blocked), so this is where the sweeper's loop can be left. Optuna keeps
    the trials it asked for that batch as RUNNING in its storage; they were never launched."""
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    launch = JoblibLauncher.launch
    if getattr(launch, "lorapod_guarded", False):
        return

    def guarded(self, job_overrides, initial_job_idx):
        if interrupted():
            from engine.sweep import outcome

            print(f"{interrupted()[0]}: the sweeper asked for {len(job_overrides)} more job(s); none is started",
                  flush=True)
            raise SystemExit(outcome.sweep_exit_code())
        return launch(self, job_overrides, initial_job_idx)

    guarded.lorapod_guarded = True
    JoblibLauncher.launch = guarded


def interrupted() -> list[str]:
    """The signals the main process took during the sweep."""
    return list(_watcher.received) if _watcher is not None else []

"""Map over runs of inputs on every core, in order: the per-input work of curation.

Workers are forked, so they share the parent's string-hash salt (curation.dedup relies on it) and the
function to apply needs no pickling. Where fork is unavailable (Windows), or the input is one run, the
map runs in this process: same results, one core.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence

# Inputs per run: about 8 runs per worker, so the last one to finish leaves little idle time, and at
# least 256 so that each run's overhead in the parent (a few ms) stays small next to its work.
MIN_CHUNK, MAX_CHUNK, TASKS_PER_WORKER = 256, 4096, 8

_work: Callable | None = None  # the function workers apply; set before the fork, inherited by the children


def map_chunks(fn: Callable[[Sequence], object], items: Sequence, workers: int) -> Iterator:
    """fn(run) for consecutive runs of items, in order."""
    global _work
    size = max(MIN_CHUNK, min(MAX_CHUNK, len(items) // (workers * TASKS_PER_WORKER)))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    if workers < 2 or len(chunks) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(fn, chunks)
        return
    _work = fn
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals) as pool:
            yield from pool.imap(_apply, chunks)
    finally:
        _work = None


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _apply(chunk: Sequence) -> object:
    return _work(chunk)


def _worker_signals() -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and terminates the pool, so a worker
    # neither raises nor prints a traceback; SIGTERM (the pool's terminate) must simply end it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

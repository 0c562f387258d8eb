"""An ordered map over worker processes: the per-input work of curation on every core.

Workers are forked, so they share the parent's string-hash salt (curation.dedup relies on it) and the
function to apply needs no pickling. Where fork is unavailable (Windows), or the input is a single chunk,
the map runs in this process: same results, one core.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence

CHUNK = 512  # inputs per task: large enough that pickling per task is noise, small enough to balance cores

_work: Callable | None = None  # the function workers apply; set before the fork, inherited by the children


def ordered_map(fn: Callable, items: Sequence, workers: int) -> Iterator:
    """fn(item) for each item, in order."""
    global _work
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    if workers < 2 or len(chunks) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(fn, items)
        return
    _work = fn
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals) as pool:
            for results in pool.imap(_apply, chunks):
                yield from results
    finally:
        _work = None


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _apply(chunk: Sequence) -> list:
    return [_work(item) for item in chunk]


def _worker_signals() -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and terminates the pool, so a worker
    # neither raises nor prints a traceback; SIGTERM (the pool's terminate) must simply end it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

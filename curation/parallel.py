"""Map over runs of inputs on every core, in order: the per-input work of curation.

Workers are forked, so they share the parent's string-hash salt (curation.dedup relies on it) and the
function to apply needs no pickling. Where fork is unavailable (Windows), or the input is one run, the
map runs in this process: same results, one core.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice

CHUNK = 1024  # inputs per run: enough that a run's overhead in the parent (a few ms) is noise next to its work

_work: Callable | None = None  # the function workers apply; set before the fork, inherited by the children


def map_chunks(fn: Callable[[list], object], items: Iterable, workers: int) -> Iterator:
    """fn(run) for consecutive runs of CHUNK items, in order.

    `items` may be a generator (the walk of a memory tree): it is consumed while the workers work.
    """
    global _work
    chunks = _runs(items)
    first = list(islice(chunks, 2))
    if workers < 2 or len(first) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(fn, chain(first, chunks))
        return
    _work = fn
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals) as pool:
            yield from pool.imap(_apply, chain(first, chunks))
    finally:
        _work = None


def _runs(items: Iterable) -> Iterator[list]:
    it = iter(items)
    while run := list(islice(it, CHUNK)):
        yield run


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _apply(chunk: list) -> object:
    return _work(chunk)


def _worker_signals() -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and terminates the pool, so a worker
    # neither raises nor prints a traceback; SIGTERM (the pool's terminate) must simply end it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

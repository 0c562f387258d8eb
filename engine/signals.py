"""Ctrl-C and SIGTERM: interrupt the running stage, then shield the always-stages (terminate) from more.

One request is deferred instead (`deferred()`): a create cut mid-flight could leave a pod nobody knows of,
so the signal is honoured as soon as it has been answered.

A second Ctrl-C while the pod is being deleted must not leave it billing, so during cleanup the signals
are only acknowledged. SIGKILL is still there for a cleanup that hangs, and says so in the log.

STOP (SIGUSR1) is how engine/budget.py's watcher thread stops the main thread when the run's spend reaches its
limit: handled like Ctrl-C (deferred during a create, only acknowledged during cleanup), but what it raises is
the watcher's (`stop_hook`), a stage failure, not an interrupt.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable

from loguru import logger

from engine.errors import Interrupted

STOP = signal.SIGUSR1
SIGNALS = (signal.SIGINT, signal.SIGTERM, STOP)
stop_hook: Callable[[], BaseException | None] | None = None  # the budget watcher's: what STOP raises, if anything


def armed() -> bool:
    """Whether STOP would reach one of these handlers (outside them its default action kills the process)."""
    return signal.getsignal(STOP) not in (signal.SIG_DFL, None)


def _raise(signum, frame):
    if signum == STOP:
        error = stop_hook() if stop_hook is not None else None
        if error is not None:
            raise error
        return
    raise Interrupted(f"received {signal.Signals(signum).name}", "the run stops; cleanup still runs")


def _acknowledge(signum, frame):
    if signum == STOP:
        return  # cleanup is what a reached budget asks for anyway
    logger.warning(f"{signal.Signals(signum).name} received during cleanup: finishing cleanup first "
                   "so nothing is left billing")


@contextlib.contextmanager
def handlers(handler):
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only reach the main thread; nothing to install elsewhere
        return
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def interruptible():
    return handlers(_raise)


def shielded():
    return handlers(_acknowledge)


class Deferred:
    """What arrived while deferred(); `raise_if_any()` honours it once the shielded call has returned."""

    def __init__(self):
        self.received: list[int] = []

    def __call__(self, signum, frame) -> None:
        self.received.append(signum)  # no logging here: the main thread may hold the log's lock

    def raise_if_any(self) -> None:
        others = [s for s in self.received if s != STOP]
        if others:  # Ctrl-C or SIGTERM wins over a reached budget: the user asked to stop everything
            logger.warning(f"{signal.Signals(others[0]).name} arrived while the request was in flight: "
                           "stopping now that it has been answered")
            _raise(others[0], None)
        if STOP in self.received:
            _raise(STOP, None)


@contextlib.contextmanager
def deferred():
    """Hold Ctrl-C and SIGTERM back for one short call whose answer must not be lost (a create: cut, it
    leaves a billing pod nobody knows the id of). The caller honours them with `.raise_if_any()`."""
    caught = Deferred()
    with handlers(caught):
        yield caught


def ignore_for_good() -> None:
    """An interrupted run is over: the process exits next, and no late Ctrl-C may cut that short."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)

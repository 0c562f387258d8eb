"""Ctrl-C and SIGTERM: interrupt the running stage, then shield the always-stages (terminate) from more.

One request is deferred instead (`deferred()`): a create cut mid-flight could leave a pod nobody knows of,
so the signal is honoured as soon as it has been answered.

A second Ctrl-C while the pod is being deleted must not leave it billing, so during cleanup the signals
are only acknowledged. SIGKILL is still there for a cleanup that hangs, and says so in the log.
"""
from __future__ import annotations

import contextlib
import signal
import threading

from loguru import logger

from engine.errors import Interrupted


def _raise(signum, frame):
    raise Interrupted(f"received {signal.Signals(signum).name}", "the run stops; cleanup still runs")


def _acknowledge(signum, frame):
    logger.warning(f"{signal.Signals(signum).name} received during cleanup: finishing cleanup first "
                   "so nothing is left billing")


@contextlib.contextmanager
def handlers(handler):
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only reach the main thread; nothing to install elsewhere
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
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
        if self.received:
            logger.warning(f"{signal.Signals(self.received[0]).name} arrived while the request was in flight: "
                           "stopping now that it has been answered")
            _raise(self.received[0], None)


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

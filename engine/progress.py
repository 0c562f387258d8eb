"""The training progress bar: step/total, loss, ETA — redrawn in place on a terminal, logged otherwise."""
from __future__ import annotations

import sys
import time

from loguru import logger


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    def __init__(self, label: str = "train", width: int = 28, stream=None):
        self.label, self.width = label, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.first: tuple[float, int] | None = None  # (time, step) of the first event: ETA from the rate since
        self.last_logged = 0.0
        self.drawn = False

    def update(self, step: int, total: int, loss: float | None = None) -> str:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, step)
        t0, s0 = self.first
        rate = (step - s0) / (now - t0) if now > t0 and step > s0 else None
        eta = _clock((total - step) / rate) if rate else "?"
        done = int(self.width * step / total) if total else 0
        bar = "█" * done + "·" * (self.width - done)
        loss_txt = f"loss {loss:.4f}" if loss is not None else ""
        line = f"{self.label} {step}/{total} [{bar}] {loss_txt}  ETA {eta}"
        logger.debug(line)
        if self.tty:
            self.stream.write("\r" + line)
            self.stream.flush()
            self.drawn = True
        elif now - self.last_logged >= 5 or step == total:
            logger.info(line)  # a pipe or CI log: a line every few seconds, not a flood
            self.last_logged = now
        return line

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

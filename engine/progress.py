"""The training progress bar: step/total, loss, ETA — redrawn in place on a terminal, logged otherwise."""
from __future__ import annotations

import math
import sys
import time

from loguru import logger

from engine.numbers import finite


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _count(value) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return max(0, int(number)) if math.isfinite(number) else 0


class ProgressBar:
    def __init__(self, label: str = "train", width: int = 28, stream=None):
        self.label, self.width = label, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.first: tuple[float, int] | None = None  # (time, step) of the first event: ETA from the rate since
        self.last_logged = 0.0
        self.drawn = False

    def update(self, step, total, loss=None) -> str:
        """Draws whatever the pod sent: a step past the total, a total of 0, a NaN or missing loss, or a value
        that is not a number at all never raise (the numbers come from the pod)."""
        step, total, loss = _count(step), _count(total), finite(loss, text=True)
        now = time.monotonic()
        if self.first is None:
            self.first = (now, step)
        t0, s0 = self.first
        rate = (step - s0) / (now - t0) if now > t0 and step > s0 else None
        eta = _clock((total - step) / rate) if rate and total >= step else "?"
        done = min(self.width, int(self.width * step / total)) if total > 0 else 0
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

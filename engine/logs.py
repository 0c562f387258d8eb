"""Logging: one human line per event on the console, everything in run.log, secrets redacted in both."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from loguru import logger

from engine.secrets import redact

CONSOLE_FORMAT = "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> <cyan>{extra[stage]: <9}</cyan> {message}"
FILE_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {extra[stage]: <9} | {message}"


def _redact(record) -> None:
    record["message"] = redact(record["message"])
    if record["exception"] is not None:
        # Tracebacks are rendered from the exception later; scrub its text where loguru will read it.
        exc = record["exception"].value
        if exc is not None and exc.args:
            exc.args = tuple(redact(str(a)) if isinstance(a, str) else a for a in exc.args)


class _StdlibToLoguru(logging.Handler):
    """paramiko, httpx and friends log through the standard library: send them through our sinks."""

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname if record.levelname in ("DEBUG", "INFO", "WARNING", "ERROR") else record.levelno
        logger.bind(stage=record.name.split(".")[0]).opt(depth=6).log(level, record.getMessage())


def setup(run_dir: Path | None, console_level: str = "INFO") -> None:
    logger.remove()
    logger.configure(extra={"stage": "lorapod"}, patcher=_redact)
    logger.add(sys.stderr, level=console_level, format=CONSOLE_FORMAT, colorize=None, backtrace=False, diagnose=False)
    if run_dir is not None:
        logger.add(run_dir / "run.log", level="DEBUG", format=FILE_FORMAT, backtrace=False, diagnose=False,
                   encoding="utf-8")
    logging.basicConfig(handlers=[_StdlibToLoguru()], level=logging.WARNING, force=True)

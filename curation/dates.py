"""Timestamps as seconds since the epoch, UTC: what the date filters and the time weighting compare.

MetaHuman OS writes `2025-10-19T14:30:00.000Z`; a config writes `2025-10-19`. A time without a zone is read
as UTC, so a run means the same thing on every machine.
"""
from __future__ import annotations

from datetime import datetime, timezone

DAY = 86400.0


def instant(text: str) -> float:
    """ISO 8601 date or date-time -> epoch seconds. Raises ValueError (or TypeError) on anything else."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def bound(text: str, end: bool) -> float:
    """A config's since/until, both inclusive: a bare date as `until` runs to the last millisecond of that day."""
    start = instant(text)
    return start + DAY - 0.001 if end and _is_bare_date(text) else start


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def _is_bare_date(text: str) -> bool:
    return "T" not in text and " " not in text.strip()

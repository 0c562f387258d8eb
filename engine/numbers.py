"""One rule for "a number we can use": losses, steps and amounts read from logs, events and records."""
from __future__ import annotations

import math


def finite(value, *, text: bool = False) -> float | None:
    """`value` as a finite float, or None: null, NaN, infinity, a list, and a bool (an int to Python, but a
    `true` in a log is not a loss) are all None. text=True also reads a number written as a string ("0.42"),
    for records a person may have edited by hand."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and text:
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None

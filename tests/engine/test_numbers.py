"""engine.numbers.finite: the one rule for a usable number, shared by train, plot, progress and the gate."""
from __future__ import annotations

import pytest

from engine.numbers import finite


@pytest.mark.parametrize("value, expected", [(1, 1.0), (0.25, 0.25), (-0.0, 0.0), (10**400, None), (True, None),
                                             (None, None), (float("nan"), None), (float("inf"), None),
                                             ("0.5", None), ([1.0], None), ({}, None)])
def test_only_a_finite_number_is_a_number(value, expected):
    assert finite(value) == expected


@pytest.mark.parametrize("value, expected", [("0.5", 0.5), (" 2 ", 2.0), ("nan", None), ("inf", None),
                                             ("loss", None), ("true", None), (False, None), (3, 3.0)])
def test_text_reads_a_number_written_as_a_string(value, expected):
    assert finite(value, text=True) == expected

"""The caps of dataset.filters: at most max_examples examples, and at most a share of them per type.

When a cap bites, the examples kept are those with the highest score, importance x time weight, where the
time weight is 2^(-age_days / half_life_days) and age is counted back from the reference date (the newest
memory unless dataset.filters.reference_date says otherwise, so the same folder always gives the same set).
An important memory from two half-lives ago (0.9 x 0.25) thus gives way to an ordinary one from yesterday
(0.5 x 0.98): the adapter should sound like the person now. Memories after the reference date count as
fresh (weight 1), so an earlier reference date lets importance alone rank everything since; a row
without a time has weight 1 too. (Moving the reference date later scales every weight alike and changes
nothing, which is why the newest memory is a safe default.)

A type's share is of the number of slots: min(max_examples, examples available). So type_share
{reflection: 0.6} leaves at least 40% of the slots to other types, as MetaHuman OS's curator did.
"""
from __future__ import annotations

import math

from curation.dates import DAY
from curation.example import Candidate


def select(candidates: list[Candidate], max_examples: int | None, type_share: dict[str, float],
           half_life_days: float, reference: float | None) -> list[Candidate]:
    """The candidates kept, best first; the rest are `over_cap`."""
    slots = len(candidates) if max_examples is None else min(max_examples, len(candidates))
    if slots == len(candidates) and not type_share:
        return candidates
    decay = math.log(2) / (half_life_days * DAY)

    def score(c: Candidate) -> float:
        age = max(0.0, reference - c.when) if c.when is not None and reference is not None else 0.0
        return c.importance * math.exp(-decay * age)

    limits = {kind: math.floor(share * slots) for kind, share in type_share.items()}
    taken: dict[str | None, int] = {}
    kept = []
    for c in sorted(candidates, key=score, reverse=True):  # stable: ties keep their order (newest first)
        if len(kept) == slots:
            break
        if c.type in limits and taken.get(c.type, 0) >= limits[c.type]:
            continue
        taken[c.type] = taken.get(c.type, 0) + 1
        kept.append(c)
    return kept

"""The caps of dataset.filters: at most max_examples examples, and at most a share of them per type.

When a cap bites, the examples kept are those with the highest score, importance x time weight, where the
time weight is 2^(-age_days / half_life_days) and age is counted back from the reference date (the newest
memory unless dataset.filters.reference_date says otherwise, so the same folder always gives the same set).
An important memory from two half-lives ago (0.9 x 0.25) thus gives way to an ordinary one from yesterday
(0.5 x 0.98): the adapter should sound like the person now. A row without a time has weight 1.

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

    def score(e: Candidate) -> float:
        age = reference - e.when if e.when is not None and reference is not None else 0.0
        return e.importance * math.exp(-decay * age)

    limits = {kind: math.floor(share * slots) for kind, share in type_share.items()}
    taken: dict[str | None, int] = {}
    kept = []
    for e in sorted(candidates, key=score, reverse=True):  # stable: ties keep their order (newest first)
        if len(kept) == slots:
            break
        if e.type in limits and taken.get(e.type, 0) >= limits[e.type]:
            continue
        taken[e.type] = taken.get(e.type, 0) + 1
        kept.append(e)
    return kept

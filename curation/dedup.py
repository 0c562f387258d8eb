"""Duplicate removal: exact (after normalisation) and near (Jaccard similarity of word shingles).

Examples are visited newest first and each is compared only with those already kept, so the newest of
every group survives. Normalisation ignores case, punctuation and spacing; exact duplicates share a digest
of the normalised words.

Near duplicates are found without comparing all pairs, by prefix filtering (Bayardo et al., "Scaling up
all pairs similarity search", WWW 2007): fix one global order of shingles; two sets with Jaccard >= t then
share one of their first |x| - ceil(t|x|) + 1 shingles (their prefix). Only kept examples' prefixes are
indexed, a new example meets just the examples its prefix shares a shingle with, and each of those is
verified with the exact Jaccard. The answer is exact (no sampling error, as MinHash would have) and the
work grows with the number of similar pairs, not with N^2, provided that shingles common to many texts
("i want to") come last in the order, out of the prefixes. Which shingles are common is learnt from a
sample of the inputs (common_shingles); everything else is ordered by hash, which needs no global pass
and so can be computed in the worker processes, one example at a time (Signer).

Shingles are hash() values of word tuples. String hashes are salted per interpreter, so every process
that signs examples must share the salt (forked workers do); the salt only reorders the work, it never
changes which pairs reach the threshold (up to a 2^-64 chance of two shingles colliding).
"""
from __future__ import annotations

import hashlib
import math
import string
from array import array
from collections import Counter
from collections.abc import Iterable
from itertools import filterfalse, islice

from curation.example import Candidate

_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation + "“”‘’…–—", " "))
_EPS = 1e-9  # t * n in floating point may land a hair above an integer
COMMON_MIN_COUNT = 2  # a shingle seen in this many sampled examples is treated as common


class Signer:
    """text -> (digest, shingles in the global order, prefix): the per-example half of deduplication."""

    def __init__(self, shingle_words: int, threshold: float, common: frozenset[int] = frozenset()):
        self.k = shingle_words
        self.threshold = threshold
        self.common = common

    def __call__(self, text: str) -> tuple[bytes, array, tuple[int, ...]]:
        words = text.lower().translate(_PUNCTUATION).split()
        digest = hashlib.blake2b(" ".join(words).encode(), digest_size=16).digest()
        shingles = self.shingles(words)
        n = len(shingles)
        size = n - math.ceil(self.threshold * n - _EPS) + 1
        ordered = sorted(shingles)  # by hash, except that common shingles go last
        prefix = tuple(islice(filterfalse(self.common.__contains__, ordered), size))
        if len(prefix) < size:
            prefix += tuple(filter(self.common.__contains__, ordered))[:size - len(prefix)]
        return digest, array("q", ordered), prefix

    def shingles(self, words: list[str]) -> set[int]:
        """k-word shingles as hashes; a text under k words is one shingle (none when it has no words)."""
        if len(words) <= self.k:
            return {hash(tuple(words))} if words else set()
        return set(map(hash, zip(*(words[i:] for i in range(self.k)))))


def common_shingles(sample: Iterable[array]) -> frozenset[int]:
    counts: Counter[int] = Counter()
    for shingles in sample:
        counts.update(shingles)
    return frozenset(s for s, c in counts.items() if c >= COMMON_MIN_COUNT)


def deduplicate(candidates: list[Candidate], threshold: float) -> tuple[list[Candidate], int, int]:
    """(kept, newest first; count of exact duplicates; count of near duplicates)."""
    newest_first = sorted(candidates, key=lambda c: -c.when if c.when is not None else math.inf)
    seen: set[bytes] = set()
    kept: list[Candidate] = []
    index: dict[int, list[Candidate]] = {}  # shingle -> kept candidates with it in their prefix
    exact = near = 0
    for c in newest_first:
        if c.digest in seen:
            exact += 1
            continue
        seen.add(c.digest)
        met = [others for others in map(index.get, c.prefix) if others]
        if met and _near_any(c, {id(o): o for others in met for o in others}.values(), threshold):
            near += 1
            continue
        kept.append(c)
        for g in c.prefix:
            others = index.get(g)
            if others is None:
                index[g] = [c]
            else:
                others.append(c)
    return kept, exact, near


def _near_any(c: Candidate, others: Iterable[Candidate], threshold: float) -> bool:
    mine = set(c.shingles)
    n = len(mine)
    for other in others:
        m = len(other.shingles)
        if threshold * max(n, m) > min(n, m) + _EPS:  # Jaccard <= min/max: the sizes alone rule it out
            continue
        common = len(mine.intersection(other.shingles))
        if common >= threshold * (n + m - common) - _EPS:
            return True
    return False

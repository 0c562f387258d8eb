"""Duplicate removal: exact (after normalisation) and near (Jaccard similarity of word shingles).

Examples are visited newest first and each is compared only with those already kept, so the newest of
every group survives. Normalisation ignores case, punctuation and spacing; exact duplicates share the hash
of the normalised words.

Near duplicates are found without comparing all pairs, by prefix filtering (Bayardo et al., "Scaling up
all pairs similarity search", WWW 2007): fix one global order of shingles; two sets with Jaccard >= t then
share one of their first |x| - ceil(t|x|) + 1 shingles (their prefix). Only kept examples' prefixes are
indexed, a new example meets just the examples its prefix shares a shingle with, and each of those is
verified with the exact Jaccard. The answer is exact (no sampling error, as MinHash would have) and the
work grows with the number of similar pairs, not with N^2, provided that shingles common to many texts
("i want to") come last in the order, out of the prefixes. Which shingles are common is learnt from a
sample of the examples; the rest are ordered by hash.

Shingles (and the exact-duplicate key) are hash() values of word tuples, made by Signer where the example
is made, in the worker processes. String hashes are salted per interpreter, so every process that signs
examples must share the salt (forked workers do); the salt only reorders the work, it never changes the
result (up to a 2^-64 chance of two different word tuples colliding).
"""
from __future__ import annotations

import math
import string
from array import array
from collections import Counter
from collections.abc import Iterable
from itertools import filterfalse, islice

from curation.example import Candidate

_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation + "“”‘’…–—", " "))
_EPS = 1e-9  # t * n in floating point may land a hair above an integer
# Common shingles are counted in every 10th example, from 2000 examples on (below that the index stays
# small whatever the order); seen twice there, a shingle is in a few texts per thousand.
SAMPLE_EVERY, SAMPLE_FROM, COMMON_MIN_COUNT = 10, 2000, 2
_Entry = tuple[Candidate, tuple[int, ...]]  # a kept candidate and its prefix, in the index


class Signer:
    """text -> (hash of its normalised words, its shingle hashes in ascending order)."""

    def __init__(self, shingle_words: int):
        self.k = shingle_words

    def __call__(self, text: str) -> tuple[int, array]:
        words = text.lower().translate(_PUNCTUATION).split()
        digest = hash(tuple(words))
        if len(words) <= self.k:  # a text under k words is one shingle (none when it has no words)
            return digest, array("q", [hash(tuple(words))] if words else [])
        return digest, array("q", sorted(set(map(hash, zip(*(words[i:] for i in range(self.k)))))))


def common_shingles(sample: Iterable[array]) -> frozenset[int]:
    counts: Counter[int] = Counter()
    for shingles in sample:
        counts.update(shingles)
    return frozenset(s for s, c in counts.items() if c >= COMMON_MIN_COUNT)


def deduplicate(candidates: list[Candidate], threshold: float,
                common: frozenset[int] | None = None) -> tuple[list[Candidate], int, int]:
    """(kept, newest first; memories in exact duplicates; memories in near duplicates).

    `common` orders those shingles last; by default it is learnt from a sample of the candidates.
    """
    if common is None:
        enough = len(candidates) >= SAMPLE_FROM
        common = common_shingles(c.shingles for c in candidates[::SAMPLE_EVERY]) if enough else frozenset()
    newest_first = sorted(candidates, key=lambda c: -c.when if c.when is not None else math.inf)
    seen: set[int] = set()
    kept: list[Candidate] = []
    # shingle -> (kept candidate, its prefix), or a list of them: most shingles are in one prefix only
    index: dict[int, _Entry | list[_Entry]] = {}
    exact = near = 0
    for c in newest_first:
        if c.digest in seen:
            exact += c.size
            continue
        seen.add(c.digest)
        prefix = _prefix(c.shingles, threshold, common)
        if any(map(index.__contains__, prefix)) and _near_kept(c, prefix, index, threshold):
            near += c.size
            continue
        kept.append(c)
        entry = (c, prefix)
        for g in prefix:
            others = index.get(g)
            if others is None:
                index[g] = entry
            elif type(others) is list:
                others.append(entry)
            else:
                index[g] = [others, entry]
    return kept, exact, near


def _prefix(shingles: array, threshold: float, common: frozenset[int]) -> tuple[int, ...]:
    """The first n - ceil(t n) + 1 shingles in the global order: by hash, common ones last."""
    n = len(shingles)
    size = n - math.ceil(threshold * n - _EPS) + 1
    prefix = tuple(islice(filterfalse(common.__contains__, shingles), size))
    if len(prefix) < size:
        prefix += tuple(filter(common.__contains__, shingles))[:size - len(prefix)]
    return prefix


def _near_kept(c: Candidate, prefix: tuple[int, ...], index: dict[int, _Entry | list[_Entry]],
               threshold: float) -> bool:
    """Whether a kept candidate sharing a prefix shingle with c is >= threshold similar to it.

    The first shared prefix shingle, at position i in c and j in the other, bounds the overlap by
    min(n - i, m - j): nothing before it is shared, or it would have been met first (the positional
    filter of Xiao et al., "Efficient similarity joins for near duplicate detection", WWW 2008). Most
    candidates that meet on a common-ish shingle fail this or the size check before any set is built.
    """
    mine = None
    n = len(c.shingles)
    met: set[int] = set()
    for i, g in enumerate(prefix):
        others = index.get(g)
        if others is None:
            continue
        for other, other_prefix in others if type(others) is list else (others,):
            if id(other) in met:
                continue
            met.add(id(other))
            m = len(other.shingles)
            need = threshold / (1 + threshold) * (n + m) - _EPS  # overlap that Jaccard >= threshold requires
            if min(n, m) < need or min(n - i, m - other_prefix.index(g)) < need:
                continue
            mine = mine or set(c.shingles)
            if len(mine.intersection(other.shingles)) >= need:
                return True
    return False

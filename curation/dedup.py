"""Duplicate removal: exact (after normalisation) and near (Jaccard similarity of word shingles).

Examples are visited newest first and each is compared only with those already kept, so the newest of
every group survives. Normalisation ignores case, punctuation and spacing; exact duplicates are found by
a digest of the normalised words.

Near duplicates are found without comparing all pairs, by prefix filtering (Bayardo et al., "Scaling up
all pairs similarity search", WWW 2007): order all shingles by how rare they are; two sets with Jaccard
>= t must then share one of their first |x| - ceil(t|x|) + 1 shingles (their "prefix"). Only kept sets'
prefixes are indexed, a new set is checked against the sets its prefix meets, and each candidate is
verified with the exact Jaccard, so the answer is exact (no sampling error as with MinHash) and the work
grows with the number of similar pairs, not with N^2. Rare-first ordering keeps common phrases ("I want
to") out of prefixes; it only needs approximate frequencies, so shingles are counted in 2^20 buckets.
"""
from __future__ import annotations

import hashlib
import math
import re
from array import array
from collections import Counter, defaultdict

from curation.example import Example

_WORD = re.compile(r"\w+")
_bucket = ((1 << 20) - 1).__and__
_EPS = 1e-9  # t * n in floating point may land a hair above an integer


def deduplicate(examples: list[Example], threshold: float, shingle_words: int) -> tuple[list[Example], int, int]:
    """(kept newest first, count of exact duplicates, count of near duplicates)."""
    newest_first = sorted(examples, key=lambda e: -e.when if e.when is not None else math.inf)
    seen: set[bytes] = set()
    unique: list[Example] = []
    shingles: list[array] = []
    for e in newest_first:
        words = _WORD.findall(e.text.casefold()) or e.text.split()
        key = hashlib.blake2b(" ".join(words).encode(), digest_size=16).digest()
        if key in seen:
            continue
        seen.add(key)
        unique.append(e)
        shingles.append(shingle_set(words, shingle_words))
    near = near_duplicates(shingles, threshold)
    kept = [e for e, is_near in zip(unique, near) if not is_near]
    return kept, len(examples) - len(unique), len(unique) - len(kept)


def shingle_set(words: list[str], k: int) -> array:
    """The set of k-word shingles, each as a 64-bit hash; a text under k words is one shingle.

    hash() of strings is salted per process; that only reorders the work, it never changes which pairs
    reach the threshold (up to a 2^-64 chance of two shingles colliding).
    """
    if len(words) <= k:
        return array("q", [hash(tuple(words))] if words else [])
    return array("q", set(map(hash, zip(*(words[i:] for i in range(k))))))


def near_duplicates(sets: list[array], threshold: float) -> list[bool]:
    """For each set in order: is it >= threshold similar to an earlier set that was not itself flagged?"""
    frequency: Counter[int] = Counter()
    for s in sets:
        frequency.update(map(_bucket, s))
    index: defaultdict[int, list[int]] = defaultdict(list)  # shingle -> kept sets with it in their prefix
    flags = []
    for i, s in enumerate(sets):
        n = len(s)
        ranked = sorted(zip(map(frequency.__getitem__, map(_bucket, s)), s))
        prefix = [g for _, g in ranked[: n - math.ceil(threshold * n - _EPS) + 1]]
        flags.append(_similar_to_kept(s, prefix, sets, index, threshold))
        if not flags[-1]:
            for g in prefix:
                index[g].append(i)
    return flags


def _similar_to_kept(s: array, prefix: list[int], sets: list[array], index: dict[int, list[int]],
                     threshold: float) -> bool:
    candidates = {j for g in prefix if g in index for j in index[g]}
    mine = None
    n = len(s)
    for j in candidates:
        m = len(sets[j])
        if threshold * max(n, m) > min(n, m) + _EPS:  # Jaccard <= min/max: the sizes alone rule it out
            continue
        mine = mine or set(s)
        common = len(mine.intersection(sets[j]))
        if common >= threshold * (n + m - common) - _EPS:
            return True
    return False

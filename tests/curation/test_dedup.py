"""curation.dedup: exact and near duplicates, the newest of each group kept, and no pair missed."""
import random

import pytest

from curation.dedup import Signer, common_shingles, deduplicate
from curation.example import Candidate


def candidates(texts, k=3):
    """One candidate per text; a later text is newer."""
    sign = Signer(k)
    return [Candidate(f"c{i}", "observation", float(i), 0.5, "{}", *sign(t)) for i, t in enumerate(texts)]


def kept_ids(texts, threshold=0.8, common=None):
    kept, exact, near = deduplicate(candidates(texts), threshold, common)
    return sorted(c.id for c in kept), exact, near


def test_exact_duplicates_ignore_case_punctuation_and_spacing_and_the_newest_stays():
    texts = ["We walked to the river, then home.", "we walked   to the river then home", "Something else entirely."]
    assert kept_ids(texts) == (["c1", "c2"], 1, 0)


LONG = ("the rain garden design needs more sedges near the water and fewer stones by the path today so we "
        "sketched three options and picked the one with the most shade before the soil test came back with "
        "more clay than we hoped")  # 42 words: one edit changes 3 of 40 shingles, Jaccard 37/43 = 0.86


def test_a_one_word_edit_is_a_near_duplicate_of_the_newer_text():
    base, edited = LONG, LONG.replace("fewer", "smaller")
    assert kept_ids([base, edited, "an unrelated note about piano practice and the chopin nocturne"]) == \
        (["c1", "c2"], 0, 1)


def test_dissimilar_texts_that_share_phrases_are_kept():
    a = "i want to go to the market on friday and buy bread and honey for the week"
    b = "i want to go to the studio on sunday and finish the mural before the opening"
    assert kept_ids([a, b]) == (["c0", "c1"], 0, 0)


def test_the_threshold_decides_what_is_near():
    edited = LONG.replace("fewer", "smaller")
    assert kept_ids([LONG, edited], threshold=0.87) == (["c0", "c1"], 0, 0)
    assert kept_ids([LONG, edited], threshold=0.85) == (["c1"], 0, 1)


def test_short_texts_compare_as_a_single_shingle():
    assert kept_ids(["ok fine", "OK, fine!", "fine ok"]) == (["c1", "c2"], 1, 0)


def brute_force(texts, threshold, k):
    """The definition, in O(N^2): newest first, drop a text >= threshold similar to any text kept before it."""
    sign = Signer(k)
    sets = [set(sign(t)[1]) for t in texts]
    digests = [sign(t)[0] for t in texts]
    kept, seen = [], set()
    for i in reversed(range(len(texts))):
        if digests[i] in seen:
            continue
        seen.add(digests[i])
        if not any(len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold for j in kept if sets[i] | sets[j]):
            kept.append(i)
    return sorted(f"c{i}" for i in kept)


def texts_with_near_duplicates(count, seed):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)] + ["the", "and", "i", "to"] * 10  # small vocabulary: many shared phrases
    texts = []
    for _ in range(count):
        if texts and rng.random() < 0.4:  # an edit of an earlier text: near duplicates at every similarity
            edited = rng.choice(texts).split()
            for _ in range(rng.randint(1, 6)):
                edited[rng.randrange(len(edited))] = rng.choice(words)
            texts.append(" ".join(edited))
        else:
            texts.append(" ".join(rng.choices(words, k=rng.randint(2, 30))))
    return texts


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("sampled_common", [False, True])
def test_prefix_filtering_finds_exactly_the_pairs_the_definition_finds(threshold, sampled_common):
    texts = texts_with_near_duplicates(400, threshold)
    common = common_shingles(c.shingles for c in candidates(texts[::5])) if sampled_common else frozenset()
    assert bool(common) is sampled_common
    kept, _, near = kept_ids(texts, threshold, common)
    assert kept == brute_force(texts, threshold, 3)
    assert near > 0


def test_common_shingles_learnt_from_a_sample_change_nothing_but_speed():
    texts = texts_with_near_duplicates(2100, 1)  # from 2000 examples on, deduplicate() samples by itself
    assert common_shingles(c.shingles for c in candidates(texts)[::10])  # as it does: there is something to learn
    assert kept_ids(texts) == kept_ids(texts, common=frozenset())
    assert kept_ids(texts)[0] == brute_force(texts, 0.8, 3)

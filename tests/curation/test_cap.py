"""curation.cap: the time-weighted cap on examples and the per-type share."""
from curation.cap import select
from curation.dates import DAY
from curation.example import Candidate

NOW = 1_760_000_000.0


def cand(name, kind="observation", days_old=0.0, importance=0.5):
    return Candidate(name, kind, NOW - days_old * DAY, importance, "{}", 0, None)


def ids(kept):
    return sorted(c.id for c in kept)


def test_no_cap_keeps_everything():
    pool = [cand("a"), cand("b", days_old=400)]
    assert ids(select(pool, None, {}, 30.0, NOW)) == ["a", "b"]


def test_the_cap_keeps_the_highest_importance_times_time_weight():
    pool = [cand("old-important", days_old=60, importance=0.9),  # 0.9 x 2^-2 = 0.225
            cand("new-ordinary", days_old=1, importance=0.5),  # 0.5 x 0.98
            cand("mid", days_old=30, importance=0.5)]  # 0.5 x 0.5
    assert ids(select(pool, 2, {}, 30.0, NOW)) == ["mid", "new-ordinary"]
    # A long half-life makes age matter less than importance.
    assert ids(select(pool, 2, {}, 3650.0, NOW)) == ["new-ordinary", "old-important"]


def test_memories_after_an_earlier_reference_date_count_as_fresh():
    pool = [cand("a", days_old=10, importance=0.5), cand("b", days_old=40, importance=0.9)]
    assert ids(select(pool, 1, {}, 30.0, NOW)) == ["a"]  # 0.5 x 0.79 vs 0.9 x 0.40
    assert ids(select(pool, 1, {}, 30.0, NOW - 50 * DAY)) == ["b"]  # both after it: importance decides
    assert ids(select(pool, 1, {}, 30.0, NOW + 1000 * DAY)) == ["a"]  # a later one scales both alike


def test_a_type_share_caps_one_type_and_leaves_the_rest_to_others():
    pool = [cand(f"r{i}", "reflection", days_old=i) for i in range(8)] + \
           [cand(f"o{i}", "observation", days_old=100 + i) for i in range(2)]
    kept = select(pool, None, {"reflection": 0.6}, 30.0, NOW)
    assert ids(kept) == ["o0", "o1", "r0", "r1", "r2", "r3", "r4", "r5"]  # 6 = floor(0.6 x 10) reflections
    kept = select(pool, 5, {"reflection": 0.6}, 30.0, NOW)
    assert ids(kept) == ["o0", "o1", "r0", "r1", "r2"]  # 3 = floor(0.6 x 5) of the 5 slots

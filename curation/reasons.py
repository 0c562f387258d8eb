"""Why a memory did not become an example: the names manifest.json counts, and the setting behind each.

The order is the order of the checks, so a memory that fails several is counted once, under the first: the
manifest reads as a funnel from files read to examples kept.
"""
from __future__ import annotations

# reason -> (what it means, the setting that decides it or what to do about it)
REASONS: dict[str, tuple[str, str]] = {
    "malformed": ("the file is not a readable memory: not UTF-8, not JSON, encrypted, empty, too large, or "
                  "without `content`/`timestamp`", "fix or decrypt the files listed under `malformed` in "
                  "manifest.json, or point dataset.path at the right folder"),
    "no_consent": ("metadata.trainingConsent is false", "always excluded: the user said no"),
    "not_allowed_type": ("its type is not in the allowed list", "dataset.filters.types"),
    "out_of_range": ("its timestamp is outside the date range", "dataset.filters.since / dataset.filters.until"),
    "low_importance": ("its importance is below the minimum", "dataset.filters.min_importance"),
    "no_tags_or_entities": ("it has neither tags nor entities (never organised)",
                            "dataset.filters.require_tags_or_entities / dataset.filters.tag_exempt_types"),
    "too_short": ("its content is shorter than the minimum", "dataset.filters.min_content_chars"),
    "no_response": ("a conversation without the persona's response", "nothing to learn from: no setting"),
    "empty_after_cleaning": ("nothing was left once <think> blocks and answer markers were removed",
                             "the text itself; see curation/clean.py"),
    "duplicate": ("the same text as a newer example (after normalisation)", "exact duplicates are always removed"),
    "near_duplicate": ("nearly the same text as a newer example",
                       "dataset.dedup.near_threshold (raise it towards 1.0 to keep more)"),
    "over_cap": ("beyond the cap on examples or on one type's share",
                 "dataset.filters.max_examples / dataset.filters.type_share"),
}


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(REASONS, 0)

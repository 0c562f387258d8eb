"""Why a memory did not become an example: the names manifest.json counts, and the setting behind each.

The order is the order of the checks, so a memory that fails several is counted once, under the first: the
manifest reads as a funnel from files read to examples kept.
"""
from __future__ import annotations

# reason -> (what it means, what to do about it)
REASONS: dict[str, tuple[str, str]] = {
    "malformed": ("the input is not a readable memory: not UTF-8, not JSON, encrypted, empty, too large, "
                  "without `content`/`timestamp`, or a link out of the memory folder",
                  "fix or decrypt the files listed under `malformed` in manifest.json, or point dataset.path at "
                  "the right folder"),
    "no_consent": ("metadata.trainingConsent is false", "the user excluded these memories; they are never trained on"),
    "not_allowed_type": ("its type is not in the allowed list", "allow more types in dataset.filters.types"),
    "out_of_range": ("its timestamp is outside the date range", "widen dataset.filters.since / dataset.filters.until"),
    "low_importance": ("its importance is below the minimum", "lower dataset.filters.min_importance"),
    "no_tags_or_entities": ("it has neither tags nor entities, so it was never organised",
                            "run MetaHuman OS's organizer, set dataset.filters.require_tags_or_entities=false, "
                            "or list the type in dataset.filters.tag_exempt_types"),
    "too_short": ("its content is shorter than the minimum", "lower dataset.filters.min_content_chars"),
    "no_response": ("a conversation without the persona's response", "without a response there is nothing to learn"),
    "empty_after_cleaning": ("nothing was left once <think> blocks and answer markers were removed",
                             "these texts were model reasoning only; there is nothing to keep"),
    "duplicate": ("the same text as a newer example, or as a newer exchange of its conversation, after "
                  "normalisation", "exact duplicates are always removed"),
    "near_duplicate": ("nearly the same text as a newer example",
                       "raise dataset.dedup.near_threshold towards 1.0 to keep more"),
    "over_cap": ("beyond the cap on examples or on one type's share",
                 "raise or clear dataset.filters.max_examples / dataset.filters.type_share"),
}


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(REASONS, 0)

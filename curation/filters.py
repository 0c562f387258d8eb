"""The per-memory filters of dataset.filters, checked in the order of curation.reasons.

Consent comes first: a memory the user excluded is counted as `no_consent` whatever else is wrong with it.
"""
from __future__ import annotations

from curation.dates import bound
from curation.memory import Memory


class MemoryFilter:
    def __init__(self, filters):
        """`filters` is dataset.filters (engine.schema.FiltersConfig), read once into plain values."""
        self.types = frozenset(filters.types)
        self.since = bound(filters.since, end=False) if filters.since else None
        self.until = bound(filters.until, end=True) if filters.until else None
        self.min_importance = filters.min_importance
        self.require_tags = filters.require_tags_or_entities
        self.tag_exempt = frozenset(filters.tag_exempt_types)
        self.min_chars = filters.min_content_chars

    def reason(self, mem: Memory) -> str | None:
        """Why this memory is dropped, or None to keep it."""
        if not mem.consent:
            return "no_consent"
        if mem.type not in self.types:
            return "not_allowed_type"
        if (self.since is not None and mem.when < self.since) or (self.until is not None and mem.when > self.until):
            return "out_of_range"
        if mem.importance < self.min_importance:
            return "low_importance"
        if self.require_tags and not mem.tagged and mem.type not in self.tag_exempt:
            return "no_tags_or_entities"
        # A short question with a real answer still teaches the persona's reply, so a conversation's
        # response counts towards its length.
        if len(mem.content.strip()) + len(mem.response.strip()) < self.min_chars:
            return "too_short"
        return None

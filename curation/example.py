"""One training example: a chat ending with the persona's answer, and where it came from."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Example:
    id: str
    type: str | None
    timestamp: str | None  # as the source wrote it
    when: float | None  # epoch seconds, for ordering and time weighting; None when the source has no time
    importance: float
    messages: list[dict[str, str]]
    text: str  # what deduplication compares: the words that came from the source, not from our templates
    source_id: str
    source_sha256: str  # of the memory file, or of the JSONL line

    def row(self) -> dict:
        """The train.jsonl / eval.jsonl row that remote_image/train_unsloth.py reads."""
        return {
            "id": self.id,
            "messages": self.messages,
            "metadata": {"source_ids": [self.source_id], "source_sha256": [self.source_sha256],
                         "type": self.type, "timestamp": self.timestamp},
        }

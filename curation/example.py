"""One training example: a chat ending with the persona's answer, and where it came from.

An Example is what conversion builds; a Candidate is the same example reduced to what the set-wide steps
(deduplication, caps, split, writing) need. Candidates are what worker processes send back, so they carry
the row already encoded and no text twice.
"""
from __future__ import annotations

import json
from array import array
from dataclasses import dataclass

# Made once (json.dumps(..., ensure_ascii=False) builds a new encoder on every call), and without the
# cycle check: a row is a tree. Both matter at one row per memory.
encode = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


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
    thread: str | None = None  # the conversation a conversation memory belongs to (curation.threads)

    def row(self) -> dict:
        """The train.jsonl / eval.jsonl row that remote_image/train_unsloth.py reads."""
        return {
            "id": self.id,
            "messages": self.messages,
            "metadata": {"source_ids": [self.source_id], "source_sha256": [self.source_sha256],
                         "type": self.type, "timestamp": self.timestamp},
        }


@dataclass(slots=True)
class Candidate:
    id: str
    type: str | None
    when: float | None
    importance: float
    line: str  # the row as one line of JSON (no newline)
    digest: int  # hash of the normalised words: exact duplicates share it
    shingles: array  # the text's shingle hashes, ascending (curation.dedup)
    thread: str | None = None  # where its memory's conversation is: turns sharing it become one example
    size: int = 1  # memories in the example: more than one for a multi-turn conversation

    def __reduce__(self):
        # Candidates cross process boundaries by the thousand: a plain tuple pickles in C, slots state does not.
        return Candidate, (self.id, self.type, self.when, self.importance, self.line, self.digest, self.shingles,
                           self.thread, self.size)

    def rename(self, new_id: str) -> None:
        row = json.loads(self.line)
        row["id"] = self.id = new_id
        self.line = encode(row)

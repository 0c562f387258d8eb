"""One MetaHuman OS episodic memory, read from its JSON object (format: shared/reference/metahuman-memory.md).

Only `content` and `timestamp` are required; a memory without them cannot be placed or taught, so it is
malformed. The optional fields get MetaHuman OS's own defaults (type observation, importance 0.5).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from curation.dates import instant

TYPES = ("conversation", "chat", "inner_dialogue", "reflection", "reflection_summary", "dream", "audio", "action",
         "journal", "observation")
CONVERSATION_TYPES = frozenset({"conversation", "chat"})
# MetaHuman OS stores some user turns as  Me: "..."  — the quotes belong to the wrapper, not to what was said.
_ME_WRAPPER = re.compile(r'\s*Me:\s*"(.*)"\s*', re.S)


class Malformed(Exception):
    """The input cannot be read as a memory or row; the message says why, for manifest.json."""


@dataclass(slots=True)
class Memory:
    id: str
    timestamp: str  # as written in the file, for the example's metadata
    when: float  # the timestamp as epoch seconds, UTC
    type: str
    content: str  # the Me: "..." wrapper removed
    response: str  # the persona's reply ("" when there is none)
    importance: float
    tagged: bool  # has at least one tag or entity
    consent: bool  # False only when metadata.trainingConsent is false
    # "conversation:<metadata.conversationId>", else "session:<metadata.sessionId>"; None for other types
    thread: str | None


def parse(obj: object, fallback_id: str) -> Memory:
    if not isinstance(obj, dict):
        raise Malformed(f"not a JSON object (a {type(obj).__name__})")
    content = obj.get("content")
    if not isinstance(content, str):
        raise Malformed("no `content` text")
    stamp = obj.get("timestamp")
    if not isinstance(stamp, str):
        raise Malformed("no `timestamp`")
    try:
        when = instant(stamp)
    except ValueError:
        raise Malformed(f"timestamp {stamp[:40]!r} is not ISO 8601") from None
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = None
    kind = str(obj.get("type") or "observation")
    importance = obj.get("importance", 0.5)
    response = obj.get("response")
    wrapped = _ME_WRAPPER.fullmatch(content)
    return Memory(
        id=str(obj.get("id") or fallback_id),
        timestamp=stamp,
        when=when,
        type=kind,
        content=wrapped.group(1) if wrapped else content,
        response=response if isinstance(response, str) else "",
        importance=float(importance) if isinstance(importance, (int, float)) else 0.5,
        tagged=bool(obj.get("tags") or obj.get("entities")),
        consent=not (metadata is not None and metadata.get("trainingConsent") is False),
        thread=_thread(metadata) if metadata is not None and kind in CONVERSATION_TYPES else None,
    )


def _thread(metadata: dict) -> str | None:
    for key, kind in (("conversationId", "conversation"), ("sessionId", "session")):
        value = metadata.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return f"{kind}:{str(value).strip()}"
    return None

"""Memories and JSONL rows -> chat examples, cleaned. Returns the Example, or the reason it was dropped.

A conversation is already a chat: what the user said, then the persona's response. Any other memory is
something the persona wrote or lived, so it becomes the answer to a question in the persona's own name,
one template per type (dataset.templates), e.g. "Sam, what did you dream on 2025-10-19?".
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from curation.clean import clean
from curation.dates import instant
from curation.example import Example
from curation.memory import CONVERSATION_TYPES, Malformed, Memory

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Style:
    """What conversion needs from the config, with the system prompt already formatted."""

    name: str  # the persona's name, for templates
    system_prompt: str
    templates: dict[str, str]  # memory type -> instruction with {name} and {date}
    max_instruction: int  # words per field, see dataset.max_words
    max_input: int
    max_output: int


def from_memory(mem: Memory, sha256: str, style: Style) -> Example | str:
    if mem.type in CONVERSATION_TYPES:
        if not mem.response.strip():
            return "no_response"
        user, answer = clean(mem.content, style.max_input), clean(mem.response, style.max_output)
        text = f"{user}\n{answer}"
    else:
        user = style.templates[mem.type].format(name=style.name, date=mem.timestamp[:10])
        answer = text = clean(mem.content, style.max_output)
    if not user or not answer:
        return "empty_after_cleaning"
    messages = [{"role": "system", "content": style.system_prompt}, {"role": "user", "content": user},
                {"role": "assistant", "content": answer}]
    return Example(mem.id, mem.type, mem.timestamp, mem.when, mem.importance, messages, text, mem.id, sha256,
                   mem.thread)


def from_row(obj: object, fallback_id: str, sha256: str, style: Style) -> Example | str:
    """A JSONL row: {"messages": [...]} or {"instruction", "input", "output"}; metadata is optional."""
    if not isinstance(obj, dict):
        raise Malformed(f"not a JSON object (a {type(obj).__name__})")
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    if metadata.get("trainingConsent") is False:
        return "no_consent"
    if "messages" in obj:
        turns = _message_turns(obj["messages"])
        if not turns or turns[-1][0] != "assistant" or not turns[-1][1].strip():
            return "no_response"
        limits = {"system": sys.maxsize, "user": style.max_input, "assistant": style.max_output}
        turns = [(role, clean(text, limits[role])) for role, text in turns]
    elif "output" in obj or "instruction" in obj:
        fields = _instruction_fields(obj)
        if not fields["output"].strip():
            return "no_response"
        parts = (clean(fields["instruction"], style.max_instruction), clean(fields["input"], style.max_input))
        turns = [("user", "\n\n".join(p for p in parts if p)), ("assistant", clean(fields["output"], style.max_output))]
    else:
        raise Malformed("neither `messages` nor `instruction`/`output`")
    if any(not text for _, text in turns):
        return "empty_after_cleaning"
    messages = [{"role": role, "content": text} for role, text in turns]
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": style.system_prompt})
    stamp = metadata.get("timestamp") if isinstance(metadata.get("timestamp"), str) else None
    importance = metadata.get("importance", 0.5)
    row_id = str(obj.get("id") or fallback_id)
    return Example(
        id=row_id,
        type=metadata.get("type") if isinstance(metadata.get("type"), str) else None,
        timestamp=stamp,
        when=_instant_or_none(stamp),
        importance=float(importance) if isinstance(importance, (int, float)) else 0.5,
        messages=messages,
        text="\n".join(m["content"] for m in messages if m["role"] != "system"),
        source_id=row_id,
        source_sha256=sha256,
    )


def _message_turns(messages: object) -> list[tuple[str, str]]:
    if not isinstance(messages, list):
        raise Malformed("`messages` is not a list")
    turns = []
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise Malformed(f"messages[{i}] needs a role ({', '.join(ROLES)}) and text content")
        turns.append((m["role"], m["content"]))
    return turns


def _instruction_fields(obj: dict) -> dict[str, str]:
    fields = {k: obj.get(k) or "" for k in ("instruction", "input", "output")}
    if not all(isinstance(v, str) for v in fields.values()):
        raise Malformed("`instruction`, `input` and `output` must be text")
    return fields


def _instant_or_none(stamp: str | None) -> float | None:
    try:
        return instant(stamp) if stamp else None
    except ValueError:
        return None

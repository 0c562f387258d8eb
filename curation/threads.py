"""Conversation memories of one conversation -> one multi-turn example. A set-wide step: after the per-memory
work (whose workers each see only a run of files), before deduplication.

MetaHuman OS stores every exchange of a chat as its own memory (content: what the user said, response: the
persona's reply) with metadata.conversationId, or only metadata.sessionId. Memories of type conversation or
chat that share one (conversationId first, sessionId when a memory has none; within one profile) become one
example: the system prompt, then user / assistant for each exchange in timestamp order (ties by memory id).

- Training: remote_image/train_unsloth.py puts the loss on every assistant answer of the example (each with
  its end-of-turn token), so an N-exchange conversation teaches N answers; user turns are context.
- Length: at most dataset.max_turns exchanges per example. A longer conversation is split into consecutive
  parts from its start, each its own example, so no exchange is lost and a conversation that grows later
  changes only its last part. Each turn already obeys dataset.max_words (input + output), so an example
  holds at most max_turns x (input + output) words; the trainer cuts the oldest exchanges to fit
  train.max_seq_length, never the final answer.
- An exchange stored twice in one conversation (same words after normalisation) is said once: the newest
  copy stays and the others count as `duplicate`.
- A memory of the conversation that a filter dropped (no response, too short, no consent ...) is counted
  under its reason and is simply missing from the example: the other exchanges stay.
- Ids: `conversation-<conversationId>` (or `session-<sessionId>`), `...-2`, `-3` for later parts; the id,
  not the content, picks the eval split, so adding exchanges to a conversation does not move its first part.
  A conversation with one surviving memory stays that memory's example, under the memory's id.
- Time: the last exchange's timestamp; importance: the most important exchange's.
- metadata.source_ids / source_sha256 list every memory in the example, in turn order; `turns` counts them;
  `conversation` names the thread. Candidate.size carries the count, so the manifest's counts stay in memories.
"""
from __future__ import annotations

import json
from array import array
from functools import partial

from curation.example import Candidate, encode
from curation.parallel import map_chunks


def group(candidates: list[Candidate], max_turns: int, workers: int = 1) -> tuple[list[Candidate], int]:
    """(candidates with the turns of each conversation merged, the others unchanged in their order;
    memories dropped as a repeat of a newer turn of their own conversation).

    Merging parses and re-encodes every turn: it runs on `workers` cores (curation.parallel), so that this
    set-wide step does not become the serial part that a many-core machine waits for.
    """
    threads: dict[str, list[Candidate]] = {}
    out: list[Candidate] = []
    for c in candidates:
        if c.thread is None:
            out.append(c)
        else:
            threads.setdefault(c.thread, []).append(c)
    several = []
    for item in threads.items():
        if len(item[1]) == 1:
            out.append(item[1][0])
        else:
            several.append(item)
    repeats = 0
    for merged, dropped in map_chunks(partial(_merge_threads, max_turns), several, workers):
        out += merged
        repeats += dropped
    return out, repeats


def _merge_threads(max_turns: int, threads: list[tuple[str, list[Candidate]]]) -> tuple[list[Candidate], int]:
    out: list[Candidate] = []
    repeats = 0
    for key, turns in threads:
        turns.sort(key=lambda c: (c.when is None, c.when or 0.0, c.id))
        distinct = _without_repeats(turns)
        repeats += len(turns) - len(distinct)
        if len(distinct) == 1:
            out.append(distinct[0])
            continue
        thread = key.rpartition("\0")[2]
        name = thread.replace(":", "-", 1)
        for start in range(0, len(distinct), max_turns):
            part = start // max_turns + 1
            out.append(_merge(distinct[start:start + max_turns], name if part == 1 else f"{name}-{part}", thread))
    return out, repeats


def _without_repeats(turns: list[Candidate]) -> list[Candidate]:
    """An exchange stored twice (an agent that re-ran) would be said twice in the chat: the newest copy stays,
    in its place, as deduplication would keep it; the others count as duplicates."""
    seen: set[int] = set()
    kept = []
    for c in reversed(turns):
        if c.digest not in seen:
            seen.add(c.digest)
            kept.append(c)
    return kept[::-1]


def _merge(turns: list[Candidate], example_id: str, thread: str) -> Candidate:
    rows = [json.loads(c.line) for c in turns]
    messages = rows[0]["messages"][:1]  # the system prompt: the same in every row
    source_ids, sha256 = [], []
    for row in rows:
        messages += row["messages"][1:]
        source_ids += row["metadata"]["source_ids"]
        sha256 += row["metadata"]["source_sha256"]
    last = rows[-1]["metadata"]
    row = {"id": example_id, "messages": messages,
           "metadata": {"source_ids": source_ids, "source_sha256": sha256, "type": last["type"],
                        "timestamp": last["timestamp"], "conversation": thread, "turns": len(turns)}}
    # Deduplication compares what the exchanges' signatures say, combined rather than signed again (signing
    # was most of this step's time): two conversations are exact duplicates when every exchange is, in order,
    # and near ones by the union of their exchanges' shingles (those spanning two exchanges left out).
    digest = hash(tuple(c.digest for c in turns))
    shingles = array("q", sorted(set().union(*(c.shingles for c in turns))))
    end = turns[-1]
    return Candidate(example_id, end.type, end.when, max(c.importance for c in turns), encode(row), digest, shingles,
                     None, sum(c.size for c in turns))

"""Everything done to one input that needs no other input: read, parse, filter, convert, clean, sign.

This is the expensive part, so it runs in worker processes (curation.parallel) on runs of inputs, and
what a run comes to travels back as one small Batch: the candidates, and a count for everything else.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from curation.convert import Style, from_memory, from_row
from curation.dedup import Signer
from curation.example import Candidate, Example, encode
from curation.filters import MemoryFilter
from curation.memory import Malformed, parse
from curation.persona import Persona
from curation.read import parse_json, read_bytes


@dataclass
class Batch:
    read: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> count, malformed aside
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    newest: float | None = None  # the newest memory that could be read: the default reference date

    def saw(self, when: float | None) -> None:
        if when is not None and (self.newest is None or when > self.newest):
            self.newest = when

    def add(self, other: Batch) -> None:
        self.read += other.read
        self.candidates += other.candidates
        self.dropped.update(other.dropped)
        self.malformed += other.malformed
        self.saw(other.newest)


_EPISODIC = f"{os.sep}memory{os.sep}episodic{os.sep}"


class Processor:
    def __init__(self, ds, persona: Persona, within: tuple[str, ...] | None = None):
        """`ds` is the dataset config (engine.schema.DatasetConfig) as plain dataclasses; `persona` its resolution;
        `within`, the real memory folders (each ending in os.sep) that a memory file must really lie in."""
        self.within = within
        self.style = Style(persona.name, persona.system_prompt, dict(ds.templates),
                           ds.max_words.instruction, ds.max_words.input, ds.max_words.output)
        self.keep = MemoryFilter(ds.filters)
        self.sign = Signer(ds.dedup.shingle_words)
        self.max_bytes = ds.max_file_bytes

    def memory_files(self, paths: Iterable[str]) -> Batch:
        batch = Batch()
        for path in paths:
            batch.read += 1
            try:
                data = read_bytes(path, self.max_bytes, self.within)
                mem = parse(parse_json(data), fallback_id=os.path.basename(path).removesuffix(".json"))
                batch.saw(mem.when)
                outcome = self.keep.reason(mem) or from_memory(mem, hashlib.sha256(data).hexdigest(), self.style)
                if not isinstance(outcome, str) and outcome.thread is not None:
                    # A conversation id is unique within one profile's tree, so the tree is part of the key: two
                    # profiles' conversations never merge.
                    outcome.thread = f"{path[:max(0, path.find(_EPISODIC))]}\0{outcome.thread}"
                self._finish(outcome, batch)
            except Malformed as bad:
                batch.malformed.append((path, str(bad)))
            except Exception as exc:  # noqa: BLE001 - one input must not end the run; the manifest names it
                batch.malformed.append((path, unexpected(exc)))
        return batch

    def rows(self, items: Iterable[tuple[str, bytes | Malformed]]) -> Batch:
        """JSONL lines as (where, bytes), or (where, Malformed) for a line that could not be held."""
        batch = Batch()
        for where, data in items:
            batch.read += 1
            try:
                if isinstance(data, Malformed):
                    raise data
                digest = hashlib.sha256(data).hexdigest()
                # A row without an id is named by its content: inserting lines never moves it across the split.
                outcome = from_row(parse_json(data), f"row-{digest[:12]}", digest, self.style)
                if isinstance(outcome, Example):
                    batch.saw(outcome.when)
                self._finish(outcome, batch)
            except Malformed as bad:
                batch.malformed.append((where, str(bad)))
            except Exception as exc:  # noqa: BLE001 - one input must not end the run; the manifest names it
                batch.malformed.append((where, unexpected(exc)))
        return batch

    def _finish(self, outcome: Example | str, batch: Batch) -> None:
        if isinstance(outcome, str):
            batch.dropped[outcome] += 1
            return
        digest, shingles = self.sign(outcome.text)
        batch.candidates.append(Candidate(outcome.id, outcome.type, outcome.when, outcome.importance,
                                          encode(outcome.row()), digest, shingles, outcome.thread))


def unexpected(exc: Exception) -> str:
    """The `malformed` reason for an input that broke the code rather than a rule: named, never swallowed.

    It still counts against dataset.max_bad_fraction, so a fault that hits every input fails the run.
    """
    return (f"could not be processed ({type(exc).__name__}: {str(exc)[:200]}); "
            "this is a fault in lorapod, please report it with this file")

"""Everything done to one input that needs no other input: read, parse, filter, convert, clean, sign.

This is the expensive part and it runs in worker processes (curation.parallel), so an outcome is small
and picklable: (reason, when, payload) with
    reason None, payload a Candidate        -> kept so far
    reason "malformed", payload (where, why)
    any other reason, payload None          -> dropped
`when` is the memory's time whenever it could be read, for the default reference date.
"""
from __future__ import annotations

import hashlib
import os

from curation.convert import Style, from_memory, from_row
from curation.dedup import Signer
from curation.example import Candidate, Example, encode
from curation.filters import MemoryFilter
from curation.memory import Malformed, parse
from curation.read import parse_json, read_bytes

Outcome = tuple[str | None, float | None, object]


class Processor:
    def __init__(self, ds, common: frozenset[int] = frozenset()):
        """`ds` is the dataset config (engine.schema.DatasetConfig) as plain dataclasses."""
        persona = ds.persona
        self.style = Style(persona.name, persona.system_prompt.format(name=persona.name), dict(ds.templates),
                           ds.max_words.instruction, ds.max_words.input, ds.max_words.output)
        self.keep = MemoryFilter(ds.filters)
        self.sign = Signer(ds.dedup.shingle_words, ds.dedup.near_threshold, common)
        self.max_bytes = ds.max_file_bytes

    def memory_file(self, path: str) -> Outcome:
        try:
            data = read_bytes(path, self.max_bytes)
            mem = parse(parse_json(data), fallback_id=os.path.basename(path).removesuffix(".json"))
        except Malformed as bad:
            return "malformed", None, (path, str(bad))
        outcome = self.keep.reason(mem) or from_memory(mem, hashlib.sha256(data).hexdigest(), self.style)
        return self._finish(outcome, mem.when)

    def row(self, item: tuple[str, bytes | Malformed]) -> Outcome:
        where, data = item
        try:
            if isinstance(data, Malformed):
                raise data
            digest = hashlib.sha256(data).hexdigest()
            # A row without an id is named by its content, so inserting lines never moves it across the split.
            outcome = from_row(parse_json(data), f"row-{digest[:12]}", digest, self.style)
        except Malformed as bad:
            return "malformed", None, (where, str(bad))
        return self._finish(outcome, outcome.when if isinstance(outcome, Example) else None)

    def _finish(self, outcome: Example | str, when: float | None) -> Outcome:
        if isinstance(outcome, str):
            return outcome, when, None
        digest, shingles, prefix = self.sign(outcome.text)
        return None, when, Candidate(outcome.id, outcome.type, outcome.when, outcome.importance,
                                     encode(outcome.row()), digest, shingles, prefix)

"""The curation pipeline, end to end: read, filter, convert and clean, deduplicate, cap, split, write.

One pass over the inputs keeps only the examples that survive the per-memory filters, so memory grows with
what is kept, not with what is read. The set-wide steps (deduplication, the caps) follow, then the split.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from engine.errors import DatasetError
from engine.hashing import sha256_file

from curation import report
from curation.cap import select
from curation.convert import Style, from_memory, from_row
from curation.dates import bound, iso
from curation.dedup import deduplicate
from curation.example import Example
from curation.filters import MemoryFilter
from curation.memory import Malformed, parse
from curation.read import parse_json
from curation.reasons import REASONS, zero_counts
from curation.sources import Input, episodic_roots, jsonl_inputs, memory_inputs, root_of
from curation.split import is_eval

OUTPUTS = ("train.jsonl", "eval.jsonl")


@dataclasses.dataclass
class _Tally:
    read: int = 0
    dropped: dict[str, int] = dataclasses.field(default_factory=zero_counts)
    malformed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    newest: float | None = None  # the newest well-formed memory: the default reference date


def prepare(ds, eval_fraction: float, out_dir: Path) -> dict:
    """Curate `ds` (engine.schema.DatasetConfig) into out_dir/{train,eval}.jsonl and manifest.json.

    Returns the manifest; whether it is good enough to train on is check()'s call.
    """
    tally = _Tally()
    persona = ds.persona
    style = Style(persona.name, persona.system_prompt.format(name=persona.name), dict(ds.templates),
                  ds.max_words.instruction, ds.max_words.input, ds.max_words.output)
    root = root_of(ds.source, ds.path)
    if ds.source == "jsonl":
        examples = _rows(jsonl_inputs(root, ds.max_file_bytes), style, tally)
    else:
        roots = episodic_roots(root, ds.user)
        if not roots:
            raise DatasetError(f"no MetaHuman OS memories under {root}: it holds neither memory/episodic/ nor "
                               "profiles/<user>/memory/episodic/",
                               "set dataset.path to the MetaHuman OS root folder (the one with memory/ or "
                               "profiles/ in it); nothing was rented")
        examples = _memories(memory_inputs(roots, ds.max_file_bytes), MemoryFilter(ds.filters), style, tally)

    kept, tally.dropped["duplicate"], tally.dropped["near_duplicate"] = deduplicate(
        examples, ds.dedup.near_threshold, ds.dedup.shingle_words)
    f = ds.filters
    reference = bound(f.reference_date, end=False) if f.reference_date else tally.newest
    selected = select(kept, f.max_examples, dict(f.type_share), f.half_life_days, reference)
    tally.dropped["over_cap"] = len(kept) - len(selected)

    selected.sort(key=lambda e: (e.when is None, e.when or 0.0, e.id))  # chronological: diffs stay readable
    _make_ids_unique(selected)
    evals = [e for e in selected if is_eval(e.id, eval_fraction)]
    train = [e for e in selected if not is_eval(e.id, eval_fraction)]
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in zip(OUTPUTS, (train, evals)):
        with open(out_dir / name, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(e.row(), ensure_ascii=False) + "\n" for e in rows)
    result = report.manifest(
        source={"kind": ds.source, "path": str(root), "user": ds.user},
        config={"dataset": dataclasses.asdict(ds), "train": {"eval_fraction": eval_fraction}},
        reference_date=iso(reference) if reference is not None else None,
        read=tally.read, train=len(train), evals=len(evals), dropped=tally.dropped, malformed=tally.malformed,
        sha256={name: sha256_file(out_dir / name) for name in OUTPUTS},
    )
    (out_dir / "manifest.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


def check(m: dict, ds, manifest_path: Path) -> None:
    """Raise DatasetError when the dataset is not worth renting a GPU for; the message names what to change."""
    read, bad = m["read"], len(m["malformed"])
    if read and bad / read > ds.max_bad_fraction:
        first = "; ".join(f"{b['path']}: {b['reason']}" for b in m["malformed"][:3])
        raise DatasetError(
            f"{bad} of {read} inputs ({bad / read:.0%}) could not be read, more than dataset.max_bad_fraction="
            f"{ds.max_bad_fraction}. First: {first}",
            f"decrypt or fix them (all are listed in {manifest_path}), point dataset.path at the right folder, "
            "or raise dataset.max_bad_fraction; nothing was rented")
    if m["kept"] == 0:
        if read == 0:
            raise DatasetError(f"no inputs found in {m['source']['path']}",
                               "point dataset.path at a MetaHuman OS folder with *.json memories (or a JSONL "
                               "file for dataset=jsonl); nothing was rented")
        reason, count = max(m["dropped"].items(), key=lambda item: item[1])
        meaning, setting = REASONS[reason]
        raise DatasetError(
            f"nothing left to train on: all {read} inputs were dropped; the most, {count}, as {reason} "
            f"({meaning})",
            f"see {setting}; every count is in {manifest_path}; nothing was rented")
    if m["train"] == 0:
        raise DatasetError(f"all {m['kept']} examples fell in the eval split, none is left to train on",
                           "lower train.eval_fraction or add memories; nothing was rented")


def _memories(inputs: Iterator[Input], keep: MemoryFilter, style: Style, tally: _Tally) -> list[Example]:
    examples = []
    for where, data in inputs:
        tally.read += 1
        try:
            if isinstance(data, Malformed):
                raise data
            mem = parse(parse_json(data), fallback_id=Path(where).stem)
        except Malformed as bad:
            tally.malformed.append((where, str(bad)))
            continue
        if tally.newest is None or mem.when > tally.newest:
            tally.newest = mem.when
        outcome = keep.reason(mem) or from_memory(mem, hashlib.sha256(data).hexdigest(), style)
        _count(outcome, examples, tally)
    tally.dropped["malformed"] = len(tally.malformed)
    return examples


def _rows(inputs: Iterator[Input], style: Style, tally: _Tally) -> list[Example]:
    examples = []
    for where, data in inputs:
        tally.read += 1
        try:
            if isinstance(data, Malformed):
                raise data
            digest = hashlib.sha256(data).hexdigest()
            # A row without an id is named by its content, so inserting lines never moves it across the split.
            outcome = from_row(parse_json(data), f"row-{digest[:12]}", digest, style)
        except Malformed as bad:
            tally.malformed.append((where, str(bad)))
            continue
        if isinstance(outcome, Example) and outcome.when is not None:
            tally.newest = outcome.when if tally.newest is None else max(tally.newest, outcome.when)
        _count(outcome, examples, tally)
    tally.dropped["malformed"] = len(tally.malformed)
    return examples


def _count(outcome: Example | str, examples: list[Example], tally: _Tally) -> None:
    if isinstance(outcome, str):
        tally.dropped[outcome] += 1
    else:
        examples.append(outcome)


def _make_ids_unique(examples: list[Example]) -> None:
    """Two profiles can hold the same memory id; the split and the trainer need one id per example."""
    used: set[str] = set()
    for e in examples:
        base, n = e.id, 1
        while e.id in used:
            n += 1
            e.id = f"{base}~{n}"
        used.add(e.id)

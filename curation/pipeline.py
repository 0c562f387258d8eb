"""The curation pipeline, end to end: read, filter, convert and clean, deduplicate, cap, split, write.

The persona comes first (curation.persona: the config, or MetaHuman OS's persona/core.json). The per-input
work runs on every core (curation.process, curation.parallel) and keeps only what survives the per-memory
filters, so memory grows with what is kept, not with what is read. The set-wide steps (conversations into
multi-turn examples, deduplication, the caps) follow, then the split. Counts are of memories (rows), so
read = kept_memories + every drop; `kept` counts examples, a conversation being one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
from pathlib import Path

from engine.errors import DatasetError
from engine.hashing import sha256_file

from curation import report
from curation.cap import select
from curation.dates import bound, iso
from curation.dedup import deduplicate
from curation.example import Candidate
from curation.parallel import default_workers, map_chunks
from curation.persona import resolve
from curation.process import Batch, Processor
from curation.reasons import REASONS, zero_counts
from curation.sources import episodic_roots, jsonl_inputs, root_of
from curation.split import is_eval
from curation.threads import group
from curation.walk import json_files, real_folders

OUTPUTS = ("train.jsonl", "eval.jsonl")


def prepare(ds, eval_fraction: float, out_dir: Path) -> dict:
    """Curate `ds` (engine.schema.DatasetConfig) into out_dir/{train,eval}.jsonl and manifest.json.

    Returns the manifest; whether it is good enough to train on is check()'s call.
    """
    with _collector_paused():
        return _prepare(ds, eval_fraction, out_dir)


@contextlib.contextmanager
def _collector_paused():
    # A run builds a few objects per memory and no cycles; with the cyclic collector on, every few thousand
    # allocations it would walk all of them again, which made 100k memories cost superlinear time.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _prepare(ds, eval_fraction: float, out_dir: Path) -> dict:
    root = root_of(ds.source, ds.path)
    persona = resolve(ds)
    total, unlisted, within = Batch(), [], None
    if ds.source == "jsonl":
        items, method = jsonl_inputs(root, ds.max_file_bytes), "rows"
    else:
        roots = episodic_roots(root, ds.user)
        if not roots:
            raise DatasetError(f"no MetaHuman OS memories under {root}: it holds neither memory/episodic/ nor "
                               "profiles/<user>/memory/episodic/",
                               "set dataset.path to the MetaHuman OS root folder (the one with memory/ or "
                               "profiles/ in it); nothing was rented")
        folders = [str(r) for r in roots]
        items, method = json_files(folders, unlisted, home=str(root)), "memory_files"
        within = real_folders(folders, str(root))
    workers = ds.workers or default_workers()
    for batch in map_chunks(getattr(Processor(ds, persona, within), method), items, workers):
        total.add(batch)
    read = total.read + len(unlisted)  # a folder that cannot be listed, or a link out of the tree, is one bad input
    malformed = total.malformed + unlisted
    dropped = zero_counts() | dict(total.dropped)
    dropped["malformed"] = len(malformed)

    candidates, repeats = group(total.candidates, ds.max_turns, workers)
    kept, exact, dropped["near_duplicate"] = deduplicate(candidates, ds.dedup.near_threshold)
    dropped["duplicate"] = repeats + exact
    f = ds.filters
    reference = bound(f.reference_date, end=False) if f.reference_date else total.newest
    selected = select(kept, f.max_examples, dict(f.type_share), f.half_life_days, reference)
    dropped["over_cap"] = sum(c.size for c in kept) - sum(c.size for c in selected)

    selected.sort(key=lambda c: (c.when is None, c.when or 0.0, c.id))  # chronological: diffs stay readable
    _make_ids_unique(selected)
    train, evals = [], []
    for c in selected:
        (evals if is_eval(c.id, eval_fraction) else train).append(c)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in zip(OUTPUTS, (train, evals)):
        with open(out_dir / name, "w", encoding="utf-8") as fh:
            fh.writelines(c.line + "\n" for c in rows)
    result = report.manifest(
        source={"kind": ds.source, "path": str(root), "user": ds.user},
        config={"dataset": dataclasses.asdict(ds), "train": {"eval_fraction": eval_fraction}},
        reference_date=iso(reference) if reference is not None else None,
        read=read, train=len(train), evals=len(evals), dropped=dropped, malformed=malformed,
        sha256={name: sha256_file(out_dir / name) for name in OUTPUTS},
        kept_memories=sum(c.size for c in selected), conversations=sum(c.size > 1 for c in selected),
        persona=persona.record(),
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
        meaning, remedy = REASONS[reason]
        raise DatasetError(
            f"nothing left to train on: {read} inputs read, all dropped; the most ({count}) as {reason}: {meaning}",
            f"{remedy}; every count is in {manifest_path}; nothing was rented")
    if m["train"] == 0:
        raise DatasetError(f"all {m['kept']} examples fell in the eval split, none is left to train on",
                           "lower train.eval_fraction or add memories; nothing was rented")


def _make_ids_unique(candidates: list[Candidate]) -> None:
    """Two profiles can hold the same memory id; the split and the trainer need one id per example."""
    used: set[str] = set()
    for c in candidates:
        if c.id in used:
            n = 2
            while f"{c.id}~{n}" in used:
                n += 1
            c.rename(f"{c.id}~{n}")
        used.add(c.id)

"""Curation: a MetaHuman OS memory folder (or a JSONL file) -> a clean, deduplicated chat dataset.

Every memory read ends in exactly one place: an example in train.jsonl or eval.jsonl, or a count under one
reason in manifest.json (curation.reasons lists them in the order they are checked). The memory folder is
only ever read.

    manifest = curation.prepare(dataset_cfg, eval_fraction, out_dir)  # train.jsonl, eval.jsonl, manifest.json
    print("\n".join(curation.table(manifest)))
    curation.check(manifest, dataset_cfg, out_dir / "manifest.json")  # DatasetError: not worth training on

Standard library and engine.errors / engine.hashing only: the orchestrator must stay light (`python run.py
--help` imports this).
"""
from curation.pipeline import check, prepare
from curation.report import table

__all__ = ["prepare", "check", "table"]

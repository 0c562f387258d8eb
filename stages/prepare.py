"""prepare: memories -> dataset/ (train.jsonl, eval.jsonl, manifest.json). Costs nothing, so it runs first.

The work is curation's (see curation/__init__.py); this stage hands it the config, prints the manifest as a
table, and fails the run, before anything is rented, when the data is not worth training on. In a sweep the
jobs with the same dataset config share one preparation (engine/sweep/dataset.py): the first prepares into
<sweep dir>/datasets/<hash>/, every job links those files into its own dataset/.
"""
from __future__ import annotations

import json

from loguru import logger
from omegaconf import OmegaConf

import curation
from engine.sweep import dataset as sweep_dataset, folder as sweep_folder
from engine.context import RunContext
from engine.stage import BaseStage


class Prepare(BaseStage):
    def run(self, ctx: RunContext) -> None:
        ds = OmegaConf.to_object(ctx.cfg.dataset)  # plain dataclasses: read per memory, DictConfig would be slow
        eval_fraction = ctx.cfg.train.eval_fraction
        sweep = sweep_folder()
        shared = None
        if sweep is None:
            manifest = curation.prepare(ds, eval_fraction, ctx.dataset_dir)
        else:
            digest = sweep_dataset.config_hash(ctx.cfg)
            folder = sweep / "datasets" / digest
            reused = sweep_dataset.prepare_once(folder, lambda into: curation.prepare(ds, eval_fraction, into))
            sweep_dataset.link_into(folder, ctx.dataset_dir)
            manifest = json.loads((ctx.dataset_dir / "manifest.json").read_text(encoding="utf-8"))
            shared = {"hash": digest, "path": str(folder), "reused": reused}
            if reused:
                logger.info(f"dataset reused from {folder}: an earlier job of this sweep prepared it from the same "
                            f"dataset config (hash {digest})")
            else:
                logger.info(f"dataset prepared once for this sweep in {folder} (dataset config hash {digest}); "
                            "the other jobs with this dataset config reuse it")
        for line in curation.table(manifest):
            logger.info(line)
        ctx.state.outputs["dataset"] = {k: manifest[k] for k in ("read", "kept", "train", "eval", "dropped")}
        if shared:
            ctx.state.outputs["dataset"]["shared"] = shared
        curation.check(manifest, ds, ctx.dataset_dir / "manifest.json")

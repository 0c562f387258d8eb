"""prepare: memories -> dataset/ (train.jsonl, eval.jsonl, manifest.json). Costs nothing, so it runs first.

The work is curation's (see curation/__init__.py); this stage hands it the config, prints the manifest as a
table, and fails the run, before anything is rented, when the data is not worth training on.
"""
from __future__ import annotations

from loguru import logger
from omegaconf import OmegaConf

import curation
from engine.context import RunContext
from engine.stage import BaseStage


class Prepare(BaseStage):
    def run(self, ctx: RunContext) -> None:
        ds = OmegaConf.to_object(ctx.cfg.dataset)  # plain dataclasses: read per memory, DictConfig would be slow
        manifest = curation.prepare(ds, ctx.cfg.train.eval_fraction, ctx.dataset_dir)
        for line in curation.table(manifest):
            logger.info(line)
        ctx.state.outputs["dataset"] = {k: manifest[k] for k in ("read", "kept", "train", "eval", "dropped")}
        curation.check(manifest, ds, ctx.dataset_dir / "manifest.json")

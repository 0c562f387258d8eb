"""fetch: bring the adapter, metrics and result.json home, each file checked against result.json's sha256.

Only files that result.json lists are fetched: never trainer checkpoints, never a path that would land
outside the run directory.
"""
from __future__ import annotations

import json
import posixpath
import time
from pathlib import Path, PurePosixPath

from loguru import logger

from engine.context import RunContext
from engine.errors import StageError
from engine.pod_secrets import remove_token
from engine.stage import BaseStage


def safe_destination(run_dir: Path, rel: str) -> Path:
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel:
        raise StageError(f"result.json lists {rel!r}, which would land outside the run directory",
                         "the pod's output is not trustworthy; nothing more was fetched")
    dest = (run_dir / Path(*parts)).resolve()
    if run_dir.resolve() not in dest.parents:
        raise StageError(f"result.json lists {rel!r}, which resolves outside {run_dir}")
    return dest


class Fetch(BaseStage):
    def run(self, ctx: RunContext) -> None:
        remove_token(ctx)  # training is over: the token goes first, whatever happens to the rest of fetch
        if ctx.transport is None:
            raise StageError("no connection to the pod", "the pipeline needs a probe stage before fetch")
        out = posixpath.join(ctx.remote_dir, "out")
        started = time.monotonic()
        ctx.transport.get(posixpath.join(out, "result.json"), ctx.run_dir / "result.json")
        result = json.loads((ctx.run_dir / "result.json").read_text(encoding="utf-8"))
        files = result.get("files") or {}
        total = 0
        for rel, digest in sorted(files.items()):
            if any(p.startswith("checkpoint") for p in PurePosixPath(rel).parts):
                logger.warning(f"not fetching {rel}: checkpoints stay on the pod")
                continue
            dest = safe_destination(ctx.run_dir, rel)
            ctx.transport.get(posixpath.join(out, rel), dest, sha256=digest)
            total += dest.stat().st_size
        ctx.state.outputs["result"] = {k: v for k, v in result.items() if k != "files"}
        ctx.state.outputs["fetch"] = {"bytes": total, "seconds": round(time.monotonic() - started, 3)}
        if result.get("status") != "succeeded":
            raise StageError(f"training reported {result.get('status')}: {result.get('error')}")
        logger.info(f"fetched {len(files)} files ({total / 1e6:.2f} MB), sha256 verified; "
                    f"eval loss {result.get('eval_loss_before')} -> {result.get('eval_loss_after')}")

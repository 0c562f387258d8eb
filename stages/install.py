"""install: with export.metahuman=true, copy the ACTIVE adapter from the registry to where MetaHuman OS looks for
it: <root>/out/adapters/<YYYY-MM-DD>/adapter/, plus its run folder's export/ files (Modelfile, GGUF adapter) next
to adapter/. The root is export.metahuman_root, or dataset.path when dataset.source is metahuman (a dataset.path
that points into the tree at <root>/memory/episodic means <root>, as for the persona: curation/persona.py).

Nothing is ever installed inside an episodic folder: the next prepare would read the adapter's files there as
memories. A root that is, or lies under, a folder named `episodic` is refused before anything runs.

This is the only write into the MetaHuman OS tree, and only when asked. Everything is copied into a hidden
staging folder beside the destination, checked against the registered sha256, and renamed into place, so
MetaHuman OS never sees half an adapter. An existing <date>/ is never overwritten: if it holds the same adapter
(lorapod-install.json says which) nothing is done; otherwise the copy goes to <date>-2/, <date>-3/, ... which
sort after <date>/. The date is today's, local time.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from loguru import logger
from omegaconf import OmegaConf

from curation.persona import metahuman_root as persona_root
from engine.adapters.store import Registry, check_files, utc_now
from engine.context import RunContext
from engine.errors import StageError
from engine.hashing import sha256_file
from engine.stage import BaseStage

MARKER = "lorapod-install.json"  # in <date>/: which adapter this is, so a second install can tell


def root_key(cfg) -> str | None:
    """The config key the install root comes from: export.metahuman_root, else dataset.path (dataset=metahuman)."""
    if cfg.export.get("metahuman_root"):
        return "export.metahuman_root"
    if cfg.dataset.get("source") == "metahuman" and not OmegaConf.is_missing(cfg.dataset, "path") and cfg.dataset.path:
        return "dataset.path"
    return None


def metahuman_root(cfg) -> Path | None:
    key = root_key(cfg)
    if key is None:
        return None
    root = Path(os.path.expanduser(str(OmegaConf.select(cfg, key))))
    return persona_root(root) if key == "dataset.path" else root


def episodic_above(path: Path) -> Path | None:
    """The folder named `episodic` that path is, or lies in (as written, and with its links resolved); None if none."""
    for candidate in (path.absolute(), path.resolve()):
        for folder in (candidate, *candidate.parents):
            if folder.name == "episodic":
                return folder
    return None


class Install(BaseStage):
    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        if not cfg.export.get("metahuman"):
            return []
        key, root = root_key(cfg), metahuman_root(cfg)
        if root is None:
            if cfg.dataset.get("source") == "metahuman":
                return []  # dataset.path is unset: engine/validate.py names that key, and it is the root
            return [("export.metahuman_root", "is required with export.metahuman=true unless dataset=metahuman "
                     "(then dataset.path is the root): the MetaHuman OS folder to install into")]
        episodic = episodic_above(root)
        if episodic is not None:
            return [(key, f"{root} is inside the episodic memory folder {episodic}: export.metahuman would install "
                     "the adapter there and the next prepare would read it as memories; set export.metahuman_root "
                     "to the MetaHuman OS root (the folder that holds memory/ and out/)")]
        if key == "export.metahuman_root" and not root.is_dir():
            return [(key, f"{root} is not a folder: point it at your MetaHuman OS root")]
        return []  # a dataset.path that is no folder: engine/validate.py reports it under dataset.path

    def run(self, ctx: RunContext) -> None:
        if not ctx.cfg.export.get("metahuman"):
            return
        registry = Registry(Path(ctx.cfg.registry.path))
        with registry.locked():  # the active adapter must not change while it is copied
            entry = registry.active()
            if entry is None:
                logger.warning(f"export.metahuman: no adapter is active in {registry.path}, nothing installed")
                ctx.state.outputs["install"] = None
                return
            dest = install(entry, metahuman_root(ctx.cfg))
        ctx.state.outputs["install"] = {"id": entry["id"], "path": str(dest)}


def _sources(entry: dict) -> dict[str, tuple[Path, str]]:
    """destination (relative to <date>/) -> (source file, sha256): the registered adapter files, then export/."""
    run_dir = Path(entry["run_dir"])
    out = {rel: (run_dir / rel, meta["sha256"]) for rel, meta in entry["files"].items()}  # adapter/...
    export = run_dir / "export"
    if export.is_dir():
        for file in sorted(p for p in export.rglob("*") if p.is_file() and not p.is_symlink()):
            out[file.relative_to(export).as_posix()] = (file, sha256_file(file))
    return out


def install(entry: dict, root: Path) -> Path:
    """Copy `entry` under root/out/adapters/<date>[-n]/; returns that folder."""
    episodic = episodic_above(root)
    if episodic is not None:  # check_config refuses this before the run; a direct caller gets the same answer
        raise StageError(f"will not install into {root}: it is inside the episodic memory folder {episodic}, and the "
                         "next prepare would read the adapter's files as memories",
                         "set export.metahuman_root to the MetaHuman OS root (the folder that holds memory/ and out/)")
    problems = check_files(entry)
    if problems:
        raise StageError(f"the active adapter {entry['id']} cannot be installed: " + "; ".join(problems[:5]),
                         "`python -m engine.adapters rollback` or `promote ID` picks one whose files are intact")
    sources = _sources(entry)
    marker = {"id": entry["id"], "installed_at": utc_now(), "run_dir": entry["run_dir"],
              "files": {rel: sha for rel, (_, sha) in sorted(sources.items())}}
    parent = root / "out" / "adapters"
    day = time.strftime("%Y-%m-%d")
    n = 1
    while True:
        dest = parent / (day if n == 1 else f"{day}-{n}")
        if not dest.exists():
            break
        if _same(dest, marker):
            logger.info(f"adapter {entry['id']} is already installed in {dest}")
            return dest
        n += 1
    stage = parent / f".{dest.name}.{os.getpid()}.partial"
    try:
        for rel, (src, sha) in sources.items():
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            if sha256_file(target) != sha:
                raise StageError(f"{src} changed while it was copied to {dest / rel} (sha256 differs); nothing "
                                 "was installed", "run the install again")
        (stage / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        os.rename(stage, dest)  # a non-empty folder that appeared there meanwhile makes this fail, not vanish
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    logger.success(f"adapter {entry['id']} installed for MetaHuman OS in {dest} ({len(sources)} files, sha256 verified)")
    return dest


def _same(dest: Path, marker: dict) -> bool:
    try:
        theirs = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return theirs.get("id") == marker["id"] and theirs.get("files") == marker["files"] and all(
        (dest / rel).is_file() and sha256_file(dest / rel) == sha for rel, sha in marker["files"].items())

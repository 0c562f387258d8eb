"""Test helpers: MetaHuman OS memory trees written into tmp_path, and dataset configs to curate them with.

Every memory gets text of its own (distinct words), so two memories are duplicates only when a test says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

from omegaconf import OmegaConf

from engine.schema import DatasetConfig

VOCAB = ("river garden piano meadow bridge council studio ferry library trail market hill permit soil "
         "sedge reed swallow nocturne budget stone sketch shade clay drawing morning friday evening rain "
         "harbor lantern orchard kettle compass window ladder pebble thistle violin canvas mural quarry "
         "pepper cobalt saffron maple cedar willow juniper heron otter falcon badger beacon summit valley "
         "canyon glacier meadowlark tunnel station platform ticket parcel letter stamp ribbon button thread "
         "needle quilt blanket pillow candle mirror spoon ladle oven bread butter honey almond walnut plum").split()
BASE = datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)


def sentence(seed: int, words: int = 12) -> str:
    return " ".join(random.Random(seed).sample(VOCAB, words)).capitalize() + "."


class Tree:
    """A MetaHuman OS root. add() writes one memory; raw() writes any bytes where a memory would be."""

    def __init__(self, root: Path):
        self.root = root
        self.count = 0

    def add(self, *, layout: str = "old", user: str = "alex", category: str | None = None,
            hours: float | None = None, **fields) -> Path:
        self.count += 1
        when = BASE + timedelta(hours=self.count if hours is None else hours)
        mem = {"id": f"evt-{when:%Y%m%d%H%M%S}-{self.count}", "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
               "type": "observation", "content": sentence(self.count), "tags": ["t"], "entities": ["E"],
               "importance": 0.5, "metadata": {"processed": True}}
        mem.update(fields)
        mem = {k: v for k, v in mem.items() if v is not ...}  # `field=...` leaves a field out
        return self.raw(self.path_for(mem, when, layout, user, category), json.dumps(mem, indent=2).encode())

    def path_for(self, mem: dict, when: datetime, layout: str, user: str, category: str | None) -> str:
        name = f"{mem.get('id', 'noid')}.json"
        if layout == "old":
            return f"memory/episodic/{when:%Y}/{name}"
        parts = ["profiles", user, "memory", "episodic"] + ([category] if category else [])
        return "/".join(parts + [f"{when:%Y/%m/%d}", name])

    def raw(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def dataset(path, source: str = "metahuman", **overrides) -> DatasetConfig:
    """A DatasetConfig as the prepare stage gets it (plain dataclasses), with overrides merged in."""
    base = {"source": source, "path": None if path is None else str(path), "persona": {"name": "Alex"}}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DatasetConfig), base, overrides))


def curate(tmp_path: Path, ds) -> tuple[dict, dict[str, str]]:
    """Prepare `ds` into tmp_path/out: the manifest, and each malformed input's reason by its path."""
    import curation

    manifest = curation.prepare(ds, 0.0, tmp_path / "out")
    return manifest, {b["path"]: b["reason"] for b in manifest["malformed"]}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under root with its content digest, mode and mtime: what "only ever read" must keep."""
    state = {}
    for folder, dirs, files in os.walk(root):  # links are recorded, not followed: a tree may hold a loop
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            small = stat.S_ISREG(info.st_mode) and info.st_size < 1 << 24  # huge test files are sparse: size is enough
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if small else str(info.st_size)
            state[str(path.relative_to(root))] = (digest, info.st_mode, info.st_mtime_ns)
    return state

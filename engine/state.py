"""The run's state, persisted to state.json after every stage and whenever a pod appears or goes.

It is what lets a crashed run be inspected, resumed or cleaned up: the pod id is on disk from the moment
the provider hands it out.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine import process


def now() -> float:
    return round(time.time(), 3)


@dataclass
class StageRecord:
    status: str = "pending"  # pending, running, succeeded, failed, interrupted, skipped
    started_at: float | None = None
    ended_at: float | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class RunState:
    run_id: str
    status: str = "running"  # running, succeeded, failed, interrupted
    started_at: float = field(default_factory=now)
    ended_at: float | None = None
    stages: dict[str, StageRecord] = field(default_factory=dict)
    pod: dict[str, Any] | None = None  # the provider's Pod record, as a dict
    endpoint: dict[str, Any] | None = None
    marks: dict[str, float] = field(default_factory=dict)  # moments that bound billed overhead
    outputs: dict[str, Any] = field(default_factory=dict)  # what stages hand to later stages and the summary
    # The process running the run (host, pid and its identity, engine/process.py): how engine.status tells a
    # run whose process died from one still going
    owner: dict[str, Any] = field(default_factory=process.owner)

    def mark(self, name: str) -> float:
        self.marks[name] = now()
        return self.marks[name]

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, path)  # never a half-written state.json, even if we die mid-write

    @classmethod
    def load(cls, path: Path) -> RunState:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["stages"] = {k: StageRecord(**v) for k, v in data.get("stages", {}).items()}
        return cls(**data)

#!/usr/bin/env python3
"""The default `python run.py` end to end: wall time and peak RSS of the whole process tree, against the
bare training script on the same dataset (what the orchestration adds). Targets: <= 90 s, <= 3 GB.

    python bench/bench_run.py
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import measure  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lorapod-bench-"))
    rows = []
    # A registry of its own: the bench's tiny adapter must never land in (or retire anything of) ./adapters.
    code, wall, rss = measure([sys.executable, "run.py", f"hydra.run.dir={work / 'run'}",
                               f"registry.path={work / 'adapters'}"], REPO)
    rows.append(("python run.py (whole pipeline)", code, wall, rss, "<= 90 s, <= 3 GB"))
    # The same training alone: the prepared dataset and config.json the run produced, a fresh folder.
    bare = work / "bare"
    shutil.copytree(work / "run" / "dataset", bare / "dataset")
    shutil.copy(work / "run" / "config.json", bare / "config.json")
    script = REPO / "remote_image" / "train_unsloth.py"
    code_b, wall_b, rss_b = measure([sys.executable, str(script), str(bare / "config.json")], REPO)
    rows.append(("train_unsloth.py alone (baseline)", code_b, wall_b, rss_b, ""))
    print(f"{'what':<36} {'exit':>4} {'wall s':>8} {'peak RSS MB':>12}  target")
    for label, c, w, r, target in rows:
        verdict = ""
        if target:
            verdict = target + (": ok" if c == 0 and w <= 90 and r <= 3 * 1024**3 else ": MISSED")
        print(f"{label:<36} {c:>4} {w:>8.2f} {r / 1024**2:>12.0f}  {verdict}")
    print(f"\norchestration overhead: {wall - wall_b:+.2f} s wall, {(rss - rss_b) / 1024**2:+.0f} MB peak RSS")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

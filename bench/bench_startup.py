#!/usr/bin/env python3
"""How fast the orchestrator starts: `run.py --help` and `run.py --cfg job`, against bare Python and an
orchestrator that would import torch. Target: median <= 1.0 s on 2 cores, and no torch/transformers import.

    python bench/bench_startup.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "unsloth")


def timed(cmd: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def import_profile(args: list[str]) -> tuple[list[tuple[int, str]], list[str]]:
    err = subprocess.run([sys.executable, "-X", "importtime", "run.py", *args], cwd=REPO, capture_output=True,
                         text=True).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            rows.append((int(cumulative.strip()), name[1:].rstrip()))  # nested imports keep their indent
    top_level = [(us, n) for us, n in rows if not n.startswith(" ")]
    heavy = sorted({n.strip().split(".")[0] for _, n in rows if n.strip().split(".")[0] in HEAVY})
    return sorted(top_level, reverse=True)[:8], heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    py = sys.executable
    cases = [
        ("python -c pass (floor)", [py, "-c", "pass"]),
        ("python -c 'import torch' (what we avoid)", [py, "-c", "import torch"]),
        ("run.py --help", [py, "run.py", "--help"]),
        ("run.py --cfg job", [py, "run.py", "--cfg", "job"]),
        ("run.py gpu=rtx5090 lora.r=16 --cfg job", [py, "run.py", "gpu=rtx5090", "lora.r=16", "--cfg", "job"]),
    ]
    print(f"{'command':<44} {'median s':>9} {'min s':>7} {'max s':>7}  target")
    for label, cmd in cases:
        t = timed(cmd, args.repeat)
        target = "<= 1.0 s: " + ("ok" if statistics.median(t) <= 1.0 else "MISSED") if label.startswith("run.py") else ""
        print(f"{label:<44} {statistics.median(t):>9.3f} {min(t):>7.3f} {max(t):>7.3f}  {target}")
    for flags in (["--help"], ["--cfg", "job"]):
        top, heavy = import_profile(flags)
        print(f"\npython -X importtime run.py {' '.join(flags)}: heavy modules imported: {heavy or 'none'}")
        print(f"  {'cumulative ms':>13}  top-level module")
        for us, name in top:
            print(f"  {us / 1000:>13.1f}  {name}")


if __name__ == "__main__":
    main()

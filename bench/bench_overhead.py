#!/usr/bin/env python3
"""Billed pod time that is ours, not training's, measured against the RunPod emulator: from "pod ready" to
"training started" (less upload) and from "training exited" to "DELETE sent" (less fetch).
Targets: <= 2 s and <= 1 s. For comparison, the whole billed time and the training's share of it.

    python bench/bench_overhead.py [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.emulator import RunPodEmulator  # noqa: E402  (real HTTP; each pod a real sshd)


def one_run(emu: RunPodEmulator, work: Path, n: int) -> dict:
    run_dir = work / f"run{n}"
    cmd = [sys.executable, "run.py", "gpu=rtx5090", f"provider.api_url={emu.url}", f"remote.workdir={work / 'pod'}",
           f"remote.python={sys.executable}", "build.skip=true", "train.max_steps=10",
           "train.batch_size=4", "train.grad_accum=1",  # the CPU's steps, not the RTX 5090 presets
           f"hydra.run.dir={run_dir}", f"registry.path={work / 'adapters'}"]  # never ./adapters
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env["RUNPOD_API_KEY"] = emu.api_key
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    summary = json.loads((run_dir / "run-summary.json").read_text())
    state = json.loads((run_dir / "state.json").read_text())
    marks, out = state["marks"], state["outputs"]
    return {
        **summary["overhead"],
        "upload_s": out["upload"]["seconds"],
        "fetch_s": out["fetch"]["seconds"],
        "training_s": marks["train_exited"] - marks["train_launched"],
        "billed_s": summary["billed_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lorapod-overhead-"))
    emu = RunPodEmulator().start()
    try:
        rows = [one_run(emu, work, n) for n in range(args.runs)]
    finally:
        emu.stop()
    assert not emu.live_pods(), "a pod was left billing"

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"median of {args.runs} runs of gpu=rtx5090 (tiny model, 10 steps) against the emulator")
    print(f"{'interval':<44} {'seconds':>8}  target")
    table = [
        ("pod ready -> training started", "ready_to_train_s", ""),
        ("  of which upload", "upload_s", ""),
        ("  the rest: connect, checks, watchdog, launch", "ready_to_train_excl_upload_s", "<= 2 s"),
        ("training exited -> DELETE sent", "exit_to_delete_s", ""),
        ("  of which fetch", "fetch_s", ""),
        ("  the rest: exit detection, cleanup", "exit_to_delete_excl_fetch_s", "<= 1 s"),
        ("training (launch -> exit), for comparison", "training_s", ""),
        ("billed in all (create -> deleted)", "billed_s", ""),
    ]
    for label, key, target in table:
        verdict = ""
        if target:
            verdict = target + (": ok" if med(key) <= float(target.split()[1]) else ": MISSED")
        print(f"{label:<44} {med(key):>8.2f}  {verdict}")


if __name__ == "__main__":
    main()

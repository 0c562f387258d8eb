#!/usr/bin/env python3
"""How the prepare stage scales: N synthetic memory files, prepare vs a plain read + json-parse loop.

    python bench/bench_prepare.py                      # 10k, 30k and 100k files
    python bench/bench_prepare.py --sizes 2000,5000    # quicker
    python bench/bench_prepare.py --repeat 3           # best of 3 for each side: steadier on a busy machine
    python bench/bench_prepare.py --keep /tmp/mem      # generate there and keep the trees for a rerun

Both sides run in the same session over the same files, each in its own fresh process, after one untimed
read of the tree so that both find it in the page cache. `prepare s` is the stage's own time from
state.json (`python run.py pipeline=prepare ...`, interpreter start-up and Hydra excluded); `baseline s`
is the loop below, timed the same way. Peak RSS is the prepare process's maximum resident set, Hydra
included. Targets (issue 4): ratio <= 3 at 100k, peak RSS <= 1 GB, time growing linearly with N.

The memories are shaped like a real MetaHuman OS tree: both layouts, all types, words drawn from a Zipf-like
vocabulary (so common phrases exist, as in real text), and a few per cent exact duplicates, near
duplicates, untagged, short, unconsented and unreadable files.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TYPES = ["conversation"] * 6 + ["observation"] * 3 + ["reflection", "journal", "dream", "inner_dialogue", "chat"]
FUNCTION_WORDS = "i the a to and of it was we in that my on for with at so but is about me this".split()


def vocabulary(rng: random.Random, size: int) -> list[str]:
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words = {"".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(size * 2)}
    return FUNCTION_WORDS + sorted(words)[:size]


def sentence_maker(rng: random.Random, vocab: list[str]):
    weights = [1 / (rank + 1) for rank in range(len(vocab))]  # Zipf: a few words are everywhere
    cumulative = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)

    def text(lo: int, hi: int) -> str:
        words = rng.choices(vocab, cum_weights=cumulative, k=rng.randint(lo, hi))
        return " ".join(words).capitalize() + "."

    return text


def generate(root: Path, count: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    text = sentence_maker(rng, vocabulary(rng, 8000))
    when = datetime(2023, 1, 1, tzinfo=timezone.utc)
    previous: list[dict] = []
    for i in range(count):
        when += timedelta(seconds=rng.randint(60, 1800))
        kind = rng.choice(TYPES)
        mem = {"id": f"evt-{when:%Y%m%d%H%M%S}", "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
               "type": kind, "content": text(8, 60), "tags": rng.sample(["work", "family", "music", "garden"], 2),
               "entities": [text(1, 2)[:-1]], "importance": round(rng.uniform(0.2, 0.95), 2),
               "links": [], "metadata": {"processed": True, "processedAt": when.isoformat(), "model": "ollama:phi3"}}
        if kind in ("conversation", "chat"):
            mem["response"] = text(10, 80)
            mem["metadata"].update(conversationId=f"conv-{i // 5}", cognitiveMode="dual")
        roll = rng.random()
        if previous and roll < 0.04:  # the same memory stored twice (an agent re-ran)
            mem["content"], mem["response"] = previous[-1]["content"], previous[-1].get("response")
        elif previous and roll < 0.08:  # the same memory with one word changed
            words = previous[-1]["content"].split()
            words[rng.randrange(len(words))] = "changed"
            mem["content"], mem["response"] = " ".join(words), previous[-1].get("response")
        elif roll < 0.10:
            mem["tags"], mem["entities"] = [], []
        elif roll < 0.11:
            mem["metadata"]["trainingConsent"] = False
        elif roll < 0.12:
            mem["content"] = "ok"
        if mem.get("response") is None:
            mem.pop("response", None)
        previous = [mem]
        if i % 2:
            rel = Path("profiles/bench/memory/episodic", kind, f"{when:%Y/%m/%d}", mem["id"] + ".json")
        else:
            rel = Path("memory/episodic", f"{when:%Y}", f"{mem['id']}-{i}.json")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if roll > 0.995:
            path.write_bytes(os.urandom(rng.randint(200, 900)))  # encrypted
        else:
            path.write_text(json.dumps(mem, indent=2), encoding="utf-8")


BASELINE = """
import json, os, sys, time
started, files = time.perf_counter(), 0
for folder, _, names in os.walk(sys.argv[1]):
    for name in names:
        if name.endswith(".json"):
            with open(os.path.join(folder, name), "rb") as fh:
                data = fh.read()
            try:
                json.loads(data)
            except ValueError:
                pass
            files += 1
print(files, time.perf_counter() - started)
"""


def baseline(root: Path) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", BASELINE, str(root)], capture_output=True, text=True, check=True)
    files, seconds = out.stdout.split()
    return int(files), float(seconds)


def prepare(root: Path, run_dir: Path) -> tuple[float, float, dict]:
    """(stage seconds, peak RSS in MB, the manifest's counts) of `run.py pipeline=prepare` on root."""
    cmd = [sys.executable, "run.py", "pipeline=prepare", "dataset=metahuman", f"dataset.path={root}",
           "dataset.persona.name=Bench", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    state = json.loads((run_dir / "state.json").read_text())
    if proc.returncode or state["stages"]["prepare"]["status"] != "succeeded":
        sys.exit(f"prepare failed on {root}:\n{stderr[-3000:]}")
    manifest = json.loads((run_dir / "dataset" / "manifest.json").read_text())
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    return state["stages"]["prepare"]["seconds"], peak_mb, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="comma-separated file counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; the best one counts")
    parser.add_argument("--keep", type=Path, help="generate the trees here and keep them (reused when present)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="lorapod-bench-"))
    rows = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            root = work / f"mem-{n}"
            if not root.exists():
                started = time.perf_counter()
                generate(root, n)
                print(f"generated {n} memories in {time.perf_counter() - started:.1f}s under {root}", file=sys.stderr)
            baseline(root)  # untimed: brings the tree into the page cache for both sides
            files, base_s = min(baseline(root) for _ in range(args.repeat))
            runs = [prepare(root, work / f"run-{n}-{i}") for i in range(args.repeat)]
            prep_s, rss, manifest = min(runs, key=lambda run: run[0])
            rows.append((files, base_s, prep_s, max(run[1] for run in runs), manifest))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'files':>8} {'baseline s':>11} {'prepare s':>10} {'ratio':>6} {'us/file':>8} {'peak RSS MB':>12} "
          f"{'kept':>7} {'dup':>6} {'near':>6}")
    for files, base_s, prep_s, rss, m in rows:
        print(f"{files:>8} {base_s:>11.2f} {prep_s:>10.2f} {prep_s / base_s:>6.2f} {prep_s / files * 1e6:>8.1f} "
              f"{rss:>12.0f} {m['kept']:>7} {m['dropped']['duplicate']:>6} {m['dropped']['near_duplicate']:>6}")


if __name__ == "__main__":
    main()

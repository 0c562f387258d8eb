"""prepare: memories -> dataset/ (train.jsonl, eval.jsonl, manifest.json). Costs nothing, so it runs first.

Conversations become user -> assistant turns; other memories become a question in the persona's voice
answered by the memory. The split is a hash of the example id, so it is the same on every run.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from loguru import logger
from omegaconf import OmegaConf

from engine.context import PROJECT_ROOT, RunContext
from engine.errors import DatasetError
from engine.hashing import sha256_file
from engine.stage import BaseStage

SAMPLE_DIR = PROJECT_ROOT / "examples" / "sample-memories"
_ME_WRAPPER = re.compile(r'^\s*Me:\s*"(.*)"\s*$', re.S)
PROMPTS = {
    "observation": "What happened recently that stuck with you?",
    "reflection": "What have you been reflecting on?",
    "journal": "What did you write in your journal?",
    "dream": "Did you dream about anything?",
    "inner_dialogue": "What's going through your mind?",
}


def is_eval(example_id: str, fraction: float) -> bool:
    bucket = int(hashlib.sha256(example_id.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return bucket < fraction


def to_example(mem: dict, system_prompt: str) -> dict | None:
    kind = mem.get("type", "observation")
    content = _ME_WRAPPER.sub(r"\1", str(mem.get("content", ""))).strip()
    if kind in ("conversation", "chat"):
        user, answer = content, str(mem.get("response") or "").strip()
    else:
        user, answer = PROMPTS.get(kind, PROMPTS["observation"]), content
    if not user or not answer:
        return None
    return {
        "id": mem["id"],
        "messages": [{"role": "system", "content": system_prompt}, {"role": "user", "content": user},
                     {"role": "assistant", "content": answer}],
        "metadata": {"source_ids": [mem["id"]], "type": kind, "timestamp": mem.get("timestamp")},
    }


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


class Prepare(BaseStage):
    def run(self, ctx: RunContext) -> None:
        ds = ctx.cfg.dataset
        root = SAMPLE_DIR if ds.source == "sample" else Path(ds.path).expanduser()
        files = sorted(root.rglob("*.json"))
        examples, dropped = [], {"malformed": 0, "no_consent": 0, "no_response": 0}
        for path in files:
            try:
                mem = json.loads(path.read_text(encoding="utf-8"))
                assert isinstance(mem, dict) and "id" in mem
            except (ValueError, UnicodeDecodeError, AssertionError):
                dropped["malformed"] += 1
                continue
            if (mem.get("metadata") or {}).get("trainingConsent") is False:
                dropped["no_consent"] += 1
                continue
            example = to_example(mem, ds.persona.system_prompt)
            if example is None:
                dropped["no_response"] += 1
                continue
            examples.append(example)
        if not examples:
            raise DatasetError(f"no training examples from {len(files)} memory files under {root}",
                               "point dataset.path at a MetaHuman OS folder with memories; nothing was rented")
        out = ctx.dataset_dir
        out.mkdir(parents=True, exist_ok=True)
        fraction = ctx.cfg.train.eval_fraction
        train = [e for e in examples if not is_eval(e["id"], fraction)]
        evals = [e for e in examples if is_eval(e["id"], fraction)]
        write_jsonl(out / "train.jsonl", train)
        write_jsonl(out / "eval.jsonl", evals)
        manifest = {
            "source": str(root),
            "config": OmegaConf.to_container(ds, resolve=True),
            "read": len(files),
            "kept": len(examples),
            "train": len(train),
            "eval": len(evals),
            "dropped": dropped,
            "sha256": {name: sha256_file(out / name) for name in ("train.jsonl", "eval.jsonl")},
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        ctx.state.outputs["dataset"] = {k: manifest[k] for k in ("read", "kept", "train", "eval", "dropped")}
        logger.info(f"{len(files)} memories -> {len(train)} train + {len(evals)} eval examples; dropped {dropped}")

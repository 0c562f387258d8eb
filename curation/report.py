"""manifest.json and the table the prepare stage prints: every input read is either kept or counted under a reason."""
from __future__ import annotations

from curation.reasons import REASONS

SHOWN_MALFORMED = 5  # paths printed in the table; manifest.json lists them all


def manifest(*, source: dict, config: dict, reference_date: str | None, read: int, train: int, evals: int,
             dropped: dict[str, int], malformed: list[tuple[str, str]], sha256: dict[str, str],
             kept_memories: int, conversations: int, persona: dict) -> dict:
    return {
        "source": source,
        "config": config,
        "persona": persona,  # name, system prompt, and where they came from: later stages read it here
        "reference_date": reference_date,
        "read": read,  # inputs: memories (rows); read = kept_memories + sum(dropped)
        "kept": train + evals,  # examples; a multi-turn conversation is one
        "kept_memories": kept_memories,
        "conversations": conversations,  # examples made of more than one memory
        "train": train,
        "eval": evals,
        "dropped": dropped,
        "malformed": [{"path": path, "reason": why} for path, why in malformed],
        "sha256": sha256,
    }


def table(m: dict) -> list[str]:
    """The manifest as console lines: a funnel from inputs read, through each drop reason, to what was kept."""
    unit = "rows" if m["source"]["kind"] == "jsonl" else "memories"
    width = max(len(r) for r in REASONS) + 2
    lines = [f"{unit + ' read':<{width + 2}}{m['read']:>8}   from {m['source']['path']}"]
    lines += [f"  - {reason:<{width - 2}}{count:>8}" for reason, count in m["dropped"].items()]
    kept = m.get("kept_memories", m["kept"])
    grouped = (f"; {m['kept']} examples, {m['conversations']} of them multi-turn conversations"
               if m.get("conversations") else "")
    lines.append(f"{'kept':<{width + 2}}{kept:>8}   train {m['train']}, eval {m['eval']}{grouped}")
    if m["malformed"]:
        more = len(m["malformed"]) - SHOWN_MALFORMED
        lines.append("malformed inputs" + (f" (first {SHOWN_MALFORMED}; all in manifest.json):" if more > 0 else ":"))
        lines += [f"  {bad['path']}: {bad['reason']}" for bad in m["malformed"][:SHOWN_MALFORMED]]
    return lines

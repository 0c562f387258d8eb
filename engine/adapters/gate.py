"""The eval gate: does a new adapter deserve to become active?

It must have learnt something on its own eval split (eval loss after <= before - gate.min_improvement), and,
when the active adapter was evaluated on the very same eval split (same eval.jsonl sha256), it must not be worse
than that one. Losses on different eval splits are not comparable, so then only the first rule applies.
"""
from __future__ import annotations

from functools import partial

from engine.numbers import finite

_loss = partial(finite, text=True)  # a record may have been edited by hand


def decide(entry: dict, active: dict | None, min_improvement: float) -> tuple[bool, str]:
    """(passes, reason). The reason carries the numbers, for the log line and the record."""
    before, after = _loss(entry.get("eval_loss_before")), _loss(entry.get("eval_loss_after"))
    if before is None or after is None:
        return False, (f"no eval loss to judge it by (before {entry.get('eval_loss_before')}, after "
                       f"{entry.get('eval_loss_after')}); an empty eval split cannot pass the gate")
    gain = before - after
    if gain < min_improvement:
        return False, (f"eval loss {before:.4f} -> {after:.4f} improved by {gain:.4f}, "
                       f"less than gate.min_improvement {min_improvement:g}")
    same_split = active is not None and active.get("dataset", {}).get("eval_sha256") \
        and active["dataset"]["eval_sha256"] == entry.get("dataset", {}).get("eval_sha256")
    if same_split:
        theirs = _loss(active.get("eval_loss_after"))
        if theirs is not None and after > theirs:
            return False, (f"eval loss {after:.4f} is worse than the active adapter {active['id']}'s {theirs:.4f} "
                           "on the same eval split")
        return True, (f"eval loss {before:.4f} -> {after:.4f}, improved by {gain:.4f}, not worse than {active['id']}'s "
                      f"{theirs if theirs is None else f'{theirs:.4f}'} on the same eval split")
    return True, f"eval loss {before:.4f} -> {after:.4f}, improved by {gain:.4f}"

"""The eval gate: does a new adapter deserve to become active?

It must have learnt something on its own eval split (eval loss after <= before - gate.min_improvement), and,
when the active adapter was evaluated on the very same eval split (same eval.jsonl sha256), it must not be worse
than that one. Losses on different eval splits are not comparable, so then only the first rule applies.

An adapter trained on another base model than the active one's never replaces it by itself, however much it
learnt: a smoke run (`python run.py`, the tiny random model on the sample memories) learns plenty on its own split,
and without this rule it would retire the user's real adapter, which export.metahuman would then swap out for the
tiny one. Such an adapter is registered as rejected, with that reason, and `promote` makes it active by hand. The
very first adapter of a registry (none active) is judged by the first rule alone.
"""
from __future__ import annotations

from functools import partial

from engine.numbers import finite

_loss = partial(finite, text=True)  # a record may have been edited by hand


def base_model(entry: dict) -> tuple[str | None, str | None]:
    """What the adapter was trained on: (source, Hugging Face id or pod folder); a random model by its option name,
    as it has no id and each option builds its own shape."""
    model = entry.get("base_model") or {}
    return model.get("source"), model.get("id") or model.get("name")


def _model_words(entry: dict) -> str:
    source, ident = base_model(entry)
    return f"{ident} ({source})"


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
    if active is not None and base_model(active) != base_model(entry):
        return False, (f"eval loss {before:.4f} -> {after:.4f} improved by {gain:.4f}, but on {_model_words(entry)}, "
                       f"a different base model than the active adapter {active['id']}'s ({_model_words(active)}): "
                       f"promote it by hand (python -m engine.adapters promote {entry['id']})")
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

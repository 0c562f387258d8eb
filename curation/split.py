"""The train/eval split: by a hash of the example id, so an example stays on its side across runs.

Adding or removing other memories never moves an example from train to eval, which keeps eval losses of
successive adapters comparable.
"""
from __future__ import annotations

import hashlib


def is_eval(example_id: str, fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:8], "big") / 2**64
    return bucket < fraction

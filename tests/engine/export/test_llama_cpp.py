"""The GGUF path for real: the converted base and LoRA load in llama.cpp (llama-cpp-python, the engine Ollama
runs GGUF models with), give the logits transformers and PEFT give for the same tokens, and the adapter moves
them. Covers the tiny Llama (model=tiny's FROM line and adapter) and a tiny random Qwen3 (the product's GGUF
adapter path)."""
from __future__ import annotations

import json

import llama_cpp  # pinned in the test extra (pyproject.toml): missing is a failure, never a skip
import numpy as np
import pytest

from engine.export import families, gguf_base, gguf_lora
from tests.engine.export import models

IDS = [7, 120, 33, 250, 4, 91, 180, 12]


def llama_logits(base_gguf, adapter_gguf=None) -> np.ndarray:
    kwargs = {"lora_path": str(adapter_gguf)} if adapter_gguf else {}
    llm = llama_cpp.Llama(model_path=str(base_gguf), n_ctx=64, n_batch=64, n_threads=1, logits_all=True,
                          verbose=False, seed=0, **kwargs)
    try:
        llm.eval(IDS)
        return np.array(llm.scores[:len(IDS)], dtype=np.float32)
    finally:
        llm.close()


@pytest.mark.parametrize("family", ["tiny", "qwen3"])
def test_base_and_adapter_load_in_llama_cpp_and_match_transformers(tmp_path, family):
    if family == "tiny":
        base, fam = models.tiny_base(tmp_path), families.TINY
    else:
        base, fam = models.qwen3_base(tmp_path), families.QWEN
    adapter = models.adapter(base, tmp_path / "adapter")
    base_gguf = gguf_base.convert(base, tmp_path / "base.gguf")
    adapter_gguf = gguf_lora.convert(adapter, tmp_path / "adapter.gguf", fam,
                                     json.loads((base / "config.json").read_text()))

    plain, tuned = llama_logits(base_gguf), llama_logits(base_gguf, adapter_gguf)
    want_plain, want_tuned = models.hf_logits(base, None, IDS), models.hf_logits(base, adapter, IDS)
    assert np.abs(want_tuned - want_plain).max() > 0.05, "the test adapter must move the logits to be a test"
    np.testing.assert_allclose(plain, want_plain, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(tuned, want_tuned, atol=2e-3, rtol=1e-3)
    assert np.abs(tuned - plain).max() > 0.05

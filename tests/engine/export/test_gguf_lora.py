"""PEFT LoRA -> GGUF LoRA: names, shapes, alpha and the q/k row order, read back with the gguf package's reader."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.export import families, gguf_lora, tensors
from tests.engine.export import models


def read(path):
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    # the reader gives numpy's view of GGUF's ne order reversed back: PyTorch's (rows, cols)
    return fields, {t.name: np.array(t.data).reshape([int(n) for n in reversed(t.shape)]) for t in reader.tensors}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    base = models.tiny_base(root)
    return base, models.adapter(base, root / "adapter")


def test_every_pair_becomes_a_named_lora_a_and_b_with_the_adapter_keys(tiny, tmp_path):
    base, adapter = tiny
    out = gguf_lora.convert(adapter, tmp_path / "a.gguf", families.TINY, json.loads((base / "config.json").read_text()))
    fields, weights = read(out)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama"
    assert fields["adapter.lora.alpha"] == pytest.approx(8.0)
    expected = {f"blk.{i}.{t}.weight.lora_{p}" for i in range(2) for p in "ab"
                for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    assert set(weights) == expected
    peft = tensors.read(adapter / "adapter_model.safetensors")
    down_a = peft["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]
    assert weights["blk.1.ffn_down.weight.lora_a"].shape == down_a.shape == (4, 128)
    np.testing.assert_array_equal(weights["blk.1.ffn_down.weight.lora_a"], down_a)


def test_llama_q_and_k_rows_are_reordered_per_head_and_v_is_not(tiny, tmp_path):
    base, adapter = tiny
    _, weights = read(gguf_lora.convert(adapter, tmp_path / "a.gguf", families.TINY,
                                        json.loads((base / "config.json").read_text())))
    peft = tensors.read(adapter / "adapter_model.safetensors")
    key = "base_model.model.model.layers.0.self_attn.{}.lora_B.weight"
    q, v = peft[key.format("q_proj")], peft[key.format("v_proj")]
    np.testing.assert_array_equal(weights["blk.0.attn_v.weight.lora_b"], v)
    got = weights["blk.0.attn_q.weight.lora_b"]
    assert not np.array_equal(got, q)
    # head 0 (rows 0..15): llama.cpp's order takes the rotary halves' rows interleaved: 0, 8, 1, 9, ...
    np.testing.assert_array_equal(got[:16], q[[r for pair in zip(range(8), range(8, 16)) for r in pair]])


def test_qwen3_rows_stay_as_they_are(tmp_path):
    base = models.qwen3_base(tmp_path)
    adapter = models.adapter(base, tmp_path / "adapter")
    fields, weights = read(gguf_lora.convert(adapter, tmp_path / "q.gguf", families.QWEN))
    assert fields["general.architecture"] == "qwen3"
    peft = tensors.read(adapter / "adapter_model.safetensors")
    np.testing.assert_array_equal(weights["blk.1.attn_q.weight.lora_b"],
                                  peft["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"])


def test_rslora_alpha_is_scaled_so_llama_cpps_alpha_over_r_is_pefts_alpha_over_sqrt_r():
    assert gguf_lora.alpha_of({"lora_alpha": 16, "r": 16, "use_rslora": True}) == pytest.approx(16 * math.sqrt(16))
    assert gguf_lora.alpha_of({"lora_alpha": 16, "r": 16}) == 16


@pytest.mark.parametrize("key,value", [("use_dora", True), ("rank_pattern", {"q_proj": 4})])
def test_settings_a_gguf_lora_cannot_hold_are_refused_by_name(key, value):
    with pytest.raises(gguf_lora.ConversionError, match=key):
        gguf_lora.alpha_of({"lora_alpha": 16, "r": 8, key: value})


def test_a_llama_adapter_without_its_base_config_is_refused_with_the_way_out(tiny, tmp_path):
    _, adapter = tiny
    with pytest.raises(gguf_lora.ConversionError, match="adapter_format=safetensors"):
        gguf_lora.convert(adapter, tmp_path / "a.gguf", families.LLAMA, None)


def test_bfloat16_tensors_are_read_as_float32(tmp_path):
    import torch
    from safetensors.torch import save_file

    original = torch.randn(3, 5)
    save_file({"w": original.to(torch.bfloat16)}, tmp_path / "w.safetensors")
    got = tensors.read(tmp_path / "w.safetensors")["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, original.to(torch.bfloat16).float().numpy())


def test_a_file_that_is_not_safetensors_is_named(tmp_path):
    bad = tmp_path / "adapter_model.safetensors"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        tensors.read(bad)

"""A PEFT LoRA adapter folder -> a GGUF LoRA file that llama.cpp (and so Ollama) loads onto its base model.

Follows llama.cpp's convert_lora_to_gguf.py (github.com/ggml-org/llama.cpp): general.type=adapter,
adapter.type=lora, adapter.lora.alpha; each PEFT pair base_model.model.<hf name>.lora_{A,B}.weight becomes
<gguf name>.lora_{a,b}, the GGUF name found by the `gguf` package's tensor-name map, exactly as that script
does through its base model class. A and B keep PyTorch's row-major shapes (A: r x in, B: out x in's r), which
the writer stores as llama.cpp expects. For Llama the base conversion reorders q_proj/k_proj rows
(convert_hf_to_gguf.py LlamaModel.permute); on a LoRA pair that is a reordering of B's rows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from engine.export import tensors
from engine.export.families import Family

PREFIX = "base_model.model."


class ConversionError(ValueError):
    """The adapter cannot be expressed as a llama.cpp LoRA; the message says which tensor or setting, and why."""


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute: per head, interleaved rope halves -> llama.cpp's order."""
    rows = weights.shape[0]
    return (weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def alpha_of(adapter_config: dict) -> float:
    """The alpha llama.cpp needs for PEFT's scale: llama.cpp scales by alpha / r; rsLoRA scales by alpha / sqrt(r)."""
    for key in ("use_dora", "rank_pattern", "alpha_pattern"):
        if adapter_config.get(key):
            raise ConversionError(f"adapter_config.json sets {key}; llama.cpp's LoRA format has no place for it")
    alpha, r = float(adapter_config["lora_alpha"]), int(adapter_config["r"])
    return alpha * math.sqrt(r) if adapter_config.get("use_rslora") else alpha


def convert(adapter_dir: Path, out: Path, family: Family, base_config: dict | None = None) -> Path:
    """Write `out` from adapter_dir's adapter_config.json and adapter_model.safetensors.

    base_config (the base model's config.json) is needed only for a family whose q/k rows are reordered:
    the reordering is per attention head.
    """
    import gguf

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    weights = tensors.read(adapter_dir / "adapter_model.safetensors")
    heads = {}
    if family.permute_qk:
        if not base_config:
            raise ConversionError(f"a {family.name} adapter needs its base model's config.json (attention heads) to "
                                  "become GGUF; export it as safetensors (export.adapter_format=safetensors)")
        n_head = int(base_config["num_attention_heads"])
        heads = {"q_proj": n_head, "k_proj": int(base_config.get("num_key_value_heads") or n_head)}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[family.arch.upper()], 1 << 10)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for name, array in weights.items():
        part = "a" if ".lora_A.weight" in name else "b" if ".lora_B.weight" in name else None
        if part is None or not name.startswith(PREFIX):
            raise ConversionError(f"{adapter_dir / 'adapter_model.safetensors'}: tensor {name} is not a LoRA A/B "
                                  "weight (embeddings or norms trained in full cannot go into a GGUF LoRA here)")
        hf = name[len(PREFIX):].replace(f".lora_{part.upper()}.weight", ".weight")
        pairs.setdefault(hf, {})[part] = np.ascontiguousarray(array, dtype=np.float32)

    writer = gguf.GGUFWriter(str(out), family.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha_of(config))
    for hf, pair in sorted(pairs.items()):
        if set(pair) != {"a", "b"}:
            raise ConversionError(f"{hf}: the adapter holds lora_{'A' if 'a' in pair else 'B'} without its partner")
        target = names.get_name(hf, try_suffixes=(".weight",))
        if target is None:
            raise ConversionError(f"{hf}: no {family.arch} GGUF tensor corresponds to it")
        b = pair["b"]
        module = hf.rsplit(".", 2)[-2]
        if module in heads:
            b = np.ascontiguousarray(permute(b, heads[module]))
        writer.add_tensor(f"{target}.lora_a", pair["a"])
        writer.add_tensor(f"{target}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out

"""Tiny models and LoRA adapters built on CPU for the export tests: the tiny base exactly as the pod builds it
(train_unsloth.build_tiny_base), a tiny random Qwen3 sharing its tokenizer, and a PEFT LoRA on each whose B
matrices are random (PEFT starts them at zero, which would make an adapter that changes nothing)."""
from __future__ import annotations

import shutil
from pathlib import Path

from tests.remote_image.test_train_unsloth import load_script

SPEC = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 256}
TEXTS = ["Ada wrote about the harbour at dawn, the gulls and the cold tea she drank there."] * 40
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_base(root: Path) -> Path:
    return load_script().build_tiny_base(SPEC, TEXTS, 0, root / "base_model")


def qwen3_base(root: Path) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer_from = tiny_base(root / "tok")
    target = root / "qwen3_base"
    torch.manual_seed(1)
    config = Qwen3Config(vocab_size=SPEC["vocab_size"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                         tie_word_embeddings=False)
    Qwen3ForCausalLM(config).save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, target / name)
    return target


def adapter(base: Path, out: Path, *, r: int = 4, alpha: int = 8, rslora: bool = False, seed: int = 2) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS, use_rslora=rslora))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(out)
    return out


def hf_logits(base: Path, adapter_dir: Path | None, ids: list[int]):
    """Reference logits from transformers (and PEFT), float32, one row per position."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()

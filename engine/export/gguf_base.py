"""model=tiny's random base (a Hugging Face Llama folder with a byte-level BPE tokenizer) -> one GGUF file.

Also reads a small Qwen3 folder of the same kind (the tests build one to load a Qwen3 GGUF LoRA onto): its
q_norm/k_norm map to attn_{q,k}_norm, its q/k rows stay as they are (NeoX rope), and its head size is written
as key/value length since Qwen3's is not hidden_size / heads.

The tiny base exists only in <run>/base_model/ (the pod built it at random), so Ollama's FROM line and
llama.cpp need it converted here. Follows llama.cpp's convert_hf_to_gguf.py for LlamaModel with a "gpt2"
BPE vocabulary: hyperparameters under llama.*, token strings as the tokenizer stores them (byte-level, Ġ for
a space), merges as "a b" strings, special tokens typed CONTROL, q/k rows reordered for llama.cpp's rope.
No BOS is added: the ChatML template the tiny model trains with writes none. Float32 throughout (it is tiny).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.export import tensors
from engine.export.gguf_lora import ConversionError, permute


def _rope_theta(config: dict) -> float:
    # transformers 5 keeps it under rope_parameters; 4.x at the top level; Llama's default otherwise
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)


def _vocab(model_dir: Path, size: int):
    import gguf

    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise ConversionError(f"{model_dir / 'tokenizer.json'}: a {model.get('type')} tokenizer; the tiny base's "
                              "GGUF conversion reads byte-level BPE only")
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for text, i in model["vocab"].items():
        if i < size:
            tokens[i], types[i] = text, gguf.TokenType.NORMAL
    for added in tok.get("added_tokens", []):
        if added["id"] < size:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def convert(model_dir: Path, out: Path) -> Path:
    import gguf

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = config.get("model_type")
    if arch not in ("llama", "qwen3"):
        raise ConversionError(f"{model_dir / 'config.json'}: model_type {arch!r}; only the tiny random Llama "
                              "(and small Qwen3s) are converted here: hub models come FROM Ollama's library")
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    hidden, size = int(config["hidden_size"]), int(config["vocab_size"])
    tokens, types, merges = _vocab(model_dir, size)
    ids = {t: i for i, t in enumerate(tokens)}

    head_dim = int(config.get("head_dim") or hidden // n_head)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name("lorapod tiny base")
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    if arch == "qwen3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("pad_token", writer.add_pad_token_id)):
        if tok_cfg.get(key) in ids:
            add(ids[tok_cfg[key]])
    writer.add_add_bos_token(False)
    if tok_cfg.get("chat_template"):
        writer.add_chat_template(tok_cfg["chat_template"])

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], int(config["num_hidden_layers"]))
    weights = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        weights.update(tensors.read(path))
    if config.get("tie_word_embeddings") and "lm_head.weight" not in weights:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    for name, array in sorted(weights.items()):
        if name.endswith("rotary_emb.inv_freq"):
            continue  # computed by llama.cpp from rope_freq_base
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ConversionError(f"{model_dir}: tensor {name} has no {arch} GGUF counterpart")
        array = np.asarray(array, dtype=np.float32)
        if arch == "llama" and name.endswith("q_proj.weight"):
            array = permute(array, n_head)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            array = permute(array, n_kv)
        writer.add_tensor(target, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out

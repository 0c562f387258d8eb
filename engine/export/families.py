"""What the export needs to know per model family: its GGUF architecture, its chat template as an Ollama Go
template, its end-of-turn token, and the adapter form Ollama takes for it.

The Go templates are Ollama's own library templates (github.com/ollama/ollama, template/chatml.gotmpl and
template/llama3-instruct.gotmpl), extended only where the Hugging Face template the adapter was trained with
(tests/fixtures/chat_templates/) renders more, so that Ollama prompts the model exactly as training did:
- Llama 3.1's template opens every system message with its knowledge-cutoff lines (date_string defaults to
  26 Jul 2024); the BOS token is Ollama's tokenizer's to add (add_bos_token), not the template's.
- Qwen3 trains with enable_thinking=False (remote_image/train_unsloth.py render()), whose generation prompt
  ends with an empty think block; earlier assistant turns carry none.
- model=tiny's tokenizer uses plain ChatML (train_unsloth.py TINY_CHAT_TEMPLATE): chatml.gotmpl unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

QWEN3 = CHATML + "<think>\n\n</think>\n\n"

LLAMA31 = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ if eq .Role "system" }}Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

{{ end }}{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""


@dataclass(frozen=True)
class Family:
    name: str
    arch: str  # general.architecture in GGUF (llama.cpp's name)
    template: str  # Ollama Go template
    stop: str  # the end-of-turn token: Ollama stops generating there
    # HF -> GGUF reorders q_proj/k_proj rows for llama.cpp's rope layout (convert_hf_to_gguf.py LlamaModel
    # permute); Qwen uses the NeoX layout and keeps them as they are
    permute_qk: bool
    # Ollama imports safetensors adapters for Llama, Mistral and Gemma only (docs/import.mdx)
    safetensors_ok: bool


LLAMA = Family("llama3.1", "llama", LLAMA31, "<|eot_id|>", True, True)
QWEN = Family("qwen3", "qwen3", QWEN3, "<|im_end|>", False, False)
TINY = Family("tiny", "llama", CHATML, "<|im_end|>", True, True)
KNOWN = "Llama 3.x (model=llama3_1_8b), Qwen3 (model=qwen3_8b, qwen3_0_6b) and model=tiny"


def detect(model_cfg) -> Family | None:
    """The family of the configured base model, or None when the export does not know it."""
    if model_cfg.source == "random":
        return TINY
    text = f"{model_cfg.id or ''} {model_cfg.name or ''}".lower().replace("-", "").replace("_", "")
    if "qwen3" in text:
        return QWEN
    if "llama3" in text:
        return LLAMA
    return None

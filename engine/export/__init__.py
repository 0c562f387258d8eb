"""Ollama export: a Modelfile and the adapter in a form Ollama loads (stages/export.py runs it).

    family = families.detect(base_config, model_id)     # llama or qwen3: chat template and adapter form
    gguf_lora.convert(adapter_dir, out, arch, hparams)  # PEFT LoRA -> GGUF LoRA (what llama.cpp loads)
    gguf_base.convert(model_dir, out)                   # model=tiny's random Llama -> GGUF (its FROM line)
    modelfile.render(...)                               # FROM, ADAPTER, SYSTEM, TEMPLATE, PARAMETER stop
    ollama_cli.create(name, modelfile)                  # ollama create + ollama show

numpy, safetensors' file format and the `gguf` package only: no torch on the orchestrator.
"""

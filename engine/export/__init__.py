"""Ollama export: a Modelfile and the adapter in a form Ollama loads (stages/export.py runs it).

    family = families.detect(cfg.model)                           # llama or qwen3 (None: unknown): template, stop
    gguf_lora.convert(adapter_dir, out, family, base_config)     # PEFT LoRA -> GGUF LoRA (what llama.cpp loads)
    gguf_base.convert(model_dir, out)                            # model=tiny's random Llama -> GGUF (its FROM)
    modelfile.render(base=, adapter=, system=, template=, stop=)  # FROM, ADAPTER, SYSTEM, TEMPLATE, PARAMETER stop
    ollama_cli.available() / ollama_cli.create(name, modelfile)  # ollama on PATH?; ollama create + ollama show
    tensors.read(path)                                           # a .safetensors file -> numpy (bfloat16 too)

numpy, safetensors' file format and the `gguf` package only: no torch on the orchestrator.
"""

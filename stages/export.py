"""export: make the run's adapter usable in Ollama (export.ollama=true): <run>/export/ holds a Modelfile, the
adapter, and for model=tiny the base model, all named relative to the Modelfile so the folder can move.

    FROM      model.ollama (Ollama's library name of the base), or ./base.gguf converted from model=tiny's
              random base that came home in base_model/
    ADAPTER   ./adapter (the PEFT folder, for Llama: Ollama imports its safetensors, docs/import.mdx) or
              ./adapter.gguf (a GGUF LoRA, for Qwen3 and the tiny base; engine/export/gguf_lora.py)
    TEMPLATE  the family's chat template as an Ollama Go template (engine/export/families.py)
    SYSTEM    the system prompt the run trained with, read from its own dataset (the first train example's
              system message), so a persona resolved from MetaHuman OS's core.json is the one exported
    PARAMETER stop  the family's end-of-turn token

With export.ollama_create=true it then runs `ollama create <name> -f Modelfile` and `ollama show <name>`.
Runs after training succeeded (not `always`): there is nothing to export from a failed run.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from loguru import logger

from engine.context import RunContext
from engine.errors import StageError
from engine.export import families, modelfile, ollama_cli
from engine.stage import BaseStage

FORMATS = ("auto", "gguf", "safetensors")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what Ollama's safetensors import reads


def adapter_format(cfg, family: families.Family) -> str:
    fmt = cfg.export.adapter_format
    if fmt != "auto":
        return fmt
    # the tiny base is a GGUF made here, and GGUF is the path tested end to end with llama.cpp
    return "safetensors" if family.safetensors_ok and cfg.model.source != "random" else "gguf"


def _manifest(run_dir: Path) -> dict:
    try:
        manifest = json.loads((run_dir / "dataset" / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def trained_system_prompt(run_dir: Path, cfg) -> str | None:
    """The system message the run's training examples carry; else the persona prepare resolved (manifest.json,
    which for dataset=metahuman holds core.json's name and style); else the config's persona, resolved the way
    prepare resolves it."""
    train = run_dir / "dataset" / "train.jsonl"
    if train.is_file():
        with open(train, encoding="utf-8") as fh:
            first = fh.readline()
        if first.strip():
            for message in json.loads(first).get("messages", []):
                if message.get("role") == "system":
                    return message.get("content")
            return None  # trained without a system prompt: export none
    resolved = (_manifest(run_dir).get("persona") or {}).get("system_prompt")
    if isinstance(resolved, str) and resolved.strip():
        return resolved
    if "dataset" not in cfg or not cfg.dataset.get("persona"):
        return None
    from curation.persona import resolve  # reads MetaHuman OS's core.json when the config names no persona
    from engine.errors import LorapodError

    try:
        return resolve(cfg.dataset).system_prompt or None
    except (LorapodError, KeyError, IndexError, ValueError, AttributeError):  # no name anywhere: export no SYSTEM line
        return None


def persona_name(run_dir: Path, cfg) -> str:
    """The persona the run used: manifest.json's resolved persona when prepare recorded one, else the config's."""
    manifest = _manifest(run_dir)
    for found in ((manifest.get("persona") or {}).get("name"),
                  ((manifest.get("config") or {}).get("dataset") or {}).get("persona", {}).get("name")):
        if found:
            return found
    persona = cfg.dataset.get("persona") if "dataset" in cfg else None
    return (persona.get("name") if persona else None) or "persona"


class Export(BaseStage):
    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        e, problems = cfg.export, []
        if e.adapter_format not in FORMATS:
            problems.append(("export.adapter_format", f"must be one of {', '.join(FORMATS)}"))
        if e.ollama_name is not None and not modelfile.NAME.match(e.ollama_name):
            problems.append(("export.ollama_name", "must be an Ollama model name: lowercase letters, digits, . _ -, "
                                                   "and an optional :tag (lorapod-ada:v1)"))
        if e.ollama_create and not e.ollama:
            problems.append(("export.ollama_create", "needs export.ollama=true: it creates the model from the "
                                                     "Modelfile that export writes"))
        if e.ollama_create and ollama_cli.available() is None:
            problems.append(("export.ollama_create", "needs the ollama command on PATH, and there is none: install "
                                                     "Ollama, or set export.ollama_create=false and run `ollama "
                                                     "create` later from <run>/export/"))
        if not e.ollama:
            return problems
        family = families.detect(cfg.model)
        if family is None:
            problems.append(("model", f"export.ollama knows {families.KNOWN}; model.id {cfg.model.id} is none of "
                                      "them (its chat template is unknown), so set export.ollama=false"))
            return problems
        if cfg.model.source != "random" and not cfg.model.get("ollama"):
            problems.append(("model.ollama", "export.ollama needs the base model's Ollama library name (llama3.1:8b, "
                                             "qwen3:8b) for the Modelfile's FROM line"))
        fmt = adapter_format(cfg, family) if e.adapter_format in FORMATS else None
        if fmt == "safetensors" and not family.safetensors_ok:
            problems.append(("export.adapter_format", f"Ollama imports safetensors adapters for Llama, Mistral and "
                                                      f"Gemma only (its docs/import.mdx), not {family.name}: use "
                                                      "auto or gguf"))
        if fmt == "gguf" and family.permute_qk and cfg.model.source != "random":
            problems.append(("export.adapter_format", f"a GGUF LoRA for {family.name} needs the base model's "
                                                      "config.json, which only model=tiny brings home: use auto or "
                                                      "safetensors"))
        return problems

    def run(self, ctx: RunContext) -> None:
        cfg = ctx.cfg
        if not cfg.export.ollama:
            logger.info("export.ollama=false: no Modelfile written")
            return
        from engine.export import gguf_base, gguf_lora

        family = families.detect(cfg.model)
        adapter_dir, base_dir = ctx.run_dir / "adapter", ctx.run_dir / "base_model"
        if not (adapter_dir / "adapter_config.json").is_file():
            raise StageError(f"no adapter to export: {adapter_dir / 'adapter_config.json'} is missing",
                             "the fetch stage brings it home; check that train and fetch succeeded")
        out = ctx.run_dir / "export"
        if out.exists():
            shutil.rmtree(out)  # this stage's own folder from an earlier attempt
        out.mkdir()
        base_config = None
        try:
            if cfg.model.source == "random":
                base_config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
                gguf_base.convert(base_dir, out / "base.gguf")
                base = "./base.gguf"
            else:
                base = cfg.model.ollama
            if adapter_format(cfg, family) == "gguf":
                gguf_lora.convert(adapter_dir, out / "adapter.gguf", family, base_config)
                adapter = "./adapter.gguf"
            else:
                (out / "adapter").mkdir()
                for name in ADAPTER_FILES:
                    shutil.copy2(adapter_dir / name, out / "adapter" / name)
                adapter = "./adapter"
            text = modelfile.render(base=base, adapter=adapter, system=trained_system_prompt(ctx.run_dir, cfg),
                                    template=family.template, stop=family.stop)
        except (OSError, ValueError, KeyError) as exc:
            raise StageError(f"Ollama export failed: {exc}",
                             "the adapter in <run>/adapter/ is untouched; set export.ollama=false to skip the export"
                             ) from exc
        path = out / "Modelfile"
        path.write_text(text, encoding="utf-8")
        name = cfg.export.ollama_name or f"lorapod-{modelfile.slug(persona_name(ctx.run_dir, cfg))}:{ctx.run_id}"
        ctx.state.outputs["export"] = {"modelfile": str(path.relative_to(ctx.run_dir)), "adapter": adapter,
                                       "from": base, "ollama_name": name, "created": False}
        logger.info(f"Modelfile for Ollama in {path} (FROM {base}, ADAPTER {adapter})")
        if cfg.export.ollama_create:
            shown = ollama_cli.create(name, path)
            ctx.state.outputs["export"]["created"] = True
            logger.info(f"ollama create {name}: done; ollama show says:\n{shown.strip()}")
        else:
            logger.info(f"to use it: ollama create {name} -f {path}")

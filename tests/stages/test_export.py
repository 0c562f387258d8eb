"""The export stage writes a Modelfile Ollama can use from any folder, with the adapter in the right form, the
system prompt the run trained with, and the family's chat template; bad export settings are refused before
anything starts.

`ollama` cannot be installed here (no registry serves it), so the create step runs a fake `ollama` on PATH,
named as one, that records its arguments and answers like `ollama show`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from engine.context import PROJECT_ROOT, RunContext
from engine.errors import StageError
from engine.export import families
from engine.state import RunState
from stages.export import Export, trained_system_prompt
from tests.conftest import lorapod_env, run_lorapod
from tests.engine.export import models

SYSTEM = "You are Grace Hopper. Answer in your own voice, from your own memories."
FAKE_OLLAMA = """#!/bin/sh
# fake ollama: records its arguments; `show` answers with a model card, `create` with Ollama's last line
echo "$@" >> "$(dirname "$0")/calls"
[ -n "$FAKE_OLLAMA_FAIL" ] && [ "$1" = "$FAKE_OLLAMA_FAIL" ] && { echo "Error: $FAKE_OLLAMA_FAIL broke" >&2; exit 1; }
[ "$1" = show ] && printf '  Model\\n    architecture    llama\\n' || echo success
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder as fetch leaves it for model=tiny: base_model/, adapter/, dataset/."""
    root = tmp_path_factory.mktemp("run")
    base = models.tiny_base(root)
    models.adapter(base, root / "adapter")
    (root / "dataset").mkdir()
    row = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello"}]}
    (root / "dataset" / "train.jsonl").write_text(json.dumps(row) + "\n")
    (root / "dataset" / "manifest.json").write_text(json.dumps({"persona": {"name": "Grace Hopper"}}))
    return root


def context(run_dir: Path, *overrides: str) -> RunContext:
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["export.ollama=true", *overrides])
    return RunContext(cfg=cfg, run_dir=run_dir, state=RunState(run_id="20261129-120000-ab12"))


def copy_of(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def directives(modelfile: Path) -> dict[str, str]:
    text = modelfile.read_text()
    out = {}
    for key in ("FROM", "ADAPTER"):
        out[key] = next(line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(key + " "))
    for key in ("SYSTEM", "TEMPLATE"):
        out[key] = text.split(f'{key} """', 1)[1].split('"""', 1)[0]
    return out


def test_tiny_exports_its_base_and_adapter_as_gguf_with_the_trained_system_prompt(trained, tmp_path):
    import gguf

    run = copy_of(trained, tmp_path)
    ctx = context(run, "dataset.persona.name=Someone Else")
    Export().run(ctx)
    # export/ is moved elsewhere (helper stages copy it): every path in it must still resolve
    moved = shutil.copytree(run / "export", tmp_path / "elsewhere" / "export")
    found = directives(moved / "Modelfile")
    assert (found["FROM"], found["ADAPTER"]) == ("./base.gguf", "./adapter.gguf")
    assert gguf.GGUFReader(moved / found["FROM"]).fields["general.type"].contents() == "model"
    assert gguf.GGUFReader(moved / found["ADAPTER"]).fields["general.type"].contents() == "adapter"
    assert found["SYSTEM"] == SYSTEM  # the dataset's, not the config's persona
    assert found["TEMPLATE"] == families.CHATML
    assert 'PARAMETER stop "<|im_end|>"' in (moved / "Modelfile").read_text()
    assert ctx.state.outputs["export"]["ollama_name"] == "lorapod-grace-hopper:20261129-120000-ab12"


def test_a_llama_hub_model_gets_the_peft_folder_and_its_ollama_name(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    Export().run(context(run, "model=llama3_1_8b"))
    found = directives(run / "export" / "Modelfile")
    assert (found["FROM"], found["ADAPTER"]) == ("llama3.1:8b", "./adapter")
    assert sorted(p.name for p in (run / "export" / "adapter").iterdir()) == ["adapter_config.json",
                                                                             "adapter_model.safetensors"]
    assert (run / "export" / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (run / "adapter" / "adapter_model.safetensors").read_bytes()
    assert found["TEMPLATE"] == families.LLAMA31 and "<|start_header_id|>" in found["TEMPLATE"]
    assert not (run / "export" / "base.gguf").exists()


def test_a_qwen3_model_gets_a_gguf_lora_and_the_think_free_generation_prompt(tmp_path):
    import gguf

    base = models.qwen3_base(tmp_path / "m")
    run = tmp_path / "run"
    models.adapter(base, run / "adapter")
    Export().run(context(run, "model=qwen3_8b", "dataset.persona.name=Ada"))
    found = directives(run / "export" / "Modelfile")
    assert (found["FROM"], found["ADAPTER"]) == ("qwen3:8b", "./adapter.gguf")
    reader = gguf.GGUFReader(run / "export" / "adapter.gguf")
    assert reader.fields["general.architecture"].contents() == "qwen3"
    assert found["TEMPLATE"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # no dataset in this folder: the config's persona, formatted as prepare formats it
    assert found["SYSTEM"] == "You are Ada. Answer in your own voice, from your own memories."


def test_ollama_create_runs_create_then_show_on_the_modelfile(trained, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ollama").write_text(FAKE_OLLAMA)
    (bin_dir / "ollama").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run = copy_of(trained, tmp_path)
    ctx = context(run, "export.ollama_create=true", "export.ollama_name=grace:v1")
    assert Export.check_config(ctx.cfg) == []
    Export().run(ctx)
    modelfile = run / "export" / "Modelfile"
    assert (bin_dir / "calls").read_text().splitlines() == [f"create grace:v1 -f {modelfile}", "show grace:v1"]
    assert ctx.state.outputs["export"]["created"] is True

    monkeypatch.setenv("FAKE_OLLAMA_FAIL", "create")
    with pytest.raises(StageError, match="create broke") as failed:
        Export().run(context(run, "export.ollama_create=true", "export.ollama_name=grace:v1"))
    assert "ollama create grace:v1 -f" in str(failed.value)


def test_a_run_without_an_adapter_fails_the_stage_saying_where_it_looked(tmp_path):
    with pytest.raises(StageError, match="adapter_config.json is missing"):
        Export().run(context(tmp_path))


def test_export_off_writes_nothing(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    Export().run(context(run, "export.ollama=false"))
    assert not (run / "export").exists()


@pytest.mark.parametrize("overrides,key,says", [
    (["export.ollama=true", "export.ollama_create=true"], "export.ollama_create", "ollama command on PATH"),
    (["export.ollama_create=true"], "export.ollama_create", "needs export.ollama=true"),
    (["export.ollama=true", "export.ollama_name=Bad_Name"], "export.ollama_name", "Ollama model name"),
    (["export.ollama=true", "model=qwen3_8b", "export.adapter_format=safetensors"], "export.adapter_format",
     "safetensors adapters for Llama"),
    (["export.ollama=true", "model=qwen3_8b", "model.ollama=null"], "model.ollama", "FROM line"),
    (["export.ollama=true", "model.source=hub", "model.id=mistralai/Mistral-7B-v0.3"], "model:",
     "chat template is unknown"),
])
def test_bad_export_settings_are_a_config_error_before_anything_starts(tmp_path, overrides, key, says):
    empty = tmp_path / "no-ollama-here"
    empty.mkdir()
    run = run_lorapod(*overrides, run_dir=tmp_path / "run", env=lorapod_env(PATH=str(empty)), timeout=300)
    assert run.proc.returncode == 2, run.output
    assert key in run.output and says in run.output, run.output
    assert not (tmp_path / "run" / "dataset").exists()  # prepare never ran


def test_without_a_train_file_the_system_line_is_the_persona_prepare_resolved(tmp_path):
    # dataset=metahuman: the config names no persona; core.json's name and style are in manifest.json only.
    (tmp_path / "dataset").mkdir()
    resolved = "You are Ada Lovelace. Communication style: tone precise."
    (tmp_path / "dataset" / "manifest.json").write_text(json.dumps({"persona": {"name": "Ada Lovelace",
                                                                                "system_prompt": resolved}}))
    ctx = context(tmp_path, "dataset=metahuman", f"dataset.path={tmp_path / 'nowhere'}")
    assert trained_system_prompt(tmp_path, ctx.cfg) == resolved


def test_a_config_prompt_with_a_style_placeholder_is_filled_not_a_key_error(tmp_path):
    ctx = context(tmp_path, "dataset.persona.name=Ada", "dataset.persona.system_prompt='You are {name}. {style}'")
    assert trained_system_prompt(tmp_path, ctx.cfg) == "You are Ada."

"""`python run.py export.ollama=true`: a whole local run of the tiny model ends with a Modelfile whose GGUF base
and adapter load in llama.cpp, and the trained adapter changes the logits there."""
from __future__ import annotations

import json

import llama_cpp  # pinned in the test extra (pyproject.toml): missing is a failure, never a skip
import numpy as np

from tests.conftest import run_lorapod


def test_a_local_run_exports_a_modelfile_whose_gguf_adapter_loads_in_llama_cpp(tmp_path):
    run = run_lorapod("export.ollama=true", "train.max_steps=3", "train.learning_rate=1e-2", run_dir=tmp_path / "run")
    assert run.proc.returncode == 0, run.output
    export = tmp_path / "run" / "export"
    text = (export / "Modelfile").read_text()
    assert "FROM ./base.gguf\n" in text and "ADAPTER ./adapter.gguf\n" in text
    first = json.loads((tmp_path / "run" / "dataset" / "train.jsonl").read_text().splitlines()[0])
    system = next(m["content"] for m in first["messages"] if m["role"] == "system")
    assert f'SYSTEM """{system}"""' in text
    summary = json.loads((tmp_path / "run" / "run-summary.json").read_text())
    assert summary["stages"]["export"]["status"] == "succeeded"
    assert summary["export"]["modelfile"] == "export/Modelfile" and summary["export"]["created"] is False
    assert "ollama create lorapod-" in run.output  # the next step is printed for the user

    ids = [5, 40, 77, 120, 9, 300, 64]

    def logits(**adapter):
        llm = llama_cpp.Llama(model_path=str(export / "base.gguf"), n_ctx=64, logits_all=True, n_threads=1,
                              verbose=False, **adapter)
        try:
            llm.eval(ids)
            return np.array(llm.scores[:len(ids)])
        finally:
            llm.close()

    plain, tuned = logits(), logits(lora_path=str(export / "adapter.gguf"))
    assert np.isfinite(tuned).all()
    assert np.abs(tuned - plain).max() > 1e-4

"""`ollama create` and `ollama show`: the export's optional last step, on the user's own Ollama."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from engine.errors import StageError

TIMEOUT_S = 1800  # create copies the adapter and may pull the base model from Ollama's library


def available() -> str | None:
    return shutil.which("ollama")


def create(name: str, modelfile: Path) -> str:
    """Create `name` from `modelfile` and return what `ollama show` says about it; StageError when either fails."""
    exe = available()
    if exe is None:
        raise StageError("export.ollama_create=true, but the ollama command is not on PATH",
                         f"install Ollama, then run: ollama create {name} -f {modelfile}")
    for argv in ([exe, "create", name, "-f", str(modelfile)], [exe, "show", name]):
        try:
            done = subprocess.run(argv, cwd=modelfile.parent, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise StageError(f"`{' '.join(argv[1:])}` did not finish in {TIMEOUT_S} s",
                             "check that the Ollama server runs (ollama serve), then run it again by hand") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-2000:]
            raise StageError(f"`ollama {' '.join(argv[1:])}` failed (exit {done.returncode}): {tail}",
                             f"the Modelfile is in {modelfile.parent}; fix what Ollama says and run "
                             f"ollama create {name} -f {modelfile}")
    return done.stdout

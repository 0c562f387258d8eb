"""Secrets come from the environment or a `.env` file, and are known here so logs can redact them.

Nothing secret is ever put into the composed config: providers read their key, and upload the HF token,
from the environment by name, so `.hydra/`, state.json and run-summary.json cannot hold one.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

# Names whose values are redacted wherever they show up, and key shapes redacted even when unnamed. A provider
# adds the variable its key is read from (provider.api_key_env) with add_secret_name() before it uses it.
SECRET_NAMES = ["RUNPOD_API_KEY", "HF_TOKEN"]
_KEY_SHAPES = re.compile(r"rpa_[A-Za-z0-9]{8,}|hf_[A-Za-z0-9]{30,}")  # RunPod keys, Hugging Face tokens
REDACTED = "***"


def load_dotenv(path: Path = Path(".env")) -> list[str]:
    """Fill unset variables from a KEY=VALUE file; the environment wins. Returns the names it set."""
    if not path.is_file():
        return []
    loaded = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        key, value = key.strip(), value.strip().strip("'\"")
        if key and key not in os.environ:
            os.environ[key] = value
            loaded.append(key)
    return loaded


def add_secret_name(name: str) -> None:
    """Redact the value of environment variable `name` from now on, wherever it shows up."""
    if name and name not in SECRET_NAMES:
        SECRET_NAMES.append(name)


def is_secret_name(name: str) -> bool:
    return name in SECRET_NAMES


def secret_values() -> list[str]:
    return [v for v in (os.environ.get(n) for n in SECRET_NAMES) if v and len(v) >= 4]


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)

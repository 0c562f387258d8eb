"""The Modelfile text (Ollama's docs/modelfile.mdx): FROM, ADAPTER, SYSTEM, TEMPLATE, PARAMETER stop.

Paths are relative to the Modelfile's folder ("./adapter.gguf"), which Ollama resolves against the
Modelfile's own location, so export/ can be copied anywhere whole. Multi-line values go in triple quotes,
which Ollama's parser cannot escape: a value holding three double quotes is refused with the reason.
"""
from __future__ import annotations

import re

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}(:[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127})?$")


def quoted(key: str, value: str) -> str:
    if '"""' in value:
        raise ValueError(f"the {key} text holds three double quotes in a row, which a Modelfile cannot quote; "
                         "rewrite that part of it")
    return f'{key} """{value}"""'


def render(*, base: str, adapter: str, system: str | None, template: str, stop: str) -> str:
    lines = [
        "# written by lorapod's export stage: ollama create <name> -f Modelfile (from this folder or any other)",
        f"FROM {base}",
        f"ADAPTER {adapter}",
        quoted("TEMPLATE", template),
    ]
    if system:
        lines.append(quoted("SYSTEM", system))
    lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n"


def slug(text: str) -> str:
    """A name part Ollama accepts: lowercase letters, digits, dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "persona"

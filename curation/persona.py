"""Whose voice the adapter learns: the persona's name and system prompt, from the config or MetaHuman OS.

MetaHuman OS keeps its identity kernel in `persona/core.json` (per user: `profiles/<user>/persona/core.json`).
Its shape, from the project's own template (Greg-Aster/metahuman-os, persona/core.json.template):

    {"identity": {"name": "...", "humanName": "...", "role": "...", ...},
     "personality": {"communicationStyle": {"tone": ["helpful", "authentic"], "verbosity": "balanced",
                                            "emphasis": "clarity and usefulness"}, ...}, ...}

MetaHuman OS's chat prompt says "You are ${identity.name}" and reads `tone` as a list or a single string
(its persona_chat buildSystemPrompt), so both are accepted here; everything else in the file is ignored.

The name: dataset.persona.name when set (an override), else identity.name (identity.humanName when there is
no name). A name still in the template's brackets ("[Your Username]") counts as unset.
The style: the communication style as one sentence, "Communication style: tone helpful, authentic;
verbosity balanced; emphasis clarity and usefulness." It goes where the system prompt writes {style}, or,
when the prompt has no {style}, after it, so the default prompt stays a plain sentence.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DatasetError

from curation.memory import Malformed
from curation.read import parse_json, read_bytes
from curation.sources import root_of

CORE_MAX_BYTES = 1_048_576  # a core.json is a few kB; a bigger one is not an identity kernel
STYLE_ORDER = ("tone", "verbosity", "emphasis")  # the template's keys first; any others follow, sorted


@dataclass(frozen=True)
class Persona:
    name: str
    system_prompt: str  # formatted: {name} and {style} filled in
    style: str  # the communication style sentence ("" when there is none)
    name_from: str  # "dataset.persona.name" or the core.json path
    style_from: str | None  # the core.json path, or None when no style was read

    def record(self) -> dict:
        """What manifest.json keeps, for the stages after prepare (an Ollama SYSTEM line, say)."""
        return {"name": self.name, "system_prompt": self.system_prompt, "style": self.style,
                "name_from": self.name_from, "style_from": self.style_from}


def metahuman_root(path: Path) -> Path:
    """The MetaHuman OS root a dataset.path names: the path itself, or <root> when it points into the tree at
    <root>/memory/episodic (which curation/sources.py reads whole). stages/install.py installs under the same root."""
    if path.name == "episodic" and path.parent.name == "memory":
        return path.parent.parent
    return path


def core_path(source: str, path: str | None, user: str | None) -> Path | None:
    """Where a MetaHuman OS root keeps the persona; None for sources that have none (jsonl)."""
    if source == "jsonl":
        return None
    root = metahuman_root(root_of(source, path))
    return (root / "profiles" / user if user else root) / "persona" / "core.json"


def read_core(path: Path) -> tuple[str | None, str]:
    """(identity name or None, communication style sentence or ""); DatasetError naming the file when malformed."""
    try:
        obj = parse_json(read_bytes(os.fspath(path), CORE_MAX_BYTES))
    except Malformed as bad:
        raise DatasetError(f"{path} is not a readable MetaHuman OS persona file: {bad}",
                           "fix or restore it (MetaHuman OS writes it from persona/core.json.template), or move "
                           "it away and set dataset.persona.name; nothing was rented") from None
    if not isinstance(obj, dict):
        raise _shape(path, f"the file holds a JSON {type(obj).__name__}, not an object")
    identity = obj.get("identity", {})
    if not isinstance(identity, dict):
        raise _shape(path, "`identity` is not an object")
    name = None
    for key in ("name", "humanName"):
        value = identity.get(key)
        if value is not None and not isinstance(value, str):
            raise _shape(path, f"`identity.{key}` is not text")
        if value and value.strip() and not _placeholder(value):
            name = value.strip()
            break
    personality = obj.get("personality", {})
    if not isinstance(personality, dict):
        raise _shape(path, "`personality` is not an object")
    return name, _style(path, personality.get("communicationStyle"))


def resolve(ds) -> Persona:
    """The persona for dataset config `ds`; DatasetError when there is no name, naming both places to put one."""
    override = ds.persona.name.strip() if isinstance(ds.persona.name, str) and ds.persona.name.strip() else None
    core = core_path(ds.source, ds.path, ds.user)
    name, style = None, ""
    if core is not None and core.exists():
        name, style = read_core(core)
    if override is None and name is None:
        where = (f"{core} has no identity.name" if core is not None and core.exists()
                 else f"there is no {core}" if core is not None else f"dataset.source={ds.source} has no persona file")
        raise DatasetError(f"no persona name: dataset.persona.name is not set and {where}",
                           "set dataset.persona.name=... (or fill identity.name in MetaHuman OS's persona/core.json); "
                           "nothing was rented")
    name = override or name
    template = ds.persona.system_prompt
    prompt = template.format(name=name, style=style) if "{style}" in template else \
        " ".join(p for p in (template.format(name=name), style) if p)
    return Persona(name=name, system_prompt=prompt.strip(), style=style,
                   name_from="dataset.persona.name" if override else str(core),
                   style_from=str(core) if style else None)


def _style(path: Path, style: object) -> str:
    if style is None:
        return ""
    if isinstance(style, str):
        return f"Communication style: {style.strip().rstrip('.')}." if style.strip() else ""
    if not isinstance(style, dict):
        raise _shape(path, "`personality.communicationStyle` is neither text nor an object")
    parts = []
    for key in sorted(style, key=lambda k: (STYLE_ORDER.index(k) if k in STYLE_ORDER else len(STYLE_ORDER), k)):
        value = style[key]
        if isinstance(value, list):
            value = ", ".join(str(v).strip() for v in value if isinstance(v, (str, int, float)) and str(v).strip()
                              and not _placeholder(str(v)))
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = "" if _placeholder(str(value)) else str(value).strip()
        else:
            continue  # nested objects say nothing a sentence can carry
        if value:
            parts.append(f"{key} {value.rstrip('.')}")
    return f"Communication style: {'; '.join(parts)}." if parts else ""


def _placeholder(text: str) -> bool:
    """MetaHuman OS's template marks what to fill in with brackets: "[Your Username]"."""
    text = text.strip()
    return text.startswith("[") and text.endswith("]")


def _shape(path: Path, why: str) -> DatasetError:
    return DatasetError(f"{path} is not a MetaHuman OS persona file: {why}",
                        "fix it to match persona/core.json.template (identity.name, personality.communicationStyle), "
                        "or move it away and set dataset.persona.name; nothing was rented")

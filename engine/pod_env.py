"""The training process's own environment, set by the command that launches it.

Training is started over SSH, and an SSH session starts with a fresh environment: whatever the image's ENV
lines say reaches the container's first process, not us. So everything training needs is exported by the
launch command itself, for that one process: the cache locations (under remote.cache_dir, which on RunPod is
on the network volume), unbuffered output, the interpreter's own bin folder first on PATH, the path of the
private HF token file, and remote.env. Never a secret value: a command line is readable by `ps`.
"""
from __future__ import annotations

import posixpath
import re
import shlex

from engine.context import RunContext
from engine.secrets import is_secret_name

# Each cache the training fills, and its folder under the cache root. Unsloth's default is a relative
# `unsloth_compiled_cache` in the working directory, that is the run's own folder: never found again.
CACHE_VARS = {
    "HF_HOME": "huggingface",
    "TRITON_CACHE_DIR": "triton",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "UNSLOTH_COMPILE_LOCATION": "unsloth_compiled_cache",
}
ALWAYS = {"PYTHONUNBUFFERED": "1", "HF_XET_HIGH_PERFORMANCE": "1"}
TOKEN_PATH_VAR = "HF_TOKEN_PATH"  # huggingface_hub reads the token from this file
MANAGED = (*CACHE_VARS, *ALWAYS, TOKEN_PATH_VAR, "PATH")
# Variables that would carry a token into the config (and the .hydra folder) if remote.env could set them.
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# Names that look like a secret's (WANDB_API_KEY, GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD): a word of the
# name, in any letter case, so TOKENIZERS_PARALLELISM and MONKEY_PATCH pass. remote.env values are in the run's
# config (.hydra/) and on the command line that starts training, which `ps` shows to anyone on the pod.
SECRET_LOOKING = re.compile(r"(^|_)(API_?KEYS?|KEYS?|TOKENS?|SECRETS?|PASSWORDS?|PASSWD|PASS|CREDENTIALS?)(_|$)",
                            re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def looks_secret(name: str) -> bool:
    """Whether remote.env may not carry a variable of this name: a token, a key we redact, or a secret's name."""
    return name in TOKEN_VARS or is_secret_name(name) or bool(SECRET_LOOKING.search(name))


def training_env(ctx: RunContext) -> dict[str, str]:
    """Name -> value for the training process, in export order; PATH is handled by launch_exports."""
    env: dict[str, str] = {}
    cache = ctx.remote_cache_dir
    if cache:
        env.update({name: posixpath.join(cache, sub) for name, sub in CACHE_VARS.items()})
    env.update(ALWAYS)
    token = ctx.state.outputs.get("hf_token")
    if token and not token.get("removed"):
        env[TOKEN_PATH_VAR] = token["path"]
    env.update({str(k): str(v) for k, v in (ctx.cfg.remote.env or {}).items()})
    return env


def launch_exports(env: dict[str, str], python: str) -> str:
    """Shell text that exports env and puts the interpreter's folder (a venv's bin) first on PATH, so what
    training starts by name (a console script, a compiler helper) comes from the same environment. A bare
    interpreter name is found through PATH already, so it changes nothing there."""
    parts = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    folder = posixpath.dirname(python)
    if folder:
        parts.append(f'export PATH={shlex.quote(folder)}:"$PATH"')
    return "; ".join(parts)


def private_dir_command(path: str) -> str:
    """Make a folder only its owner can enter: made 700, and chmod 700 when it was there already."""
    quoted = shlex.quote(path)
    return f"mkdir -p -m 700 {quoted} && chmod 700 {quoted}"


def check_config(cfg) -> list[tuple[str, str]]:
    problems = []
    cache = cfg.remote.cache_dir
    if cache is not None and not str(cache).startswith("/"):
        problems.append(("remote.cache_dir", f"must be an absolute path on the pod, or null (got {cache!r})"))
    for name in cfg.remote.env or {}:
        key = f"remote.env.{name}"
        if not _NAME.fullmatch(str(name)):
            problems.append((key, "is not a valid environment variable name"))
        elif looks_secret(str(name)):
            problems.append((key, "looks like a secret: remote.env lands in the run's config (.hydra/) and on the "
                                  "command line that starts training, which `ps` shows on the pod. Keep secrets in "
                                  "your environment (export it) or in .env; lorapod forwards only HF_TOKEN to the "
                                  "pod, through a private file, and no other variable. A value typed on the command "
                                  "line is in this run's .hydra/ folder already: delete it there"))
        elif name in MANAGED:
            problems.append((key, "is set by lorapod itself (the caches follow remote.cache_dir; PATH starts with the "
                                  "interpreter's folder)"))
    return problems

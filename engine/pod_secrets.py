"""The Hugging Face token on the pod: in a file only its owner can read, for as short a time as we can.

Gated models (Llama) need HF_TOKEN where training runs. An environment variable or an argument would be
readable in /proc and `ps`, and the pod's env in RunPod's console; so the upload stage writes the token into
`<secrets dir>/hf_token` (folder 700 made fresh before the file exists, file 600, written over the connection
from memory) and the launch hands training only its path, HF_TOKEN_PATH, which huggingface_hub reads.

The secrets dir is the provider's `secrets_dir` when it names one, else `<remote dir>/secrets`. On RunPod it is
/run/lorapod/secrets, on the container's own disk: the workdir is where a network volume is mounted, and a
volume outlives the pod, also when lorapod dies and the pod's watchdog deletes the pod with nobody left to
delete the file. The file goes first thing at fetch, and otherwise when the run ends (before the pod is
deleted): a network volume, or a machine of your own, outlives the run.
"""
from __future__ import annotations

import os
import posixpath
import shlex

from loguru import logger

from engine.context import RunContext
from engine.errors import StageError, TransportError

TOKEN_ENV = "HF_TOKEN"
STATE_KEY = "hf_token"  # state.outputs: where the file is and whether it was removed (never the token)
REMOVE_TIMEOUT_S = 15.0  # a dead connection must not hold up deleting the pod for long


def secrets_dir(ctx: RunContext) -> str:
    """The token's private folder on the pod: the provider's `secrets_dir`, else `<remote dir>/secrets`."""
    return getattr(ctx.provider, "secrets_dir", None) or posixpath.join(ctx.remote_dir, "secrets")


def place_token(ctx: RunContext) -> str | None:
    """Put HF_TOKEN (environment or .env) on the pod; returns the file's path, or None without a token."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return None
    folder = secrets_dir(ctx)
    path = posixpath.join(folder, "hf_token")
    ctx.state.outputs[STATE_KEY] = {"path": path, "removed": False}
    ctx.closers.append(lambda: remove_token(ctx, at_end=True))  # from now on, whatever happens next
    ctx.save()
    out: list[str] = []
    quoted = shlex.quote(folder)
    # A fresh folder, private from its first moment: nothing can be opened inside it by anyone else.
    command = f"mkdir -p {shlex.quote(posixpath.dirname(folder))} && rm -rf {quoted} && mkdir -m 700 {quoted}"
    if ctx.transport.exec(command, on_line=out.append) != 0:
        raise StageError(f"cannot make the private folder {folder} on the pod: {' '.join(out)[-200:]}")
    ctx.transport.write_private(path, token.encode())  # 0600 from its first byte (the transports' tests check)
    logger.info(f"HF_TOKEN is on the pod in {path} (mode 600), for training only")
    return path


def remove_token(ctx: RunContext, at_end: bool = False) -> None:
    """Delete the token's folder if a token was placed and is still there. Never raises: fetch goes on (the
    end of the run tries again), and at the end nothing may stop the pod from being deleted."""
    record = ctx.state.outputs.get(STATE_KEY)
    if not record or record.get("removed") or ctx.transport is None:
        return
    folder = posixpath.dirname(record["path"])
    try:
        if ctx.transport.exec(f"rm -rf {shlex.quote(folder)}", timeout=REMOVE_TIMEOUT_S) != 0:
            raise TransportError(f"rm -rf {folder} failed")
    except Exception as exc:
        if at_end:
            logger.error(f"could not delete the HF token file {record['path']} on the pod: {exc}; delete it "
                         "yourself if the machine or its volume outlives this run")
        else:
            logger.warning(f"could not delete the HF token on the pod yet ({exc}); trying again when the run ends")
        return
    record["removed"] = True
    ctx.save()
    logger.info("HF_TOKEN deleted from the pod")

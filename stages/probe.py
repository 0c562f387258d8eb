"""probe: wait until the pod answers, connect, protect it, install the training closure where the image lacks it,
and check that its python and workdir are usable.

The order matters: the run folder first (the watchdog and the installer go there), then the provider's
after_connect (runpod: the heartbeat and the deadline watchdog), so that the pod is protected during an
install that can take ten minutes, then the closure (engine/closure.py), then the interpreter it made. An image
with its own interpreter has that checked before the watchdog, which runs under it.
"""
from __future__ import annotations

import shlex
from dataclasses import asdict

from loguru import logger

from engine import closure
from engine.context import RunContext
from engine.errors import StageError
from engine.providers.base import current_pod
from engine.stage import BaseStage
from engine.transport.base import open_transport


class Probe(BaseStage):
    def run(self, ctx: RunContext) -> None:
        endpoint = ctx.provider.wait_ready(current_pod(ctx))
        ctx.state.endpoint = asdict(endpoint)
        ctx.state.mark("ready")
        ctx.save()
        ctx.transport = open_transport(endpoint, ctx)
        _record_host_key(ctx, endpoint)
        prepare_workdir = getattr(ctx.provider, "prepare_workdir", None)  # provider=ssh: resolve and vet it
        if prepare_workdir is not None:
            prepare_workdir(ctx)
        rdir = ctx.remote_dir
        lines: list[str] = []
        if ctx.transport.exec(f"mkdir -p {shlex.quote(rdir)}", on_line=lines.append) != 0:
            raise StageError(f"cannot create {rdir} on the pod: {' '.join(lines)[-200:]}",
                             "set remote.workdir to a writable folder")
        # An image with its own interpreter has it checked first: a wrong remote.python must be named as such, not
        # seen as a watchdog that did not start under it.
        install = closure.needed(ctx)
        if not install:
            version = _check_python(ctx)
        after_connect = getattr(ctx.provider, "after_connect", None)
        if after_connect is not None:
            after_connect(ctx)
        if install:
            closure.install(ctx)
            version = _check_python(ctx)
        logger.info(f"pod ready: python {version} at {ctx.remote_python}; run folder {rdir}")


def _record_host_key(ctx: RunContext, endpoint) -> None:
    """How the pod's host key came to be trusted, for state.json and run-summary.json; the first probe's answer
    stays (a resumed run finds the key in its own known_hosts, which says nothing about how it got there)."""
    mode = getattr(ctx.transport, "host_key", None)
    if mode is None or "host_key" in ctx.state.outputs:
        return
    ctx.state.outputs["host_key"] = {"mode": mode, "host_keys_missing": endpoint.host_keys_missing}


def _check_python(ctx: RunContext) -> str:
    """The run's interpreter runs on the pod: its version, or a StageError naming the setting to fix."""
    python = ctx.remote_python
    version: list[str] = []
    check = f"{shlex.quote(python)} -c 'import sys; print(sys.version.split()[0])'"
    if ctx.transport.exec(check, on_line=version.append) != 0:
        raise StageError(f"the pod's python {python!r} does not run: {' '.join(version)[-200:]}",
                         "set remote.python to the interpreter the image has (e.g. /opt/venv/bin/python)")
    return version[-1] if version else "?"

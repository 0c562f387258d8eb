"""provider=ssh: a machine you already have. Nothing is rented, so deploy and terminate do nothing to it;
probe, upload, train and fetch run over the same SSH transport as a RunPod pod.

Its host key is trusted from provider.known_hosts (default ~/.ssh/known_hosts) when it is there, and
otherwise pinned at first contact in the run's own known_hosts.

The run folder goes under the remote user's home ($HOME/lorapod, resolved over SSH at probe) unless a workdir is
set, and probe refuses a workdir that others could tamper with (engine/remote_folder.py): on a shared machine a
folder like /tmp/lorapod belongs to whoever made it first.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from loguru import logger

from engine.context import RunContext
from engine.errors import StageError
from engine.providers.base import Endpoint, Pod, PodSpec
from engine.remote_folder import check_command, verdict

DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


class SshProvider:
    name = "ssh"

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.settings = ctx.cfg.provider
        self.default_workdir = self.settings.workdir  # null until probe resolves $HOME/lorapod on the machine
        self.default_python = self.settings.python
        self.default_cache_dir = None  # your machine: its own caches are left as they are
        self.secrets_dir = None  # <remote dir>/secrets, deleted at fetch or when the run ends

    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        key = cfg.provider.key_path
        if key and not Path(os.path.expanduser(key)).is_file():
            return [("provider.key_path", f"no private key at {key}")]
        if not key and not _default_key():
            return [("provider.key_path", f"is null and none of {', '.join(DEFAULT_KEYS)} exists: name your key")]
        return []

    def create(self, spec: PodSpec) -> Pod:
        s = self.settings
        logger.info(f"using {s.user}@{s.host}:{s.port} as it is: nothing to rent")
        return Pod(id=f"ssh-{s.host}-{s.port}", name=spec.name, provider=self.name)

    def wait_ready(self, pod: Pod) -> Endpoint:
        s = self.settings
        key = Path(os.path.expanduser(s.key_path)) if s.key_path else _default_key()
        known = os.path.expanduser(s.known_hosts or "~/.ssh/known_hosts")
        return Endpoint(kind="ssh", host=s.host, port=s.port, user=s.user, key_path=str(key),
                        trusted_known_hosts=known)

    def prepare_workdir(self, ctx: RunContext) -> None:
        """Resolves the default workdir on the machine and refuses one that others can write to, before
        anything is made or sent there (probe calls it first thing after connecting)."""
        given = ctx.cfg.remote.workdir or self.settings.workdir
        out: list[str] = []
        ctx.transport.exec(check_command(given), on_line=out.append)
        workdir, problem = verdict(out)
        key = "remote.workdir" if ctx.cfg.remote.workdir else "provider.workdir"
        if problem:
            raise StageError(f"unsafe workdir {workdir} on {self.settings.host} ({key}): {problem}",
                             f"set {key} to a folder only you can write to, e.g. a folder under your home "
                             "(the default, $HOME/lorapod, when both are null)")
        self.default_workdir = workdir
        ctx.state.outputs["workdir"] = workdir  # ctx.remote_dir goes under it: `~/x` given is $HOME/x checked
        logger.info(f"workdir {workdir} on {self.settings.host}: only you (or root) can write to it and above it")

    def terminate(self, pod: Pod) -> None:
        """Your machine stays; only the run's detached processes are stopped, if any are left."""
        if self.ctx.transport is None or "workdir" not in self.ctx.state.outputs:
            # No workdir passed the check (probe stopped first, or refused it): nothing of the run's can be running
            # there, and a train.pid in a folder others can write to is not ours to act on.
            return
        rdir = shlex.quote(self.ctx.remote_dir)
        self.ctx.transport.exec(f"[ -f {rdir}/train.pid ] && kill -TERM -- -\"$(cat {rdir}/train.pid)\" 2>/dev/null; true")

    def list_owned(self) -> list[Pod]:
        return []


def _default_key() -> Path | None:
    return next((Path(p).expanduser() for p in DEFAULT_KEYS if Path(p).expanduser().is_file()), None)

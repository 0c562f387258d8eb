"""provider=ssh: a machine you already have. Nothing is rented, so deploy and terminate do nothing to it;
probe, upload, train and fetch run over the same SSH transport as a RunPod pod.

Its host key is trusted from provider.known_hosts (default ~/.ssh/known_hosts) when it is there, and
otherwise pinned at first contact in the run's own known_hosts.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from loguru import logger

from engine.context import RunContext
from engine.providers.base import Endpoint, Pod, PodSpec

DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


class SshProvider:
    name = "ssh"

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.settings = ctx.cfg.provider
        self.default_workdir = self.settings.workdir
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

    def terminate(self, pod: Pod) -> None:
        """Your machine stays; only the run's detached processes are stopped, if any are left."""
        if self.ctx.transport is None:
            return
        rdir = shlex.quote(self.ctx.remote_dir)
        self.ctx.transport.exec(f"[ -f {rdir}/train.pid ] && kill -TERM -- -\"$(cat {rdir}/train.pid)\" 2>/dev/null; true")

    def list_owned(self) -> list[Pod]:
        return []


def _default_key() -> Path | None:
    return next((Path(p).expanduser() for p in DEFAULT_KEYS if Path(p).expanduser().is_file()), None)

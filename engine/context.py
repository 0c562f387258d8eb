"""RunContext: what every stage gets — the composed config, the run directory, provider, transport, state."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from omegaconf import DictConfig

from engine.state import RunState

if TYPE_CHECKING:
    from engine.providers.base import Provider
    from engine.transport.base import Transport

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    state: RunState
    provider: Provider | None = None
    transport: Transport | None = None
    stage: str = ""  # the stage now running, for log lines
    closers: list[Callable[[], None]] = field(default_factory=list)  # stopped before the pod goes (heartbeat)

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def pod_name(self) -> str:
        # Unique per run: how a create that answered with an error is found again and reconciled.
        return f"lorapod-{self.run_id}"

    @property
    def dataset_dir(self) -> Path:
        return self.run_dir / "dataset"

    @property
    def remote_dir(self) -> str:
        """This run's folder on the pod (POSIX path): <remote.workdir>/<pod name>. A workdir the provider resolved
        on the machine (provider=ssh: `~` and $HOME) wins: it is the folder that was checked."""
        root = self.state.outputs.get("workdir") or self.cfg.remote.workdir or self.provider.default_workdir
        return posixpath.join(str(root), self.pod_name)

    @property
    def remote_python(self) -> str:
        return self.cfg.remote.python or self.provider.default_python

    @property
    def remote_cache_dir(self) -> str | None:
        """Root of the training's caches on the pod; None leaves the machine's own caches alone."""
        return self.cfg.remote.cache_dir or self.provider.default_cache_dir

    @property
    def script_path(self) -> Path:
        return Path(self.cfg.remote.script) if self.cfg.remote.script else PROJECT_ROOT / "remote_image" / "train_unsloth.py"

    def save(self) -> None:
        self.state.save(self.run_dir / "state.json")

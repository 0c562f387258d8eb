"""The provider verbs (create, wait_ready, terminate, list_owned) and the records they trade in.

Like SkyPilot's provisioners: a fixed, small verb set per provider; records are dataclasses so they go
into state.json as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engine.context import RunContext


@dataclass
class PodSpec:
    name: str  # unique per run: lorapod-<run id>
    env: dict[str, str] = field(default_factory=dict)  # put into the pod's environment (SSH key, deadline)


@dataclass
class Pod:
    id: str
    name: str
    provider: str
    gpu: str | None = None  # the GPU type it actually got (after fallbacks)
    cloud: str | None = None
    price_per_hour: float = 0.0
    workdir: str | None = None  # local: the folder that plays the pod


@dataclass
class Bill:
    """What a provider's billing shows for one pod so far (it lags: not necessarily its whole life)."""

    amount_usd: float
    covered_until: float | None = None  # epoch seconds: the end of the latest record (bucket); None: not said


@dataclass
class Endpoint:
    kind: str  # local or ssh: picks the transport
    host: str | None = None
    port: int | None = None
    user: str | None = None
    key_path: str | None = None  # private key to log in with
    host_keys: list[str] = field(default_factory=list)  # `<type> SHA256:<fp>` the pod announced; empty: pin at first contact
    trusted_known_hosts: str | None = None  # a known_hosts file to trust as well (a machine you already know)
    # Why the host keys the image should have named in its log were not found (so first contact decides); None
    # when it named them or was never expected to
    host_keys_missing: str | None = None


class Provider(Protocol):
    name: str
    default_workdir: str  # remote.workdir when the config leaves it null
    default_python: str  # remote.python when the config leaves it null
    default_cache_dir: str | None  # remote.cache_dir when the config leaves it null; None: the machine's own caches
    # Where the HF token's private folder goes; None: <remote dir>/secrets. A folder lorapod alone uses: it is
    # emptied before the token goes in and deleted after. Optional: a provider without it gets the default.
    secrets_dir: str | None

    def create(self, spec: PodSpec) -> Pod: ...

    def wait_ready(self, pod: Pod) -> Endpoint: ...

    def terminate(self, pod: Pod) -> None: ...

    def list_owned(self) -> list[Pod]: ...


def make_provider(ctx: RunContext) -> Provider:
    from hydra.utils import get_class

    return get_class(ctx.cfg.provider._target_)(ctx)


def current_pod(ctx: RunContext) -> Pod:
    from engine.errors import StageError

    if not ctx.state.pod:
        raise StageError("no pod in this run", "the pipeline needs a deploy stage before this one")
    return Pod(**{k: v for k, v in ctx.state.pod.items() if k in Pod.__dataclass_fields__})

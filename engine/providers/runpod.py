"""provider=runpod: rent a pod through RunPod's REST v2 API, wait until SSH is really up, delete it.

Capacity: the GPU option and its fallbacks are tried in turn, each in provider.cloud_order, and a table of
what was tried is printed. A create that errors (5xx, timeout) may still have made a pod: the pods are
listed by the run's unique name and what is found is adopted, never created twice.

Ready means RUNNING *and* a public TCP mapping of port 22 (`ssh.direct`, else the `runtime.ports` entry
with private 22 and type tcp — never the udp one). A pod that never gets there within
provider.ready_timeout_s has its container log shown and is deleted.
"""
from __future__ import annotations

import os
import re
import time

import httpx
from loguru import logger
from omegaconf import OmegaConf

from engine.context import PROJECT_ROOT, RunContext
from engine.errors import CapacityError, ProviderError
from engine.image import resolved_image_ref
from engine.providers.base import Endpoint, Pod, PodSpec
from engine.providers.runpod_api import ApiError, RunPodApi
from engine.sshkeys import run_keypair

CLOUDS = ("COMMUNITY", "SECURE")
HOST_KEY_LINE = re.compile(r"lorapod-host-key: (\S+) (SHA256:[A-Za-z0-9+/]+)")
GONE = ("TERMINATED",)


def gpu_option(name: str) -> dict:
    """A gpu config option by name (conf/gpu/<name>.yaml), for fallbacks."""
    path = PROJECT_ROOT / "conf" / "gpu" / f"{name}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path).gpu, resolve=True)


class RunPodProvider:
    name = "runpod"
    uses_image = True  # the build stage makes sure the image exists

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.settings = ctx.cfg.provider
        self.default_workdir = self.settings.workdir
        self.default_python = ctx.cfg.image.python
        self._api: RunPodApi | None = None

    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        p, problems = cfg.provider, []
        if not os.environ.get(p.api_key_env):
            problems.append((p.api_key_env, f"is not set: export {p.api_key_env}=<your key> or put it in a .env "
                                            "file (RunPod console > Settings > API Keys)"))
        if not cfg.gpu.id:
            problems.append(("gpu", f"gpu={cfg.gpu.name} names no RunPod GPU type: choose one, e.g. gpu=rtx5090"))
        for name in cfg.gpu.fallbacks:
            if not (PROJECT_ROOT / "conf" / "gpu" / f"{name}.yaml").is_file():
                problems.append(("gpu.fallbacks", f"{name!r} is not a gpu option (conf/gpu/{name}.yaml)"))
        for cloud in p.cloud_order:
            if cloud not in CLOUDS:
                problems.append(("provider.cloud_order", f"{cloud!r} is not one of {', '.join(CLOUDS)}"))
        for key in ("ready_timeout_s", "max_runtime_s", "heartbeat_timeout_s", "poll_interval_s", "disk_gb"):
            if p[key] <= 0:
                problems.append((f"provider.{key}", f"must be > 0 (got {p[key]})"))
        return problems

    @property
    def api(self) -> RunPodApi:
        if self._api is None:
            key = os.environ.get(self.settings.api_key_env)
            if not key:
                raise ProviderError(f"{self.settings.api_key_env} is not set", "export it or put it in .env")
            self._api = RunPodApi(self.settings.api_url, key, self.settings.request_timeout_s,
                                  self.settings.api_retry_s)
        return self._api

    # -- create ---------------------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[dict, str]]:
        gpus = [OmegaConf.to_container(self.ctx.cfg.gpu, resolve=True)]
        gpus += [gpu_option(name) for name in self.ctx.cfg.gpu.fallbacks]
        return [(gpu, cloud) for gpu in gpus for cloud in self.settings.cloud_order]

    def _body(self, spec: PodSpec, gpu: dict, cloud: str) -> dict:
        floors = [v for v in (gpu.get("min_cuda"), self.settings.min_cuda) if v]
        gpu_req = {"id": gpu["id"], "count": max(1, gpu.get("count") or 1)}
        if floors:
            gpu_req["minCudaVersion"] = max(floors, key=lambda v: tuple(map(int, v.split("."))))
        body = {"name": spec.name, "image": resolved_image_ref(self.ctx), "gpu": gpu_req, "cloud": cloud,
                "disk": self.settings.disk_gb, "ports": ["22/tcp"], "env": spec.env}
        if self.settings.network_volume_id:
            body["mounts"] = {"network": [{"volumeId": self.settings.network_volume_id, "path": "/workspace"}]}
        if self.settings.data_center_ids:
            body["dataCenterIds"] = list(self.settings.data_center_ids)
        return body

    def pod_env(self, spec: PodSpec) -> dict[str, str]:
        _, public_key = run_keypair(self.ctx.run_dir / "ssh", self.ctx.pod_name)
        from engine.deadline import deadline_env

        # Both names: lorapod's image reads SSH_PUBLIC_KEY, RunPod's and Unsloth's images read PUBLIC_KEY.
        return {**spec.env, "PUBLIC_KEY": public_key, "SSH_PUBLIC_KEY": public_key, **deadline_env(self.ctx)}

    def _check_gpu_types(self, candidates: list[tuple[dict, str]]) -> None:
        offered = {g["id"] for g in self.api.gpu_types()}
        unknown = sorted({gpu["id"] for gpu, _ in candidates} - offered)
        if unknown:
            raise ProviderError(f"RunPod has no GPU type {', '.join(map(repr, unknown))}; it offers: "
                                f"{', '.join(sorted(offered))}", "set gpu.id (or pick a gpu option) from that list")

    def create(self, spec: PodSpec) -> Pod:
        spec = PodSpec(name=spec.name, env=self.pod_env(spec))
        candidates = self._candidates()
        self._check_gpu_types(candidates)
        tried: list[tuple[str, str, str]] = []
        try:
            for gpu, cloud in candidates:
                try:
                    pod = self._create_once(self._body(spec, gpu, cloud))
                except CapacityError as exc:
                    tried.append((gpu["name"], cloud, f"no capacity: {exc.message[:70]}"))
                    logger.warning(f"no {gpu['name']} in {cloud} cloud; trying the next option")
                    continue
                tried.append((gpu["name"], cloud, f"created {pod['id']}"))
                return self._record(pod, gpu, cloud)
        finally:
            if len(tried) > 1 or (tried and not tried[-1][2].startswith("created")):
                logger.info("capacity attempts:\n" + _table(tried))
        raise CapacityError("no capacity for any GPU option in any cloud",
                            "try later, add gpu.fallbacks, or widen provider.cloud_order")

    def _create_once(self, body: dict) -> dict:
        """POST /pods, reconciling instead of retrying when the answer is lost or a 5xx."""
        for attempt in (1, 2):
            try:
                return self.api.create_pod(body)
            except (httpx.TimeoutException, httpx.TransportError, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status < 500:
                    raise
                logger.warning(f"create answered {exc}; looking for a pod named {body['name']} before anything else")
            found = self._reconcile(body["name"])
            if found:
                logger.warning(f"the create went through after all: adopting pod {found['id']}")
                return found
            if attempt == 2:
                raise ProviderError(f"RunPod failed twice to create {body['name']} and no such pod exists",
                                    "RunPod may be having trouble; try again later")
        raise AssertionError("unreachable")  # pragma: no cover

    def _reconcile(self, name: str) -> dict | None:
        mine = [p for p in self.api.list_pods() if p.get("name") == name and p.get("status") not in GONE]
        for extra in mine[1:]:  # more than one with our unique name: keep one, never pay for two
            logger.warning(f"deleting duplicate pod {extra['id']} named {name}")
            self.api.delete_pod(extra["id"])
        return mine[0] if mine else None

    def _record(self, pod: dict, gpu: dict, cloud: str) -> Pod:
        return Pod(id=pod["id"], name=pod["name"], provider=self.name, gpu=gpu["id"], cloud=cloud,
                   price_per_hour=float(pod.get("cost") or gpu.get("price_per_hour") or 0.0))

    # -- ready ----------------------------------------------------------------------------------------

    def wait_ready(self, pod: Pod) -> Endpoint:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        last = None
        while time.monotonic() < deadline:
            info = self.api.get_pod(pod.id)
            if info is None or info.get("status") in GONE:
                raise ProviderError(f"pod {pod.id} disappeared while starting (deleted from the console?)")
            status = info.get("status")
            if status != last:
                logger.info(f"pod {pod.id}: {status}")
                last = status
            if status in ("EXITED", "ERROR"):
                raise ProviderError(f"pod {pod.id} stopped while starting ({status})\n{self._log_tail(pod)}",
                                    "the container log above says why")
            endpoint = self._ssh_endpoint(info) if status == "RUNNING" else None
            if endpoint:
                return endpoint
            time.sleep(self.settings.poll_interval_s)
        raise ProviderError(f"pod {pod.id} was not ready (RUNNING with a public TCP port 22) within "
                            f"{self.settings.ready_timeout_s:.0f}s (last status {last})\n{self._log_tail(pod)}",
                            "the container log above says why; it will be deleted now")

    def _ssh_endpoint(self, info: dict) -> Endpoint | None:
        direct = (info.get("ssh") or {}).get("direct")
        if direct:
            host, port, user = direct["host"], int(direct["port"]), direct.get("username") or "root"
        else:
            ports = ((info.get("runtime") or {}).get("ports")) or []
            tcp22 = [p for p in ports if p.get("private") == 22 and p.get("type") == "tcp" and p.get("public")]
            if not tcp22:
                return None  # RUNNING alone is not ready: no public TCP mapping of 22 yet
            host, port, user = tcp22[0]["ip"], int(tcp22[0]["public"]), "root"
        key_path, _ = run_keypair(self.ctx.run_dir / "ssh", self.ctx.pod_name)
        host_keys = self._announced_host_keys(info["id"]) if self.ctx.cfg.image.logs_host_keys else []
        return Endpoint(kind="ssh", host=host, port=port, user=user, key_path=str(key_path), host_keys=host_keys)

    def _announced_host_keys(self, pod_id: str) -> list[str]:
        try:
            found = {" ".join(m.groups()) for line in self.api.logs(pod_id) for m in HOST_KEY_LINE.finditer(line)}
        except ProviderError as exc:
            logger.warning(f"could not read the pod's log for its host keys ({exc}); pinning at first contact")
            return []
        if not found:
            logger.warning("the pod's log announced no host key; pinning at first contact")
        return sorted(found)

    def _log_tail(self, pod: Pod, lines: int = 40) -> str:
        try:
            log = self.api.logs(pod.id, tail=lines)
        except ProviderError as exc:
            return f"(its container log could not be read: {exc.message})"
        return "container log:\n    " + "\n    ".join(log[-lines:]) if log else "(its container log is empty)"

    def after_connect(self, ctx: RunContext) -> None:
        """Arm the pod's own deadline as soon as we can reach it (see engine.deadline)."""
        from engine.deadline import Heartbeat, start_watchdog

        start_watchdog(ctx)
        ctx.closers.append(Heartbeat(ctx).start().stop)

    # -- terminate ------------------------------------------------------------------------------------

    def terminate(self, pod: Pod, confirm_s: float = 60.0) -> None:
        self.api.delete_pod(pod.id)
        deadline = time.monotonic() + confirm_s
        while time.monotonic() < deadline:
            info = self.api.get_pod(pod.id)
            if info is None or info.get("status") in GONE:
                return
            time.sleep(min(2.0, self.settings.poll_interval_s))
        raise ProviderError(f"pod {pod.id} still reports {info.get('status')} {confirm_s:.0f}s after DELETE")

    def is_alive(self, pod: Pod) -> bool:
        info = self.api.get_pod(pod.id)
        return info is not None and info.get("status") not in (*GONE, "EXITED", "ERROR")

    def manual_terminate_hint(self, pod: Pod) -> str:
        return (f"python -m engine.reap --yes   or   curl -X DELETE {self.settings.api_url}/pods/{pod.id} "
                f"-H \"Authorization: Bearer ${self.settings.api_key_env}\"")

    def list_owned(self) -> list[Pod]:
        return [Pod(id=p["id"], name=p["name"], provider=self.name, gpu=(p.get("gpu") or {}).get("id"),
                    cloud=p.get("cloud"), price_per_hour=float(p.get("cost") or 0))
                for p in self.api.list_pods() if str(p.get("name", "")).startswith("lorapod-")
                and p.get("status") not in GONE]


def _table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows + [("gpu", "cloud", "result")]) for i in range(3)]
    line = "  {:<%d}  {:<%d}  {}" % (widths[0], widths[1])
    return "\n".join([line.format("gpu", "cloud", "result")] + [line.format(*r) for r in rows])

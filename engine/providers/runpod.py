"""provider=runpod: rent a pod through RunPod's REST v2 API, wait until SSH is really up, delete it.

Candidates: the GPU option and its fallbacks, each in provider.cloud_order, less the pairs RunPod's catalog
says cannot exist (a GPU type not offered on that cloud, too many GPUs per pod) and, with a network volume,
every cloud but SECURE. They are tried in turn, as the API document advises: a 400 (no capacity, whatever
its words) or a 403 (a pool this account cannot use) moves on to the next; a 429 created nothing and is
waited out; a table of what was tried is printed, with RunPod's words for each when all failed.

Never a pod we do not know about: each create is shielded from Ctrl-C and SIGTERM (honoured as soon as it
returns), and a create whose answer is lost (timeout, 5xx, a 201 without a pod) is reconciled by the run's
unique name, reading the eventually consistent pod list for provider.reconcile_s, before anything else.
Terminate deletes every pod with the run's name, not only the recorded one.

Ready means RUNNING *and* a public TCP mapping of port 22 (`ssh.direct`, else the `runtime.ports` entry
with private 22, type tcp and an ip — never the udp one). A host that shows no public IP for
provider.public_ip_timeout_s has its pod deleted and the next candidate created; a pod that never gets
there within image.ready_timeout_s (else provider.ready_timeout_s) has its container log shown and is
deleted.
"""
from __future__ import annotations

import itertools
import os
import posixpath
import time
from dataclasses import asdict, dataclass

import httpx
from loguru import logger
from omegaconf import OmegaConf

from engine import closure, signals
from engine.context import PROJECT_ROOT, RunContext
from engine.errors import CapacityError, ProviderError
from engine.host_keys import announced
from engine.image import resolved_image_ref
from engine.providers.base import Bill, Endpoint, Pod, PodSpec
from engine.providers.runpod_api import DEFAULT_API_URL, ApiError, RunPodApi, insecure_url
from engine.secrets import add_secret_name
from engine.sshkeys import run_keypair
from engine.stage import pipeline_rents
from engine.teardown import CREATE_SENT

CLOUDS = ("COMMUNITY", "SECURE")
GONE = ("TERMINATED",)
HOST_KEY_WAIT_S = 30.0  # how long to look in a fresh pod's log for the host keys its start script prints


def _pod_price(gpu: dict) -> float:
    """The configured price of a whole pod: gpu.price_per_hour is per GPU, RunPod's pod `cost` is the pod's."""
    return float(gpu.get("price_per_hour") or 0.0) * max(_count(gpu), 1)


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
        # An image without its own interpreter for training (image=runpod) gets the closure's venv, which probe
        # installs (engine/closure.py).
        self.default_python = ctx.cfg.image.python or closure.venv_python(
            ctx.cfg, ctx.cfg.remote.workdir or self.settings.workdir)
        # The workdir is where a network volume is mounted: a cache there outlives the pod, so the next run on
        # that volume finds the model and the compiled kernels instead of fetching and compiling them again.
        self.default_cache_dir = posixpath.join(ctx.cfg.remote.workdir or self.settings.workdir, ".cache")
        # The HF token goes into the container's own /run, not under the workdir: /workspace is the volume disk
        # (kept while a stopped pod waits) or the network volume (kept for good), so a token left there by a
        # lorapod that died (its pod deleted by the watchdog, nobody left to delete the file) would outlive the
        # run. /run is on the container disk, "lost on stop/restart" and with the pod (docs.runpod.io/pods/
        # storage/types). /run/lorapod is the watchdog's root-only folder (engine/deadline.py's POD_STATE_DIR):
        # engine/pod_secrets.py makes fresh, and deletes, only its `secrets` subfolder.
        self.secrets_dir = "/run/lorapod/secrets"
        self._api: RunPodApi | None = None
        add_secret_name(self.settings.api_key_env)  # whatever the variable is called, its value never reaches a log
        if self.settings.watchdog_api_key_env:
            add_secret_name(self.settings.watchdog_api_key_env)
        self._spec: PodSpec | None = None
        self._queue: list[tuple[dict, str]] = []  # candidates not tried yet: the next ones after a failed host
        self._attempts: list[Attempt] = []
        self._known: set[str] = set()  # every pod id a create answered with or reconciling found
        self._deleted: set[str] = set()
        self._uncertain_until = 0.0  # monotonic: a lost create's pod may be missing from the list until then

    @staticmethod
    def check_config(cfg) -> list[tuple[str, str]]:
        p, problems = cfg.provider, []
        refused = insecure_url(p.api_url)
        if refused:
            problems.append(("provider.api_url", refused))
        rents = pipeline_rents(cfg)  # pipeline=plan prints prices from conf: no key needed for that
        if rents and not os.environ.get(p.api_key_env):
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
        for key in ("ready_timeout_s", "max_runtime_s", "heartbeat_timeout_s", "poll_interval_s", "disk_gb",
                    "public_ip_timeout_s", "reconcile_s", "watchdog_poll_s"):
            if p[key] <= 0:
                problems.append((f"provider.{key}", f"must be > 0 (got {p[key]})"))
        if p.billing_wait_s < 0:
            problems.append(("provider.billing_wait_s", f"must be >= 0 (got {p.billing_wait_s}); 0 reads the bill once"))
        if rents and p.watchdog_api_key_env and not os.environ.get(p.watchdog_api_key_env):
            problems.append(("provider.watchdog_api_key_env", f"names {p.watchdog_api_key_env}, which is not set: "
                                                              "export it or put it in .env, or drop the setting"))
        if p.network_volume_id and "SECURE" not in p.cloud_order:
            problems.append(("provider.network_volume_id", "needs SECURE in provider.cloud_order: network volumes "
                                                           "exist only in SECURE cloud"))
        cap = cfg.pipeline.max_runtime_s
        ready_key = "image.ready_timeout_s" if cfg.image.ready_timeout_s else "provider.ready_timeout_s"
        start = float(cfg.image.ready_timeout_s or p.ready_timeout_s) + float(cfg.probe.timeout_s)
        if cap and cap <= start:
            # The watchdog counts from the create: a pod that takes the whole start it is allowed would be deleted
            # by its own deadline the moment it is reached, before anything was checked.
            problems.append(("pipeline.max_runtime_s", f"({cap}s) must be more than {ready_key} plus probe.timeout_s "
                                                       f"({start:.0f}s), the longest start it allows, e.g. "
                                                       f"pipeline.max_runtime_s={start + 600:.0f}"))
        return problems

    @property
    def api(self) -> RunPodApi:
        if self._api is None:
            key = os.environ.get(self.settings.api_key_env)
            if not key:
                raise ProviderError(f"{self.settings.api_key_env} is not set", "export it or put it in .env")
            self._api = RunPodApi(self.settings.api_url, key, self.settings.request_timeout_s,
                                  self.settings.api_retry_s, key_env=self.settings.api_key_env)
        return self._api

    # -- create ---------------------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[dict, str]]:
        gpus = [OmegaConf.to_container(self.ctx.cfg.gpu, resolve=True)]
        if not self.ctx.cfg.pipeline.cheapest_first:  # a fallback GPU would prove nothing about the one asked for
            gpus += [gpu_option(name) for name in self.ctx.cfg.gpu.fallbacks]
        return [(gpu, cloud) for gpu in gpus for cloud in self.settings.cloud_order]

    def _cheapest_first(self, queue: list[tuple[dict, str]], catalog: dict[str, dict]) -> list[tuple[dict, str]]:
        """pipeline.cheapest_first: the clouds in order of the catalog's list price (GpuType.price, per GPU and
        hour); a cloud the catalog quotes no price for goes last, in provider.cloud_order's order."""
        def price(candidate: tuple[dict, str]) -> float:
            gpu, cloud = candidate
            quoted = ((catalog.get(gpu["id"]) or {}).get("price") or {}).get(cloud.lower())
            return float(quoted) if isinstance(quoted, (int, float)) else float("inf")

        ordered = sorted(queue, key=price)  # stable: equal prices keep cloud_order
        logger.info("cheapest first: " + ", ".join(
            f"{gpu['name']} {cloud} " + (f"${price((gpu, cloud)):.2f}/h" if price((gpu, cloud)) < float("inf")
                                         else "(no list price)") for gpu, cloud in ordered))
        return ordered

    def _body(self, spec: PodSpec, gpu: dict, cloud: str) -> dict:
        floors = [v for v in (gpu.get("min_cuda"), self.settings.min_cuda) if v]
        gpu_req = {"id": gpu["id"], "count": _count(gpu)}
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

        # Every variable the image may read its login key from (image.ssh_key_env): lorapod's reads SSH_PUBLIC_KEY,
        # RunPod's PUBLIC_KEY, Unsloth's SSH_KEY before PUBLIC_KEY.
        keys = {name: public_key for name in self.ctx.cfg.image.ssh_key_env}
        return {**spec.env, **keys, **deadline_env(self.ctx)}

    def _catalog(self, candidates: list[tuple[dict, str]]) -> dict[str, dict]:
        """RunPod's GPU types by id; an id it does not offer at all is a config error worth stopping for."""
        catalog = {g["id"]: g for g in self.api.gpu_types()}
        unknown = sorted({gpu["id"] for gpu, _ in candidates} - set(catalog))
        if unknown:
            raise ProviderError(f"RunPod has no GPU type {', '.join(map(repr, unknown))}; it offers: "
                                f"{', '.join(sorted(catalog))}", "set gpu.id (or pick a gpu option) from that list")
        return catalog

    def _skip_reason(self, gpu: dict, cloud: str, catalog: dict[str, dict]) -> str | None:
        """Why a (gpu, cloud) pair cannot exist, so that no create is spent on it."""
        if self.settings.network_volume_id and cloud != "SECURE":
            return "skipped: provider.network_volume_id is set, and network volumes are SECURE cloud only"
        entry, key = catalog.get(gpu["id"]) or {}, cloud.lower()
        if entry.get(key) is False:
            return f"skipped: RunPod's catalog offers no {gpu['id']} on {cloud}"
        most = (entry.get("maxCount") or {}).get(key)
        if isinstance(most, int) and _count(gpu) > most:
            return f"skipped: RunPod's catalog allows at most {most} of them per pod on {cloud}"
        return None

    def create(self, spec: PodSpec) -> Pod:
        self._spec = PodSpec(name=spec.name, env=self.pod_env(spec))
        candidates = self._candidates()
        catalog = self._catalog(candidates)
        self._attempts, self._queue = [], []
        for gpu, cloud in candidates:
            reason = self._skip_reason(gpu, cloud, catalog)
            if reason:
                self._attempts.append(Attempt(gpu["name"], cloud, reason))
            else:
                self._queue.append((gpu, cloud))
        if self.ctx.cfg.pipeline.cheapest_first:
            self._queue = self._cheapest_first(self._queue, catalog)
        return self._create_next()

    def _create_next(self) -> Pod:
        """Create the first queued candidate that RunPod places; the rest stay queued (a pod whose host never
        publishes a public IP is replaced by the next one)."""
        try:
            while self._queue:
                gpu, cloud = self._queue.pop(0)
                try:
                    info = self._create_once(self._body(self._spec, gpu, cloud), gpu, cloud)
                except CapacityError as exc:
                    self._attempts.append(Attempt(gpu["name"], cloud, "no capacity", exc.message))
                except ApiError as exc:
                    # The document's createPod table: 400 "try your next candidate" (capacity texts vary and
                    # carry no code), 403 "your account cannot access the requested pool: skip this candidate".
                    if exc.status not in (400, 403):
                        raise
                    result = "refused (400)" if exc.status == 400 else "no access to this pool (403)"
                    self._attempts.append(Attempt(gpu["name"], cloud, result, exc.detail))
                else:
                    self._attempts.append(Attempt(gpu["name"], cloud, f"created {info['id']}"))
                    return self._pod(info, gpu, cloud)
                logger.warning(f"{gpu['name']} in {cloud} cloud: {self._attempts[-1].result}; trying the next option")
            raise self._nothing_placed()
        finally:
            self._show_attempts()

    def _nothing_placed(self) -> ProviderError:
        tried = [a for a in self._attempts if not a.result.startswith(("skipped", "created", "no public IP"))]
        if not tried:
            return ProviderError("no GPU option can run in any cloud of provider.cloud_order (see the table above)",
                                 "add SECURE to provider.cloud_order, or gpu.fallbacks")
        if all(a.result.startswith("no access") for a in tried):  # one cause is far likelier than every pool
            return ProviderError(f"RunPod refused every create (403): {tried[-1].detail}",
                                 "the API key lacks permission to create pods (make one with read/write access to "
                                 "pods), or this account cannot use these GPU pools")
        if all(a.result == "refused (400)" for a in tried):
            return CapacityError(f"RunPod refused every candidate (400): no capacity, or the request itself is "
                                 f"wrong; the last answer: {tried[-1].detail}",
                                 "read RunPod's words in the table above: one text on every row points at the "
                                 "request (RunPod's advice), different ones at capacity")
        return CapacityError("no capacity for any GPU option in any cloud (see the table above)",
                             "try later, add gpu.fallbacks, or widen provider.cloud_order")

    def _show_attempts(self) -> None:
        rows = self._attempts
        if not rows or (len(rows) == 1 and rows[0].result.startswith("created")):
            return
        failed = not any(a.result.startswith("created") for a in rows)
        # Each candidate's detail only when all failed: then they are what the user needs to decide.
        logger.info("capacity attempts:\n" + _table([(a.gpu, a.cloud, a.result + (f": {a.detail}" if failed and
                                                                                  a.detail else ""))
                                                       for a in rows]))

    def _create_once(self, body: dict, gpu: dict, cloud: str) -> dict:
        """POST /pods. A lost answer (timeout, 5xx, a 201 without a pod) is reconciled by the run's unique
        name before anything else, and only then is the create sent once more."""
        for attempt in (1, 2):
            info, lost = self._post(body, gpu, cloud)
            if info is not None:
                return info
            logger.warning(f"the create's answer was lost ({lost}); looking for a pod named {body['name']} "
                           "before anything else")
            found = self._reconcile(body["name"])
            if found:
                logger.warning(f"the create went through after all: adopting pod {found['id']}")
                return found
            if attempt == 2:
                raise ProviderError(f"RunPod failed twice to create {body['name']} and no such pod appeared "
                                    f"within provider.reconcile_s ({self.settings.reconcile_s:.0f}s)",
                                    "RunPod may be having trouble; try again later")
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, body: dict, gpu: dict, cloud: str) -> tuple[dict | None, str | None]:
        """One create, shielded from Ctrl-C and SIGTERM (cut mid-flight, it would leave a pod nobody knows
        of); a signal is honoured as soon as RunPod has answered. A 429 comes before anything is created
        (the document's createPod table), so it is waited out (Retry-After) and sent again.
        Returns (the pod, None) or (None, why its answer was lost); other refusals raise."""
        give_up = time.monotonic() + self.settings.api_retry_s
        for tries in itertools.count(1):
            self.ctx.state.mark(CREATE_SENT)  # from now on, terminate looks for the run's name too
            self.ctx.save()
            sent_at = time.monotonic()
            info = lost = refused = None
            with signals.deferred() as caught:
                try:
                    info = self.api.create_pod(body)
                except ValueError:
                    lost = "a 201 whose body is not JSON"
                except httpx.TransportError as exc:  # timeouts included
                    lost = f"{type(exc).__name__}: {exc}"
                except ApiError as exc:
                    if exc.status < 500:
                        refused = exc
                    else:
                        lost = str(exc)
                if info is not None and not (isinstance(info, dict) and info.get("id")):
                    info, lost = None, "a 201 without a pod id"
            if lost:
                self._uncertain_until = max(self._uncertain_until, sent_at + self.settings.reconcile_s)
            if info is not None:
                self._known.add(info["id"])
                if caught.received:  # make it known before stopping: terminate deletes it
                    self.ctx.state.pod = asdict(self._pod(info, gpu, cloud))
                    self.ctx.save()
            caught.raise_if_any()
            if refused is None:
                return info, lost
            if refused.status != 429:
                raise refused
            wait = refused.retry_after if refused.retry_after is not None else min(2.0 ** tries, 30.0)
            if time.monotonic() + wait > give_up:
                raise ProviderError(f"RunPod kept rate-limiting the create for {self.settings.api_retry_s:.0f}s "
                                    f"(429; it asked for {wait:.0f}s more)", "try again later") from refused
            logger.warning(f"RunPod rate-limited the create (429): nothing was created; sending it again in "
                           f"{wait:.0f}s")
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _named(self, name: str) -> list[dict]:
        return [p for p in self.api.list_pods() if p.get("name") == name and p.get("status") not in GONE]

    def _reconcile(self, name: str) -> dict | None:
        """The pod a lost create made, if any. The pod list is eventually consistent, so it is read until
        provider.reconcile_s after the last lost create before concluding that none was made."""
        while True:
            mine = self._named(name)
            if mine:
                for extra in mine[1:]:  # more than one with our unique name: keep one, never pay for two
                    logger.warning(f"deleting duplicate pod {extra['id']} named {name}")
                    self._delete(extra["id"])
                self._known.add(mine[0]["id"])
                return mine[0]
            left = self._uncertain_until - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(self.settings.poll_interval_s, left))

    def _pod(self, info: dict, gpu: dict, cloud: str) -> Pod:
        return Pod(id=info["id"], name=info.get("name") or self._spec.name, provider=self.name, gpu=gpu["id"],
                   cloud=cloud, price_per_hour=float(info.get("cost") or _pod_price(gpu)))

    # -- ready ----------------------------------------------------------------------------------------

    def wait_ready(self, pod: Pod) -> Endpoint:
        """RUNNING with a public TCP port 22. A pod whose host never publishes a public IP is deleted after
        provider.public_ip_timeout_s and replaced by the next candidate (recorded in state.json at once)."""
        while True:
            endpoint = self._wait_one(pod)
            if endpoint is not None:
                return endpoint
            pod = self._replace(pod)

    def _wait_one(self, pod: Pod) -> Endpoint | None:
        """The pod's SSH endpoint, or None when its host has shown no public IP for public_ip_timeout_s."""
        timeout_s, timeout_key = self.ready_timeout()
        deadline = time.monotonic() + timeout_s
        last, unreachable_since = None, None
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
            # The container runs (runtime reported) but port 22 has no public address: a host without a
            # public IP may never get one, and waiting ready_timeout_s for it only bills.
            if status == "RUNNING" and info.get("runtime"):
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since >= self.settings.public_ip_timeout_s:
                    return None
            else:
                unreachable_since = None
            time.sleep(self.settings.poll_interval_s)
        raise ProviderError(f"pod {pod.id} was not ready (RUNNING with a public TCP port 22) within "
                            f"{timeout_s:.0f}s ({timeout_key}; last status {last})\n{self._log_tail(pod)}",
                            f"the container log above says why; it will be deleted now (a big image may need a "
                            f"longer {timeout_key})")

    def ready_timeout(self) -> tuple[float, str]:
        """How long a pod may take to be ready, and the key that says so: the image's own (a 27 GB image pulls
        for many minutes), else the provider's."""
        if self.ctx.cfg.image.ready_timeout_s:
            return float(self.ctx.cfg.image.ready_timeout_s), "image.ready_timeout_s"
        return float(self.settings.ready_timeout_s), "provider.ready_timeout_s"

    def _replace(self, pod: Pod) -> Pod:
        waited = self.settings.public_ip_timeout_s
        logger.warning(f"pod {pod.id} ({pod.cloud}) has run {waited:.0f}s without a public IP for SSH "
                       "(provider.public_ip_timeout_s): deleting it and trying the next candidate")
        self._delete(pod.id)
        self._confirm_gone([pod.id])
        for row in self._attempts:
            if row.result == f"created {pod.id}":
                row.result = f"no public IP after {waited:.0f}s: deleted {pod.id}"
        if not self._queue:
            self._show_attempts()
            raise ProviderError(f"pod {pod.id} never got a public IP, and no other GPU option or cloud is left",
                                "SECURE cloud hosts have public IPs: add SECURE to provider.cloud_order, or "
                                "gpu.fallbacks")
        new = self._create_next()
        self.ctx.state.pod = asdict(new)  # on disk at once: a crash from here on still knows what to delete
        self.ctx.save()
        logger.info(f"pod {new.id} created ({new.gpu}, {new.cloud}) in place of {pod.id}")
        return new

    def _ssh_endpoint(self, info: dict) -> Endpoint | None:
        direct = (info.get("ssh") or {}).get("direct")
        if direct and direct.get("host") and direct.get("port"):
            host, port, user = direct["host"], int(direct["port"]), direct.get("username") or "root"
        else:
            ports = ((info.get("runtime") or {}).get("ports")) or []
            # `ip` may be null (a host without a public IP): such a mapping reaches nothing
            tcp22 = [p for p in ports if p.get("private") == 22 and p.get("type") == "tcp" and p.get("public")
                     and p.get("ip")]
            if not tcp22:
                return None  # RUNNING alone is not ready: no public TCP mapping of 22 yet
            host, port, user = tcp22[0]["ip"], int(tcp22[0]["public"]), "root"
        key_path, _ = run_keypair(self.ctx.run_dir / "ssh", self.ctx.pod_name)
        host_keys, missing = self._announced_host_keys(info["id"]) if self.ctx.cfg.image.logs_host_keys else ([], None)
        return Endpoint(kind="ssh", host=host, port=port, user=user, key_path=str(key_path), host_keys=host_keys,
                        host_keys_missing=missing)

    def _announced_host_keys(self, pod_id: str) -> tuple[list[str], str | None]:
        """(the host keys the pod's log names, None), or ([], why none were found). A pod is ready once its port
        is mapped, which can be before its start script has printed them (RunPod's prints them after starting
        sshd), so the log is read again for up to HOST_KEY_WAIT_S before falling back to pinning at first contact.
        That fallback is said as a warning and recorded (run-summary.json's host_key): the image was expected
        to name its keys (image.logs_host_keys), so the first key that answers is trusted without that check."""
        give_up = time.monotonic() + HOST_KEY_WAIT_S
        while True:
            try:
                found = announced(self.api.logs(pod_id))
            except ProviderError as exc:
                why = f"the pod's log could not be read ({exc})"
                break
            if found:
                return found, None
            if time.monotonic() >= give_up:
                why = f"the pod's log named no host key within {HOST_KEY_WAIT_S:.0f}s"
                break
            time.sleep(min(2.0, self.settings.poll_interval_s))
        logger.warning(f"expected the image to name its SSH host keys in the pod's log (image.logs_host_keys) but "
                       f"found none: {why}; pinning at first contact instead, so the first key that answers is "
                       "trusted unchecked")
        return [], why

    def _log_tail(self, pod: Pod, lines: int = 40) -> str:
        try:
            log = self.api.logs(pod.id, tail=lines)
        except ProviderError as exc:
            return f"(its container log could not be read: {exc.message})"
        return "container log:\n    " + "\n    ".join(log[-lines:]) if log else "(its container log is empty)"

    def after_connect(self, ctx: RunContext) -> None:
        """Arm the pod's own deadline as soon as we can reach it (see engine.deadline). The heartbeat starts
        first: a watchdog that is not armed still stops the run only after we said so, never a live pod."""
        from engine.deadline import Heartbeat, start_watchdog

        ctx.closers.append(Heartbeat(ctx).start().stop)
        start_watchdog(ctx)

    # -- terminate ---------------------------------------------------------------------------------------

    def terminate(self, pod: Pod, confirm_s: float = 60.0) -> None:
        """Delete the pod, then every other pod named like it: a duplicate from a create whose answer was
        lost is this run's too."""
        self._delete(pod.id)
        self._confirm_gone([pod.id], confirm_s)
        self.terminate_named(pod.name, confirm_s)

    def terminate_named(self, name: str, confirm_s: float = 60.0) -> list[str]:
        """Delete every pod named `name` (the run's unique name) and every pod a create of ours answered
        with; returns the ids deleted here. While a lost create's pod may still be missing from the
        eventually consistent list (provider.reconcile_s after it), the list is read again."""
        deleted = sorted(self._known - self._deleted)
        for pod_id in deleted:
            self._delete(pod_id)
        left = self._uncertain_until - time.monotonic()
        if left > 0:
            logger.warning(f"a create's answer was lost: watching the pod list {left:.0f}s more for a pod named "
                           f"{name} (provider.reconcile_s)")
        while True:
            for info in self._named(name):
                if info["id"] not in self._deleted:
                    logger.warning(f"deleting pod {info['id']}, also named {name}")
                    self._delete(info["id"])
                    deleted.append(info["id"])
            left = self._uncertain_until - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(self.settings.poll_interval_s, left))
        self._confirm_gone(deleted, confirm_s)
        return deleted

    def _delete(self, pod_id: str) -> None:
        self.api.delete_pod(pod_id)
        self._deleted.add(pod_id)

    def _confirm_gone(self, pod_ids: list[str], confirm_s: float = 60.0) -> None:
        deadline = time.monotonic() + confirm_s
        for pod_id in pod_ids:
            while True:
                info = self.api.get_pod(pod_id)
                if info is None or info.get("status") in GONE:
                    break
                if time.monotonic() >= deadline:
                    raise ProviderError(f"pod {pod_id} still reports {info.get('status')} {confirm_s:.0f}s "
                                        "after DELETE")
                time.sleep(min(2.0, self.settings.poll_interval_s))

    def is_alive(self, pod: Pod) -> bool:
        """Whether the pod still runs (a stopped one does not, though it exists): train's test of a lost pod."""
        return self.pod_status(pod) not in (None, "EXITED", "ERROR")

    def pod_status(self, pod: Pod) -> str | None:
        """The pod's status; None when it is gone (404 or TERMINATED). EXITED and ERROR pods still exist and
        bill for their disk (runpod-openapi-v2.json, pod actions): only a delete ends them."""
        info = self.api.get_pod(pod.id)
        return None if info is None or info.get("status") in GONE else info.get("status")

    def manual_terminate_hint(self, pod: Pod | None) -> str:
        if pod is None:  # a create was sent but no pod recorded: reap finds it by the run's name
            return f"python -m engine.reap --runs-dir {self.ctx.run_dir} --yes{self._reap_flags()}"
        # This one pod, by id: reap deletes an unclaimed pod only when named, and never guesses.
        return (f"python -m engine.reap --pod {pod.id} --yes{self._reap_flags()}   or   curl -X DELETE "
                f"{self.settings.api_url}/pods/{pod.id} -H \"Authorization: Bearer ${self.settings.api_key_env}\"")

    def _reap_flags(self) -> str:
        where = "" if self.settings.api_url == DEFAULT_API_URL else f" --api-url {self.settings.api_url}"
        key = "" if self.settings.api_key_env == "RUNPOD_API_KEY" else f" --api-key-env {self.settings.api_key_env}"
        return where + key

    def billed_usd(self, pod: Pod, since: float, retry_for_s: float = 10.0) -> Bill | None:
        """What RunPod's billing says this pod has cost so far (USD), summed over hourly buckets from an hour
        before `since` (our create: RunPod's clock may differ from ours) to now, with the end of its latest
        bucket; None when no record names the pod yet (billing lags: shared/reference/runpod.md). One read,
        retried on 5xx/429 for retry_for_s."""
        start = _rfc3339(since - 3600)
        end = _rfc3339(time.time() + 1)  # exclusive, snapped up to the end of the current hour by RunPod
        records = [r for r in self.api.pod_billing(pod.id, start, end, "hour", retry_for_s=retry_for_s)
                   if isinstance(r.get("totalAmount"), (int, float)) and not isinstance(r.get("totalAmount"), bool)]
        if not records:
            return None
        ends = [t for t in (_epoch(r.get("endTime")) for r in records) if t is not None]
        return Bill(amount_usd=round(sum(float(r["totalAmount"]) for r in records), 6),
                    covered_until=max(ends) if ends else None)

    def list_owned(self) -> list[Pod]:
        return [Pod(id=p["id"], name=p["name"], provider=self.name, gpu=(p.get("gpu") or {}).get("id"),
                    cloud=p.get("cloud"), price_per_hour=float(p.get("cost") or 0))
                for p in self.api.list_pods() if str(p.get("name", "")).startswith("lorapod-")
                and p.get("status") not in GONE]


@dataclass
class Attempt:
    """One row of the attempts table: a (gpu, cloud) candidate and what became of it."""

    gpu: str
    cloud: str
    result: str
    detail: str = ""  # RunPod's words, shown when every candidate failed


def _epoch(text) -> float | None:
    """An RFC 3339 time from RunPod as epoch seconds; None when it is not one."""
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _rfc3339(wall: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _count(gpu: dict) -> int:
    return max(1, gpu.get("count") or 1)


def _table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows + [("gpu", "cloud", "result")]) for i in range(3)]
    line = "  {:<%d}  {:<%d}  {}" % (widths[0], widths[1])
    return "\n".join([line.format("gpu", "cloud", "result")] + [line.format(*r) for r in rows])

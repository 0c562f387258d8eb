"""The RunPod REST v2 emulator's HTTP side: routes, auth, fault injection, catalog, request log and validation.
The package docstring (tests/emulator/__init__.py) is the user's guide."""
from __future__ import annotations

import json
import re
import secrets
import select
import shutil
import socket
import string
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from tests import sshd
from tests.emulator import billing, graphql, openapi
from tests.emulator.keys import DEFAULT_POD_KEY, ExtraKey, check_mode, graphql_allows, pod_key_rest_allows
from tests.emulator.pod import IMAGES, WAIT_S, EmulatedPod, container_preflight, image_kind, random_id

CAPACITY_DETAIL = ("There are no longer any instances available with the requested specifications. "
                   "Please refresh and try again.")
# Capacity has no machine-readable code and its text varies (the document's createPod description: "capacity
# exhaustion currently carries no machine-readable code of its own — only a human-readable `detail`"). The first
# is the text seen in the wild (shared/reference/runpod.md); the second is the v1 era's (issue 9). The emulator
# answers them in turn, so a client that recognises capacity by its wording fails.
CAPACITY_DETAILS = (CAPACITY_DETAIL, "There are no instances currently available")
# 403 on create: "Your account cannot access the requested pool. Skip this candidate, keep going." (the
# document's createPod description, status table).
POOL_FORBIDDEN_DETAIL = "Your account cannot access the requested pool"
DEFAULT_API_KEY = "rpa" + "_EMULATOR0ACCOUNT0KEY0FOR0TESTS0ONLY"  # split: no key-shaped literal in the repo
TITLES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests",
          500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
          504: "Gateway Timeout"}


# ---------------------------------------------------------------------------------------------- catalog

DATA_CENTERS = {"US-KS-2": "US Kansas 2", "EU-RO-1": "EU Romania 1", "CA-MTL-1": "CA Montreal 1"}


@dataclass
class GpuOffer:
    """One GPU type of the catalog (GET /v2/catalog/gpus); prices are per GPU and hour."""

    id: str
    name: str
    memory: int
    secure_price: float
    community_price: float
    pool: Optional[str] = None
    max_secure: int = 8
    max_community: int = 8
    secure: bool = True
    community: bool = True
    availability: str = "HIGH"  # what include=AVAILABILITY reports; stock never predicts a create
    data_centers: tuple[str, ...] = ("US-KS-2", "EU-RO-1")
    cuda_versions: tuple[str, ...] = ("12.4", "12.6", "12.8")

    def price(self, cloud: str) -> float:
        return self.community_price if cloud == "COMMUNITY" else self.secure_price

    def max_count(self, cloud: str) -> int:
        return self.max_community if cloud == "COMMUNITY" else self.max_secure

    def offered_on(self, cloud: str) -> bool:
        return self.community if cloud == "COMMUNITY" else self.secure

    def to_json(self, availability: bool) -> dict:
        body = {
            "id": self.id, "name": self.name, "pool": self.pool, "manufacturer": "NVIDIA", "memory": self.memory,
            "secure": self.secure, "community": self.community,
            "price": {"secure": self.secure_price, "community": self.community_price},
            "maxCount": {"secure": self.max_secure, "community": self.max_community},
        }
        if availability:
            body["availability"] = self.availability
            if self.availability != "NONE":
                body["dataCenters"] = [{"id": dc, "name": DATA_CENTERS.get(dc, dc), "availability": self.availability}
                                       for dc in self.data_centers]
            body["cudaVersions"] = [{"version": v, "available": self.availability != "NONE"}
                                    for v in self.cuda_versions]
        return body


def default_catalog() -> list[GpuOffer]:
    blackwell = ("12.8", "12.9")
    return [
        GpuOffer("NVIDIA GeForce RTX 5090", "RTX 5090", 32, 0.94, 0.74, "BLACKWELL_32", cuda_versions=blackwell),
        GpuOffer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.59, 0.34, "ADA_24"),
        GpuOffer("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 1.19, "AMPERE_80"),
        GpuOffer("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, 1.74, 1.39, "AMPERE_80"),
        GpuOffer("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99, 2.69, "HOPPER_141"),
        GpuOffer("NVIDIA H100 PCIe", "H100 PCIe", 80, 2.39, 1.99, "HOPPER_141"),
        GpuOffer("NVIDIA H100 NVL", "H100 NVL", 94, 2.79, 2.59),
        GpuOffer("NVIDIA H200", "H200", 141, 3.99, 3.59, "HOPPER_141", community=False),
    ]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


# ---------------------------------------------------------------------------------------------- faults

GRAPHQL_PATH = "/graphql"  # RunPod's legacy GraphQL endpoint, beside /v2 (https://api.runpod.io/graphql)

# The document's RateLimit-Policy example: one member per window, each with its quota q and length w seconds.
RATE_WINDOWS = {"minute": (60, 60), "hour": (3000, 3600), "day": (50000, 86400)}

@dataclass
class FaultRule:
    """Answer `status` to the next `remaining` requests that match (None: any method / any path template)."""

    status: int
    remaining: int
    methods: Optional[frozenset[str]] = None
    paths: Optional[frozenset[str]] = None
    retry_after_s: Optional[int] = None
    detail: str = ""
    window: str = "minute"  # the rate-limit window a 429 is for: minute, hour or day

    def matches(self, method: str, template: str) -> bool:
        # A rule without `paths` is the whole API's: GraphQL (POST /graphql) too. An outage or an account's
        # 429 does not spare the legacy endpoint beside /v2 (sources are silent: the harsher reading; a
        # GraphQL route that stays healthy while REST is down would be kinder than RunPod). A rule that names
        # paths reaches GraphQL only when they include GRAPHQL_PATH.
        return (self.remaining > 0 and (self.methods is None or method in self.methods)
                and (self.paths is None or template in self.paths))

    def headers(self) -> dict[str, str]:
        """A 429's Retry-After and the document's RateLimit headers for its window; none for a 5xx."""
        if self.retry_after_s is None:
            return {}
        quota, length = RATE_WINDOWS[self.window]
        return {"Retry-After": str(self.retry_after_s),
                "RateLimit": f'"{self.window}";r=0;t={self.retry_after_s}',
                "RateLimit-Policy": f'"{self.window}";q={quota};w={length}'}


@dataclass
class Faults:
    """What the emulator gets wrong on purpose. Attributes are read when a request (or a pod) needs them, so a
    test may change them at any time; counts go down as faults are served.

    capacity               {(gpu id, cloud)}: creates answer 400 with a capacity text (also `start` actions):
                           capacity_details[(gpu id, cloud)] if set, else CAPACITY_DETAILS in turn
    forbidden_pools        {(gpu id, cloud)}: creates answer 403 (this account cannot use that pool)
    create_500_after_create
                           the next N creates answer 500 *after* creating the pod (it exists and bills)
    create_delay_s         a create answers (201) only after this many seconds: longer than a client's timeout
    insufficient_balance   creates answer 402
    never_ready            pods created while set stay RUNNING with runtime and ssh.direct null; logs say why
    refuse_ssh_for_s       pods created while set refuse SSH connections for this long after becoming ready
    no_public_ip           the next N pods land on hosts without a public IP: RUNNING, runtime set, but port 22's
                           mapping has ip null and ssh.direct stays null, forever
    list_lag_s             a new pod shows in GET /v2/pods only this long after its create (eventual consistency;
                           2 s by default: the sources are silent, so the harsher reading)
    billing_lag_s          a second of a pod's life shows in GET /v2/billing/pods only this long after it happened
                           (runpod.md: billing "lags"; how long is not said: 2 s by default, tests set more)
    billing_step_s         > 0: billing publishes in batches: a pod's life shows only in whole steps of this many
                           seconds (counted from when it began billing), each billing_lag_s after the step ended,
                           and the rest only billing_step_s + billing_lag_s after the pod stopped billing; so a
                           bill stands still, partial, for at least billing_step_s after the delete (runpod.md
                           says only that billing lags, not how it catches up: batches are the harsher reading).
                           0: second by second
    create_garbled         the next N creates make the pod, then answer 201 with an HTML page instead of the Pod
                           (issue 9 names "a non-JSON 201" as a lost answer; off the document on purpose)
    rules                  FaultRule list, filled by rate_limit(), read_errors() and server_errors(); a rule
                           without `paths` hits every path, POST /graphql included (FaultRule.matches)
    """

    capacity: set = field(default_factory=set)
    capacity_details: dict = field(default_factory=dict)
    forbidden_pools: set = field(default_factory=set)
    no_public_ip: int = 0
    list_lag_s: float = 2.0
    billing_lag_s: float = 2.0
    billing_step_s: float = 0.0
    create_garbled: int = 0
    create_500_after_create: int = 0
    create_delay_s: float = 0.0
    insufficient_balance: bool = False
    never_ready: bool = False
    refuse_ssh_for_s: float = 0.0
    rules: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    _capacity_answers: int = field(default=0, repr=False)

    def no_capacity(self, gpu_id: str, clouds: Iterable[str] = ("SECURE", "COMMUNITY"),
                    detail: Optional[str] = None) -> None:
        """Creates of `gpu_id` on these clouds fail with a capacity error (until capacity.discard()): `detail`,
        or else each of CAPACITY_DETAILS in turn."""
        for cloud in clouds:
            self.capacity.add((gpu_id, cloud))
            if detail is not None:
                self.capacity_details[(gpu_id, cloud)] = detail

    def capacity_detail(self, pair: tuple[str, str]) -> str:
        with self._lock:
            if pair in self.capacity_details:
                return self.capacity_details[pair]
            self._capacity_answers += 1
            return CAPACITY_DETAILS[(self._capacity_answers - 1) % len(CAPACITY_DETAILS)]

    def forbid_pool(self, gpu_id: str, clouds: Iterable[str] = ("SECURE", "COMMUNITY")) -> None:
        """Creates of `gpu_id` on these clouds answer 403: this account cannot use that pool."""
        self.forbidden_pools.update((gpu_id, cloud) for cloud in clouds)

    def take_create_garbled(self) -> bool:
        return self._take("create_garbled")

    def take_no_public_ip(self) -> bool:
        return self._take("no_public_ip")

    def rate_limit(self, count: int, retry_after_s: int = 1, methods: Optional[Iterable[str]] = None,
                   paths: Optional[Iterable[str]] = None, window: str = "minute") -> FaultRule:
        """429 with `Retry-After: retry_after_s` for the next `count` matching requests. `paths` are the
        document's path templates, e.g. "/v2/pods/{id}", or GRAPHQL_PATH; None: every path, GraphQL too.
        `window` is the quota exceeded: minute, hour or day (the document's RateLimit header lists those
        three; a day window's Retry-After can be hours)."""
        if window not in RATE_WINDOWS:
            raise ValueError(f"a rate-limit window is one of {', '.join(RATE_WINDOWS)}, not {window!r}")
        return self._add(FaultRule(429, count, _set(methods), _set(paths), int(retry_after_s),
                                   f"rate limit exceeded for the {window} window", window))

    def read_errors(self, count: int, status: int = 503, paths: Optional[Iterable[str]] = None) -> FaultRule:
        """`status` (500, 502, 503, 504) for the next `count` GET requests."""
        return self.server_errors(count, status, methods=("GET",), paths=paths)

    def server_errors(self, count: int, status: int = 500, methods: Optional[Iterable[str]] = None,
                      paths: Optional[Iterable[str]] = None) -> FaultRule:
        if not 500 <= status <= 599:
            raise ValueError(f"a server error is 5xx, not {status}")
        return self._add(FaultRule(status, count, _set(methods), _set(paths), None,
                                   "upstream request failed (injected by the emulator)"))

    def _take(self, counter: str) -> bool:
        """Uses up one of a "the next N requests" fault: whether this request gets it."""
        with self._lock:
            if getattr(self, counter) > 0:
                setattr(self, counter, int(getattr(self, counter)) - 1)
                return True
        return False

    def _add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def take(self, method: str, template: str) -> Optional[FaultRule]:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, template):
                    rule.remaining -= 1
                    return rule
        return None

    def take_create_500(self) -> bool:
        return self._take("create_500_after_create")


def _set(values: Optional[Iterable[str]]) -> Optional[frozenset[str]]:
    if values is None:
        return None
    return frozenset([values] if isinstance(values, str) else values)


# ---------------------------------------------------------------------------------------------- records

@dataclass
class RequestRecord:
    """One request as the emulator answered it. `key` is which key authenticated it: "account", "pod" (a
    pod-scoped key; `key_pod` says whose), "extra" (one from add_key()), "invalid" or "none". GraphQL requests
    are recorded too, with template "/graphql"."""

    method: str
    path: str  # as requested, query included
    template: Optional[str]  # the document's path template, None for a path it does not have
    key: str
    key_pod: Optional[str] = None
    status: int = 0
    body: Any = None  # the request's JSON body, decoded
    response: Any = None  # the response's JSON body (or SSE text), decoded
    fault: Optional[str] = None  # the injected fault that answered, if any
    extra: Optional[ExtraKey] = field(default=None, repr=False)


@dataclass
class CutTrigger:
    """A pending cut_connections_when(): `fired` is set once the condition held and the cut was made."""

    pod_id: str
    condition: Callable[[], bool]
    mode: str
    fired: threading.Event = field(default_factory=threading.Event)
    cut: int = 0  # connections cut when it fired


@dataclass
class _Response:
    status: int
    body: Any = None  # JSON value, or str for text/event-stream, or None
    content_type: Optional[str] = None
    headers: dict = field(default_factory=dict)
    fault: Optional[str] = None
    after: Optional[Callable[[], None]] = None  # runs after the response is sent
    # A response that does not end: `body` is sent first, then stream(write) sends more until it returns.
    stream: Optional[Callable[[Callable[[str], None]], None]] = None
    off_document: bool = False  # a fault that breaks the document on purpose: not a violation


def problem(status: int, detail: str, errors: Optional[list[str]] = None, **kw) -> _Response:
    body = {"title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return _Response(status, body, "application/problem+json", **kw)


def _templates() -> list[tuple[str, list[str]]]:
    """The document's path templates, literal ones first (/v2/registries/delegations before .../{id})."""
    found = [(t, t.strip("/").split("/")) for t in openapi.spec()["paths"]]
    return sorted(found, key=lambda item: sum(part.startswith("{") for part in item[1]))


def match_template(path: str) -> tuple[Optional[str], dict[str, str]]:
    parts = [unquote(part) for part in path.strip("/").split("/")]
    for template, pattern in _templates():
        if len(pattern) == len(parts) and all(p.startswith("{") or p == part for p, part in zip(pattern, parts)):
            return template, {p[1:-1]: part for p, part in zip(pattern, parts) if p.startswith("{")}
    return None, {}


# ---------------------------------------------------------------------------------------------- the emulator

class RunPodEmulator:
    """RunPod's REST v2 API on 127.0.0.1, each pod a real sshd. See the package docstring."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, provisioning_s: float = 0.1, starting_s: float = 0.1,
                 ports_after_running_s: float = 0.3, validate: bool = True,
                 catalog: Optional[list[GpuOffer]] = None, root: Optional[Path] = None,
                 scanner_interval_s: Optional[float] = 1.0, page_size: Optional[int] = None,
                 pod_key: str = DEFAULT_POD_KEY, entrypoints: Optional[dict[str, str]] = None):
        self.api_key = api_key
        self.provisioning_s = provisioning_s
        self.starting_s = starting_s
        self.ports_after_running_s = ports_after_running_s
        self.validate = validate
        self.pod_key = pod_key  # what a pod's own key may do: keys.py (read at each request)
        # image reference -> "lorapod" | "runpod" | "sshd-pid1": forces the entrypoint that stands for it (read at
        # each create)
        self.entrypoints: dict[str, str] = dict(entrypoints or {})
        self.catalog = catalog if catalog is not None else default_catalog()
        self.scanner_interval_s = scanner_interval_s  # read at each create: ready pods' sshd logs a scanner
        self.page_size = page_size  # None: lists are one page (the document); n: pages of n (see _page)
        self._cursors: dict[str, int] = {}
        self.faults = Faults()
        self.pods: dict[str, EmulatedPod] = {}
        self.requests: list[RequestRecord] = []
        self.violations: list[str] = []  # responses the OpenAPI document does not allow (validate=True)
        self.errors: list[str] = []  # the emulator's own failures (a bug, or a pod that could not boot)
        self.extra_keys: dict[str, ExtraKey] = {}
        self._listed_from: dict[str, float] = {}  # pod id -> when GET /v2/pods starts showing it
        self._root_given = root
        self.root: Optional[Path] = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._threads: list[threading.Thread] = []
        self._triggers: list[CutTrigger] = []
        self.url = ""
        self.graphql_url = ""

    @property
    def pod_key(self) -> str:
        return self._pod_key

    @pod_key.setter
    def pod_key(self, mode: str) -> None:
        self._pod_key = check_mode(mode)

    # ---- start / stop
    def start(self) -> "RunPodEmulator":
        sshd.preflight()  # each pod is an sshd: fail now, in sshd's words, not after a client's ready timeout
        container_preflight()  # and a PID namespace: the same
        openapi.spec()  # fail now, not on the first request, when the document is missing
        if self._root_given is not None:
            self.root = Path(self._root_given)
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:  # sshd's StrictModes refuses authorized_keys below a world-writable folder such as /tmp
            self.root = Path(tempfile.mkdtemp(prefix="lorapod-emulator-", dir=Path.home()))
        self.root.chmod(0o700)
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v2"
        self.graphql_url = f"http://127.0.0.1:{self.port}{GRAPHQL_PATH}"
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731 - a quick shutdown()
        for target, name in ((serve, "emulator-http"), (self._tick_forever, "emulator-tick")):
            thread = threading.Thread(target=target, daemon=True, name=name)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stops the server and kills every pod's processes. Pods keep their status, so live_pods() still tells
        what a client left running. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(WAIT_S)
        with self._lock:
            pods = list(self.pods.values())
        for pod in pods:
            if pod.proxy is not None:
                pod.proxy.close()
            pod.kill_processes()
        if self.root is not None and self._root_given is None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "RunPodEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- for tests
    def pod(self, pod_id: str) -> EmulatedPod:
        with self._lock:
            return self.pods[pod_id]

    def live_pods(self) -> list[EmulatedPod]:
        """Pods not TERMINATED (whatever their status: a stopped pod still holds its disk and a reservation)."""
        with self._lock:
            return [pod for pod in self.pods.values() if pod.status != "TERMINATED"]

    def pods_named(self, name: str) -> list[EmulatedPod]:
        with self._lock:
            return [pod for pod in self.pods.values() if pod.name == name]

    def wait_ready(self, pod_id: str, timeout: float = WAIT_S) -> EmulatedPod:
        """Blocks until the pod publishes its SSH port (runtime and ssh.direct set); AssertionError otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pod = self.pod(pod_id)
            if pod.ready:
                return pod
            if pod.status == "TERMINATED":
                break
            time.sleep(0.02)
        pod = self.pod(pod_id)
        raise AssertionError(f"pod {pod_id} is {pod.status}, not ready; log:\n{pod.log.text()}")

    def cut_connections(self, pod_id: str, mode: str = "reset") -> int:
        """Cuts every live SSH connection to the pod now (see TcpProxy.cut for the modes); returns how many."""
        proxy = self.pod(pod_id).proxy
        return proxy.cut(mode) if proxy is not None else 0

    def cut_connections_when(self, pod_id: str, condition: Callable[[], bool], mode: str = "reset") -> CutTrigger:
        """Cuts the pod's SSH connections once, as soon as `condition()` returns true (checked every 20 ms
        from the emulator's own thread). An OSError in it (a file not written yet) means "not yet"; any other
        exception is recorded in `errors` and disarms it."""
        trigger = CutTrigger(pod_id, condition, mode)
        with self._lock:
            self._triggers.append(trigger)
        return trigger

    def terminate(self, pod_id: str) -> None:
        """Terminates a pod as RunPod's console would, behind the client's back (its processes die too)."""
        with self._lock:
            pod = self.pods[pod_id]
            if pod.status == "TERMINATED":
                return
            pod.terminate()
        pod.kill_processes()

    def add_key(self, key: str, methods: Iterable[str] = ("GET",), graphql: bool = False) -> None:
        """Another valid API key of the account, allowed only the REST `methods` (403 for the others; a read-only
        key by default) and GraphQL only when `graphql` (else its GraphQL requests get errors)."""
        self.extra_keys[key] = ExtraKey(frozenset(methods), graphql)

    def assert_clean(self) -> None:
        """AssertionError if a response broke the OpenAPI document or the emulator failed."""
        problems = self.violations + self.errors
        assert not problems, "RunPod emulator:\n" + "\n".join(problems)

    # ---- lifecycle thread
    def _tick_forever(self) -> None:
        while not self._stopping.wait(0.02):
            boots = []
            with self._lock:
                for pod in self.pods.values():
                    if pod.status in ("PROVISIONING", "STARTING", "RUNNING"):
                        boot = pod.tick()
                        if boot is not None:
                            boots.append((pod, boot))
                    machine = pod.machine
                    if machine is not None and machine.failed and not pod.failure_reported:
                        pod.failure_reported = True
                        self.errors.append(f"pod {pod.id}: {machine.failed}\n{pod.log.text()}")
                triggers = [t for t in self._triggers if not t.fired.is_set()]
            for pod, boot in boots:
                self._background(boot, f"emulator-boot-{pod.id}")
            for trigger in triggers:
                try:
                    due = trigger.condition()
                except OSError:
                    continue
                except Exception:  # noqa: BLE001
                    self.errors.append(f"cut_connections_when({trigger.pod_id}) condition failed:\n"
                                       + traceback.format_exc())
                    trigger.fired.set()
                    continue
                if due:
                    trigger.cut = self.cut_connections(trigger.pod_id, trigger.mode)
                    trigger.fired.set()

    def _background(self, target: Callable[[], None], name: str) -> None:
        threading.Thread(target=target, daemon=True, name=name).start()

    # ---- HTTP
    def _dispatch(self, handler: "_Handler") -> None:
        split = urlsplit(handler.path)
        method = handler.command
        template, params = match_template(split.path)
        raw = _read_body(handler)
        record = RequestRecord(method, handler.path, template, "none")
        try:
            record.body = json.loads(raw) if raw else None
        except ValueError:
            record.body = raw.decode(errors="replace")
        try:
            if split.path == GRAPHQL_PATH:
                record.template = GRAPHQL_PATH
                record.path = re.sub(r"(?<=[?&]api_key=)[^&]*", "***", record.path)  # keys are never kept
                response = self._graphql(handler, method, split, raw, record)
            else:
                response = self._answer(handler, method, split, template, params, raw, record)
        except Exception:  # noqa: BLE001 - the emulator's bug: a 500 the test will see in `errors`
            self.errors.append(f"{method} {handler.path}:\n{traceback.format_exc()}")
            response = problem(500, "emulator error: see RunPodEmulator.errors")
        record.status, record.response, record.fault = response.status, response.body, response.fault
        if self.validate and not response.off_document:
            self._check(method, template, response)
        with self._lock:
            self.requests.append(record)
        _send(handler, response)
        if response.after is not None:
            response.after()

    def _check(self, method: str, template: Optional[str], response: _Response) -> None:
        try:
            body = response.body
            if template is not None and method.lower() in openapi.spec()["paths"][template]:
                openapi.validate_response(method, template, response.status, body,
                                          content_type=response.content_type, headers=response.headers)
                if response.content_type == "text/event-stream":
                    openapi.validate_log_stream(body)
            else:  # a path or method the document does not have: still a problem+json
                problems = openapi.schema_errors({"$ref": "#/components/schemas/ErrorResponse"}, body)
                if problems or response.content_type != "application/problem+json":
                    raise openapi.OpenApiViolation(f"{method} {template}: {problems or response.content_type}")
        except openapi.OpenApiViolation as exc:
            self.violations.append(str(exc))

    def _check_stream(self, text: str) -> None:
        if self.validate:
            try:
                openapi.validate_log_stream(text)
            except openapi.OpenApiViolation as exc:
                self.violations.append(str(exc))

    def _authenticate(self, handler: "_Handler", record: RequestRecord) -> Optional[str]:
        """The key kind of a REST request (account, pod, extra; also in `record`), or None for a missing or
        unknown key. REST takes the key only as `Authorization: Bearer` (the document's security scheme)."""
        header = handler.headers.get("Authorization") or ""
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        record.key = "invalid"
        if scheme.lower() != "bearer":
            return None
        return self._key_kind(key.strip(), record)

    def _key_kind(self, key: str, record: RequestRecord) -> Optional[str]:
        """Which key this is (also in `record`); None, with record.key "invalid", for one nobody issued."""
        record.key = "invalid"
        if not key:
            return None
        if secrets.compare_digest(key, self.api_key):
            record.key = "account"
        elif key in self.extra_keys:
            record.key, record.extra = "extra", self.extra_keys[key]
        else:
            with self._lock:
                owner = next((pod for pod in self.pods.values() if secrets.compare_digest(pod.key, key)), None)
            if owner is None:
                return None
            record.key, record.key_pod = "pod", owner.id
        return record.key

    def _answer(self, handler, method, split, template, params, raw, record) -> _Response:
        kind = self._authenticate(handler, record)
        if kind is None:
            detail = "missing bearer token" if record.key == "none" else "invalid api key"
            return problem(401, detail)
        if kind == "pod" and not pod_key_rest_allows(self.pod_key, method, template, params.get("id"), raw,
                                                     record.key_pod):
            return problem(403, "access denied: this pod-scoped API key may not make this request")
        if kind == "extra" and method not in record.extra.methods:
            return problem(403, f"access denied: this API key may not {method}")
        rule = self.faults.take(method, template or split.path)
        if rule is not None:
            return problem(rule.status, rule.detail, headers=rule.headers(), fault=f"rule {rule.status}")
        if template is None:
            return problem(404, f"no route for {split.path}")
        operations = openapi.spec()["paths"][template]
        if method.lower() not in operations:
            allowed = ", ".join(m.upper() for m in operations if m in ("get", "post", "put", "patch", "delete"))
            return problem(405, "The requested method is not allowed for this path.", headers={"Allow": allowed})
        route = ROUTES.get((method, template))
        if route is None:
            return problem(501, f"the RunPod emulator does not emulate {method} {template}")
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        return route(self, handler=handler, params=params, query=query, raw=raw)

    def _graphql(self, handler, method, split, raw, record) -> _Response:
        """POST /graphql: RunPod's legacy GraphQL API, the two operations graphql.py recognises. The key comes as
        the `api_key` query parameter (RunPod's GraphQL docs) or `Authorization: Bearer` (public scripts).
        Not in the OpenAPI document, so never validated against it; its answers are JSON all the same.
        GraphQL's convention: a refusal or a request it cannot answer is HTTP 200 with `errors` (and
        `data: null`); only a missing or unknown key is an HTTP error, 401."""
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        if "api_key" in query:
            kind = self._key_kind(query["api_key"].strip(), record)
        else:
            kind = self._authenticate(handler, record)
        if kind is None:
            return _graphql_errors("missing api key" if record.key == "none" else "invalid api key", 401)
        rule = self.faults.take(method, GRAPHQL_PATH)
        if rule is not None:
            return _graphql_errors(rule.detail, rule.status, headers=rule.headers(), fault=f"rule {rule.status}")
        if method != "POST":
            return _graphql_errors("GraphQL requests to the RunPod emulator are POSTs", 405, headers={"Allow": "POST"})
        try:
            operation = graphql.parse(json.loads(raw or b"null"))
        except ValueError as exc:  # GraphQLError, or a body that is not JSON
            return _graphql_errors(str(exc) if isinstance(exc, graphql.GraphQLError) else "body is not JSON")
        if not graphql_allows(record.key, self.pod_key, record.extra, operation.pod_id, record.key_pod):
            return _graphql_errors(f"access denied: this API key may not run {operation.field} on pod "
                                   f"{operation.pod_id}")
        with self._lock:
            pod = self._find(operation.pod_id)
            if operation.field == "pod":  # null for a pod it does not know or that is gone
                shown = None if pod is None else {"id": pod.id, "name": pod.name,
                                                  "desiredStatus": DESIRED_STATUS.get(pod.status, "EXITED")}
                return _Response(200, {"data": {"pod": shown}}, "application/json", off_document=True)
            if pod is None:  # sources are silent: the harsher reading, an error, not a quiet success
                return _graphql_errors(f"pod {operation.pod_id} not found")
            pod.terminate()
        # The answer first, then the kill, as DELETE: a pod that terminates itself still hears the answer.
        return _Response(200, {"data": {"podTerminate": None}}, "application/json", after=pod.kill_processes,
                         off_document=True)

    # ---- routes
    def _find(self, pod_id: str) -> Optional[EmulatedPod]:
        pod = self.pods.get(pod_id)
        return pod if pod is not None and pod.status != "TERMINATED" else None

    def _not_found(self, pod_id: str) -> _Response:
        return problem(404, f"pod {pod_id} not found")

    def create_pod(self, raw: bytes, **_) -> _Response:
        body, refused = _request_body(raw, "CreatePodRequest")
        if refused is not None:
            return refused
        if ("gpu" in body) == ("cpu" in body):
            return problem(400, "exactly one of gpu or cpu must be set")
        if "cpu" in body:
            return problem(501, "the RunPod emulator does not emulate CPU pods")
        if "templateId" in body:
            return problem(404, f"template {body['templateId']} not found")
        gpu, cloud = body["gpu"], body.get("cloud", "SECURE")
        offer = next((o for o in self.catalog if o.id == gpu["id"]), None)
        if offer is None:
            return problem(400, f"unknown GPU type id {gpu['id']!r}; GET /v2/catalog/gpus lists the valid ids")
        allowed, floor = gpu.get("allowedCudaVersions") or [], gpu.get("minCudaVersion")
        if allowed and floor:
            return problem(400, "gpu.allowedCudaVersions and gpu.minCudaVersion are mutually exclusive")
        mounts = body.get("mounts") or {}
        if "persistent" in mounts and "network" in mounts:
            return problem(400, "mounts.persistent and mounts.network are mutually exclusive")
        # Network volumes exist only in SECURE cloud data centers (shared/reference/runpod.md: "Network volumes
        # are available only for SECURE cloud pods"). What RunPod answers is not documented; a 400 is the
        # document's "breaks a cross-field rule", and its text is not the capacity one.
        if mounts.get("network") and cloud == "COMMUNITY":
            return problem(400, "network volumes can only be attached to SECURE cloud pods")
        count = int(gpu.get("count", 1))
        if count > offer.max_count(cloud):
            return problem(400, f"gpu.count {count} exceeds {offer.max_count(cloud)} for {offer.id} on {cloud}")
        if self.faults.insufficient_balance:
            return problem(402, "Insufficient balance: add funds to create this pod", fault="insufficient_balance")
        cudas = [v for v in offer.cuda_versions
                 if (not allowed or v in allowed) and (not floor or _version(v) >= _version(floor))]
        centers = [dc for dc in offer.data_centers if not body.get("dataCenterIds") or dc in body["dataCenterIds"]]
        # 403 on create: the account cannot use that pool (the document's createPod status table).
        if (gpu["id"], cloud) in self.faults.forbidden_pools:
            return problem(403, POOL_FORBIDDEN_DETAIL, fault="forbidden_pool")
        # A GPU type the catalog says is not on this cloud (GpuType.secure/community false) cannot be placed
        # there. The document does not give the text; it is a 400 that is not the capacity sentence.
        if not offer.offered_on(cloud):
            return problem(400, f"GPU type {offer.id} is not offered on {cloud} cloud")
        if (gpu["id"], cloud) in self.faults.capacity:
            return problem(400, self.faults.capacity_detail((gpu["id"], cloud)), fault="capacity")
        if not cudas or not centers:
            return problem(400, self.faults.capacity_detail((gpu["id"], cloud)))
        kind = image_kind(body["image"], self.entrypoints)
        if kind not in IMAGES:
            raise ValueError(f"emu.entrypoints[{body['image']!r}] is {kind!r}, not one of {', '.join(IMAGES)}")
        pod_id = random_id()
        pod = EmulatedPod(
            id=pod_id, key="rpa_" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(44)),
            request=body, folder=self.root / pod_id, cost_per_hr=round(offer.price(cloud) * count, 4),
            data_center=centers[0], cuda_version=max(cudas, key=_version),
            provisioning_s=self.provisioning_s, starting_s=self.starting_s,
            ports_after_running_s=self.ports_after_running_s, never_ready=self.faults.never_ready,
            refuse_ssh_for_s=self.faults.refuse_ssh_for_s, scanner_interval_s=self.scanner_interval_s,
            public_ip=not self.faults.take_no_public_ip(), image_kind=kind,
        )
        pod.log.add(f"{body['image']}: Pulling from {body['image'].split(':')[0]}", "system")
        pod.log.add(f"Status: Downloaded newer image for {body['image']}", "system")
        with self._lock:
            self.pods[pod_id] = pod
            # The pod list is eventually consistent: a new pod may be missing from GET /v2/pods for a while
            # (sources are silent on how long; the harsher reading is "a few seconds": faults.list_lag_s).
            self._listed_from[pod_id] = time.monotonic() + self.faults.list_lag_s
        if self.faults.take_create_garbled():  # e.g. a proxy's page in between: the pod exists all the same
            return _Response(201, "<html><body>Created</body></html>", "text/html", fault="create_garbled",
                             off_document=True)
        if self.faults.take_create_500():
            return problem(500, "internal error while creating the pod", fault="create_500_after_create")
        if self.faults.create_delay_s > 0:
            self._stopping.wait(self.faults.create_delay_s)
            return _Response(201, pod.to_json(), "application/json", fault="create_delay")
        return _Response(201, pod.to_json(), "application/json")

    def _page(self, key: str, items: list, query: dict) -> _Response:
        """A list answer. With page_size set, lists come in pages: `pagination.nextCursor` while more remain,
        sent back as `cursor`. The document has no pagination yet; RunPod's MCP server (runpod/runpod-mcp,
        src/pagination.ts) shapes its lists as `limit`/`cursor` in, `pagination.nextCursor` out, "to match the
        cursor-based pagination the REST API will add" (`limit` is not emulated: the server picks the size).
        Harsher reading: a cursor is opaque (one this emulator never gave answers 400), and the last page
        carries no `pagination` at all."""
        start = 0
        if "cursor" in query:
            with self._lock:
                start = self._cursors.get(query["cursor"], -1)
            if start < 0:
                return problem(400, f"invalid pagination cursor {query['cursor']!r}")
        if self.page_size is None:
            return _Response(200, {key: items[start:]}, "application/json")
        page, end = items[start:start + self.page_size], start + self.page_size
        body: dict = {key: page}
        if end < len(items):
            cursor = secrets.token_urlsafe(12)
            with self._lock:
                self._cursors[cursor] = end
            body["pagination"] = {"nextCursor": cursor}
        return _Response(200, body, "application/json")

    def list_pods(self, query, **_) -> _Response:
        with self._lock:
            pods = [pod.to_json() for pod in self.pods.values() if pod.status != "TERMINATED" and self._listed(pod)]
        return self._page("pods", pods, query)

    def _listed(self, pod: EmulatedPod) -> bool:
        """Whether the eventually consistent pod list shows this pod yet (faults.list_lag_s)."""
        return time.monotonic() >= self._listed_from.get(pod.id, 0.0)

    def get_pod(self, params, **_) -> _Response:
        with self._lock:
            pod = self._find(params["id"])
            return _Response(200, pod.to_json(), "application/json") if pod else self._not_found(params["id"])

    def delete_pod(self, params, **_) -> _Response:
        with self._lock:
            pod = self._find(params["id"])
            if pod is None:
                return self._not_found(params["id"])
            pod.terminate()
        # The answer first, then the kill: a pod that deletes itself (the watchdog) still hears the 204.
        return _Response(204, after=pod.kill_processes)

    def pod_action(self, params, raw, **_) -> _Response:
        body, refused = _request_body(raw, "PodActionRequest")
        if refused is not None:
            return refused
        action = body["action"]
        with self._lock:
            pod = self._find(params["id"])
            if pod is None:
                return self._not_found(params["id"])
            if action not in pod.to_json()["actions"]:
                return problem(409, f"cannot {action} a pod that is {pod.status}")
            if action == "terminate":
                pod.terminate()
                return _Response(204, after=pod.kill_processes)
            if action == "stop":
                pod.stop()
                return _Response(200, pod.to_json(), "application/json", after=pod.kill_processes)
            if action == "start" and (pod.gpu["id"], pod.cloud) in self.faults.capacity:
                # the host's GPUs went to someone else
                return problem(400, self.faults.capacity_detail((pod.gpu["id"], pod.cloud)), fault="capacity")
            boot = pod.enter_starting() if action == "start" else pod.restart()
            answer = pod.to_json()

        def reboot() -> None:
            pod.kill_processes()
            if boot is not None:
                boot()

        return _Response(200, answer, "application/json", after=lambda: self._background(reboot, "emulator-reboot"))

    def pod_logs(self, handler, params, query, **_) -> _Response:
        source = query.get("source")
        if source is not None and source not in ("container", "system"):
            return problem(422, "Request validation failed.", errors=[f"source: {source!r} is not one of "
                                                                      "['container', 'system']"])
        try:
            tail = int(query.get("tail", 100))
        except ValueError:
            tail = -1
        if not 0 <= tail <= 5000:
            return problem(422, "Request validation failed.", errors=[f"tail: {query.get('tail')!r} is not an "
                                                                      "integer from 0 to 5000"])
        since = query.get("since")
        if since is not None and not openapi._is_date_time(since):
            return problem(422, "Request validation failed.", errors=[f"since: {since!r} is not a date-time"])
        with self._lock:
            pod = self._find(params["id"])
            if pod is None:
                return self._not_found(params["id"])
        seen = pod.log.last_seq()  # before the backlog is read: a line added meanwhile is sent twice, never lost
        lines = pod.log.select(tail=tail, since=since, last_event_id=handler.headers.get("Last-Event-ID"),
                               source=source)

        def events(entries) -> str:
            return "".join(f"id: {entry.event_id}\ndata: {json.dumps(entry.payload())}\n\n" for entry in entries
                           if source is None or entry.source == source)

        def follow(write: Callable[[str], None]) -> None:
            # A live tail, never a finished body. The document: "Streams pod logs as Server-Sent Events",
            # `Connection: keep-alive` "to hold the SSE stream open", tail=0 "to stream live with no backfill";
            # runpod.md: the backlog, then the connection stays open while lines keep coming. It ends only when
            # the client hangs up (or the emulator stops): not when the pod goes (sources silent; the harsher).
            nonlocal seen
            while not self._stopping.is_set() and not _hung_up(handler):
                new = [entry for entry in pod.log.after(seen, 0.1) if entry.seq > seen]
                if new:
                    seen = new[-1].seq
                    text = events(new)
                    if text:
                        self._check_stream(text)
                        write(text)

        return _Response(200, events(lines), "text/event-stream", stream=follow,
                         headers={"Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"})

    def pod_billing(self, query, **_) -> _Response:
        """listPodBilling, computed from the pods' billed spans (billing.py says what is emulated and why)."""
        with self._lock:
            pods = list(self.pods.values())
            try:
                body = billing.pod_records(pods, query, self.faults.billing_lag_s,
                                           step_s=self.faults.billing_step_s)
            except billing.BadQuery as exc:
                return problem(400, str(exc))
        return _Response(200, body, "application/json")

    def list_gpus(self, query, params=None, **_) -> _Response:
        include = query.get("include")
        product = query.get("product")
        for name, value, valid in (("include", include, {"AVAILABILITY"}),
                                   ("product", product, {"POD", "CLUSTER", "SERVERLESS"}),
                                   ("cloud", query.get("cloud"), {"SECURE", "COMMUNITY"})):
            if value is not None and not set(value.split(",")) <= valid:
                return problem(422, "Request validation failed.", errors=[f"{name}: {value!r} is not one of "
                                                                          f"{sorted(valid)}"])
        if (include is None) != (product is None):
            return problem(400, "include=AVAILABILITY requires product, and product is valid only with it")
        if include is None and any(k in query for k in ("count", "cloud", "countryCodes", "cudaVersions",
                                                         "minCudaVersion")):
            return problem(400, "count, cloud, countryCodes, cudaVersions and minCudaVersion are valid only "
                                "with include=AVAILABILITY")
        offers = self.catalog
        if params and "id" in params:
            offer = next((o for o in offers if o.id == params["id"]), None)
            if offer is None:
                return problem(404, f"GPU type {params['id']} not found")
            return _Response(200, offer.to_json(include is not None), "application/json")
        return self._page("gpus", [o.to_json(include is not None) for o in offers], query)


ROUTES: dict[tuple[str, str], Callable[..., _Response]] = {
    ("POST", "/v2/pods"): RunPodEmulator.create_pod,
    ("GET", "/v2/pods"): RunPodEmulator.list_pods,
    ("GET", "/v2/pods/{id}"): RunPodEmulator.get_pod,
    ("DELETE", "/v2/pods/{id}"): RunPodEmulator.delete_pod,
    ("POST", "/v2/pods/{id}/action"): RunPodEmulator.pod_action,
    ("GET", "/v2/pods/{id}/logs"): RunPodEmulator.pod_logs,
    ("GET", "/v2/billing/pods"): RunPodEmulator.pod_billing,
    ("GET", "/v2/catalog/gpus"): RunPodEmulator.list_gpus,
    ("GET", "/v2/catalog/gpus/{id}"): RunPodEmulator.list_gpus,
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lorapod-runpod-emulator"
    emulator: RunPodEmulator

    def _dispatch(self) -> None:
        self.emulator._dispatch(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, *args) -> None:
        pass


# GraphQL's Pod.desiredStatus is what the pod is meant to be doing: RUNNING while it bills, EXITED once stopped.
DESIRED_STATUS = {"PROVISIONING": "RUNNING", "STARTING": "RUNNING", "RUNNING": "RUNNING", "EXITED": "EXITED",
                  "ERROR": "EXITED", "TERMINATED": "TERMINATED"}


def _graphql_errors(message: str, status: int = 200, **kw) -> _Response:
    """A GraphQL error answer: `errors` (and `data: null` when the request got that far)."""
    body: dict = {"errors": [{"message": message}]}
    if status == 200:
        body["data"] = None
    return _Response(status, body, "application/json", off_document=True, **kw)


def _request_body(raw: bytes, schema: str) -> tuple[Any, Optional[_Response]]:
    """The JSON body, or the answer RunPod gives when it is not JSON (400) or breaks the schema (422)."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None, problem(400, "request body is not valid JSON")
    errors = openapi.request_errors(schema, body)
    return body, (problem(422, "Request validation failed.", errors=errors) if errors else None)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _send(handler: BaseHTTPRequestHandler, response: _Response) -> None:
    if response.body is None:
        payload = b""
    elif isinstance(response.body, str):
        payload = response.body.encode()
    else:
        payload = json.dumps(response.body).encode()
    try:
        handler.send_response(response.status)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        if response.status != 204:
            if response.content_type:
                handler.send_header("Content-Type", response.content_type)
            if response.stream is not None:
                handler.send_header("Transfer-Encoding", "chunked")
            else:
                handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if response.stream is None:
            handler.wfile.write(payload)
            handler.wfile.flush()
            return

        def chunk(data: bytes) -> None:
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        if payload:
            chunk(payload)
        response.stream(lambda text: chunk(text.encode()))
        chunk(b"")  # the emulator is stopping: end the body properly
        handler.close_connection = True
    except OSError:
        handler.close_connection = True  # the client gave up or hung up: its loss


def _hung_up(handler: BaseHTTPRequestHandler) -> bool:
    """Whether the client closed its end: readable with nothing to read (it sends nothing while it listens)."""
    try:
        readable, _, _ = select.select([handler.connection], [], [], 0)
        return bool(readable) and handler.connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True

"""A small client for RunPod's REST v2 API: the pod endpoints lorapod uses, problem+json errors, safe retries.

Reads and deletes are retried on network errors, 5xx and 429 (honouring Retry-After, at most RETRY_AFTER_CAP_S
at a time, and never past the call's own deadline: a 429 for the day window says "tomorrow"); a create never
is — the provider reconciles by the pod's unique name instead, because a create has answered 500 after
creating a billable pod. Whatever goes wrong ends as a ProviderError, never as a bare httpx exception.

The key is sent only over TLS, or in plain http to this machine (the emulator): see insecure_url().
"""
from __future__ import annotations

import ipaddress
import json
import queue
import re
import threading
import time
from urllib.parse import urlsplit

import httpx
from loguru import logger
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_before_delay

from engine.errors import CapacityError, ProviderError

# What RunPod says when a GPU type has no free machine in that cloud (400, no machine-readable code).
_NO_CAPACITY = re.compile(r"no longer any instances available|no (gpu|instances?|machines?) available|"
                          r"not enough (free )?(gpus|capacity)|out of capacity", re.I)

# A 429 names the window it is for (minute, hour or day) and how long until it resets: for the day window
# that can be hours. Waiting longer than this at a time is never worth it; the call's deadline ends it.
RETRY_AFTER_CAP_S = 60.0

# GET /pods/{id}/logs is a live Server-Sent Events tail: the backlog, then whatever the container prints,
# for as long as we listen (a pod with a public port 22 logs scanner connections all day). We read the
# backlog and hang up: once nothing new came for LOG_IDLE_S, after LOG_TOTAL_S in all, or at LOG_MAX_BYTES.
LOG_IDLE_S = 0.5
LOG_TOTAL_S = 5.0
LOG_MAX_BYTES = 1 << 20

MAX_PAGES = 1000  # a list that pages on past this is a server bug, not an account
DEFAULT_API_URL = "https://api.runpod.io/v2"


def insecure_url(url: str) -> str | None:
    """Why the API key must not be sent to `url`, or None when it may: https anywhere, plain http only to
    this machine (a loopback address or `localhost`, where the emulator runs)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        return f"{url!r} is not an http(s) URL with a host"
    if parts.scheme == "https" or _loopback(host):
        return None
    return (f"{url!r} is plain http to {host}: the API key would cross the network unencrypted; use https "
            "(plain http is allowed only to this machine: 127.0.0.1, ::1 or localhost)")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiError(ProviderError):
    def __init__(self, status: int, method: str, path: str, title: str, detail: str,
                 retry_after: float | None = None, key_env: str = "RUNPOD_API_KEY"):
        self.status, self.retry_after, self.detail = status, retry_after, detail
        message = f"RunPod API {method} {path} answered {status} {title}: {detail}"
        wait = f" (Retry-After {retry_after:.0f}s)" if retry_after is not None else ""
        hint = {
            401: f"RunPod refused the API key: check {key_env} (environment or .env)",
            403: "the API key lacks permission for this: create a key with read/write access to pods",
            402: "the RunPod account's balance is too low: add credit in the console",
            422: "lorapod sent something RunPod does not accept: this is a bug, please report it",
            429: f"RunPod is rate-limiting this API key{wait}: wait for the window to reset, then try again",
        }.get(status)
        super().__init__(message, hint)


def _problem(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
        detail = body.get("detail") or ""
        if body.get("errors"):
            detail += " (" + "; ".join(map(str, body["errors"])) + ")"
        return str(body.get("title") or response.reason_phrase), detail
    except (ValueError, AttributeError):
        return response.reason_phrase, response.text[:300]


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ApiError) and (exc.status >= 500 or exc.status == 429)


def _wait(state) -> float:
    exc = state.outcome.exception()
    if isinstance(exc, ApiError) and exc.retry_after is not None:
        return min(exc.retry_after, RETRY_AFTER_CAP_S)
    return min(0.5 * 2 ** (state.attempt_number - 1), 8.0)


class RunPodApi:
    def __init__(self, base_url: str, api_key: str, timeout_s: float = 30.0, retry_for_s: float = 120.0,
                 key_env: str = "RUNPOD_API_KEY"):
        refused = insecure_url(base_url)
        if refused:
            raise ProviderError(f"not sending the RunPod API key: {refused}", "set provider.api_url to an https URL")
        self.base_url = base_url.rstrip("/")
        self.timeout_s, self.retry_for_s, self.key_env = timeout_s, retry_for_s, key_env
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {api_key}", "User-Agent": "lorapod"})

    def _send(self, method: str, path: str, stream: bool = False, **kwargs) -> httpx.Response:
        response = self.http.send(self.http.build_request(method, path, **kwargs), stream=stream)
        if response.status_code >= 400:
            if stream:
                try:
                    response.read()
                finally:
                    response.close()
            title, detail = _problem(response)
            retry_after = response.headers.get("Retry-After", "").strip()
            if response.status_code == 400 and _NO_CAPACITY.search(detail):
                raise CapacityError(detail)
            raise ApiError(response.status_code, method, path, title, detail,
                           float(retry_after) if retry_after.isdigit() else None, self.key_env)
        return response

    def _idempotent(self, method: str, path: str, retry_for_s: float | None = None, **kwargs) -> httpx.Response:
        """`_send`, retried while it is safe and time is left: the whole call ends within retry_for_s (plus
        one request's timeout), however long RunPod asks us to wait."""
        budget = self.retry_for_s if retry_for_s is None else retry_for_s
        try:
            for attempt in Retrying(retry=retry_if_exception(_retryable), wait=_wait, reraise=True,
                                    stop=stop_before_delay(budget) | stop_after_attempt(12),
                                    before_sleep=lambda s: logger.debug(
                                        f"retrying {method} {path} in {s.upcoming_sleep:.1f}s: "
                                        f"{s.outcome.exception()}")):
                with attempt:
                    return self._send(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ProviderError(f"RunPod API {method} {path} failed: {type(exc).__name__}: {exc}",
                                f"check the network and provider.api_url ({self.base_url})") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _list(self, path: str, key: str, params: dict | None = None) -> list[dict]:
        """Every item of a list endpoint, following `pagination.nextCursor` (sent back as `cursor`) when a
        response carries one. The document has no pagination yet; RunPod's own MCP server shapes its lists
        for the cursor pagination the REST API is to add."""
        items: list[dict] = []
        cursor, seen = None, set()
        for _ in range(MAX_PAGES):
            query = dict(params or {}, **({"cursor": cursor} if cursor else {}))
            body = self._idempotent("GET", path, params=query or None).json()
            items += body.get(key) or []
            cursor = (body.get("pagination") or {}).get("nextCursor")
            if not cursor:
                return items
            if cursor in seen:
                raise ProviderError(f"RunPod API GET {path} sent the page cursor {cursor!r} twice",
                                    "RunPod's pagination is misbehaving; try again later")
            seen.add(cursor)
        raise ProviderError(f"RunPod API GET {path} kept paging past {MAX_PAGES} pages", "try again later")

    def create_pod(self, body: dict) -> dict:
        return self._send("POST", "/pods", json=body).json()  # never retried: see the module docstring

    def get_pod(self, pod_id: str) -> dict | None:
        try:
            return self._idempotent("GET", f"/pods/{pod_id}").json()
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list_pods(self) -> list[dict]:
        return self._list("/pods", "pods")

    def delete_pod(self, pod_id: str) -> None:
        try:
            self._idempotent("DELETE", f"/pods/{pod_id}")
        except ApiError as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise

    def pod_billing(self, pod_id: str, start: str, end: str, bucket: str = "hour",
                    retry_for_s: float | None = None) -> list[dict]:
        """GET /billing/pods (listPodBilling): this pod's billing records, one per time bucket in [start, end)
        (RFC 3339; RunPod snaps start down and end up to bucket boundaries). Only records naming the pod are
        returned, whatever the server put in."""
        body = self._idempotent("GET", "/billing/pods", retry_for_s=retry_for_s,
                                params={"podId": pod_id, "startTime": start, "endTime": end,
                                        "bucketSize": bucket}).json()
        records = body.get("records") if isinstance(body, dict) else None
        return [r for r in records or [] if isinstance(r, dict) and r.get("podId") == pod_id]

    def gpu_types(self) -> list[dict]:
        return self._list("/catalog/gpus", "gpus")

    def logs(self, pod_id: str, tail: int = 200, idle_s: float = LOG_IDLE_S, total_s: float = LOG_TOTAL_S,
             max_bytes: int = LOG_MAX_BYTES) -> list[str]:
        """The container's last log lines (Server-Sent Events `data: {source, line, ts}`), read from the live
        stream until it pauses for idle_s, total_s have passed, or max_bytes came; then we hang up."""
        deadline = time.monotonic() + total_s
        # The read timeout bounds how long the reader thread below can outlive us on a silent stream.
        response = self._idempotent("GET", f"/pods/{pod_id}/logs", retry_for_s=min(self.retry_for_s, total_s),
                                    stream=True, params={"tail": tail}, headers={"Accept": "text/event-stream"},
                                    timeout=httpx.Timeout(self.timeout_s, read=total_s))
        data = _read_stream(response, deadline, idle_s, max_bytes)
        lines = []
        for raw in data.decode("utf-8", errors="replace").splitlines():
            if raw.startswith("data:"):
                try:
                    lines.append(str(json.loads(raw[5:].strip()).get("line", "")))
                except (ValueError, AttributeError):
                    continue  # the last event, cut short by a deadline or the byte cap
        return lines

    def close(self) -> None:
        self.http.close()


def _read_stream(response: httpx.Response, deadline: float, idle_s: float, max_bytes: int) -> bytes:
    """What a never-ending response sends before the deadlines or the cap. A thread reads (a blocking read
    cannot be given a deadline of its own); it stops and closes the response at its next chunk after we
    are done, or when the read timeout ends a silent stream."""
    chunks: queue.Queue = queue.Queue()
    done = threading.Event()

    def pump() -> None:
        try:
            for chunk in response.iter_bytes():
                chunks.put(chunk)
                if done.is_set():
                    break
        except (httpx.HTTPError, OSError) as exc:  # a silent stream timing out ends here, as does a cut one
            chunks.put(exc)
        finally:
            response.close()
            chunks.put(None)

    threading.Thread(target=pump, daemon=True, name="runpod-logs").start()
    data = bytearray()
    try:
        while len(data) < max_bytes:
            # The backlog may take until the deadline to start; after it, a pause of idle_s ends the read.
            left = deadline - time.monotonic()
            wait = min(idle_s, left) if data else left
            if wait <= 0:
                break
            try:
                chunk = chunks.get(timeout=wait)
            except queue.Empty:
                break
            if chunk is None or isinstance(chunk, Exception):
                break
            data += chunk
    finally:
        done.set()
    return bytes(data[:max_bytes])

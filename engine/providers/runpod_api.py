"""A small client for RunPod's REST v2 API: the pod endpoints lorapod uses, problem+json errors, safe retries.

Reads and deletes are retried on network errors, 5xx and 429 (honouring Retry-After); a create never is —
the provider reconciles by the pod's unique name instead, because a create has answered 500 after
creating a billable pod.
"""
from __future__ import annotations

import json
import re

import httpx
from loguru import logger
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay

from engine.errors import CapacityError, ProviderError

# What RunPod says when a GPU type has no free machine in that cloud (400, no machine-readable code).
_NO_CAPACITY = re.compile(r"no longer any instances available|no (gpu|instances?|machines?) available|"
                          r"not enough (free )?(gpus|capacity)|out of capacity", re.I)


class ApiError(ProviderError):
    def __init__(self, status: int, method: str, path: str, title: str, detail: str, retry_after: float | None = None):
        self.status, self.retry_after, self.detail = status, retry_after, detail
        message = f"RunPod API {method} {path} answered {status} {title}: {detail}"
        hint = {
            401: "RunPod refused the API key: check RUNPOD_API_KEY (environment or .env)",
            403: "the API key lacks permission for this: create a key with read/write access to pods",
            402: "the RunPod account's balance is too low: add credit in the console",
            422: "lorapod sent something RunPod does not accept: this is a bug, please report it",
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
        return exc.retry_after
    return min(0.5 * 2 ** (state.attempt_number - 1), 8.0)


class RunPodApi:
    def __init__(self, base_url: str, api_key: str, timeout_s: float = 30.0, retry_for_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {api_key}", "User-Agent": "lorapod"})
        self.retry_for_s = retry_for_s

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            title, detail = _problem(response)
            retry_after = response.headers.get("Retry-After")
            if response.status_code == 400 and _NO_CAPACITY.search(detail):
                raise CapacityError(detail)
            raise ApiError(response.status_code, method, path, title, detail,
                           float(retry_after) if retry_after and retry_after.isdigit() else None)
        return response

    def _idempotent(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in Retrying(retry=retry_if_exception(_retryable), wait=_wait, reraise=True,
                                stop=stop_after_delay(self.retry_for_s) | stop_after_attempt(12),
                                before_sleep=lambda s: logger.debug(f"retrying {method} {path}: {s.outcome.exception()}")):
            with attempt:
                return self._send(method, path, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

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
        return self._idempotent("GET", "/pods").json().get("pods", [])

    def delete_pod(self, pod_id: str) -> None:
        try:
            self._idempotent("DELETE", f"/pods/{pod_id}")
        except ApiError as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise

    def gpu_types(self) -> list[dict]:
        return self._idempotent("GET", "/catalog/gpus").json().get("gpus", [])

    def logs(self, pod_id: str, tail: int = 200) -> list[str]:
        """The container's last log lines (Server-Sent Events `data: {source, line, ts}`)."""
        text = self._idempotent("GET", f"/pods/{pod_id}/logs", params={"tail": tail},
                                headers={"Accept": "text/event-stream"}).text
        lines = []
        for raw in text.splitlines():
            if raw.startswith("data:"):
                try:
                    lines.append(str(json.loads(raw[5:].strip()).get("line", "")))
                except ValueError:
                    continue
        return lines

    def close(self) -> None:
        self.http.close()

"""Who may do what with which API key: the account key, a pod's own key, and extra keys a test adds.

The account key (RunPodEmulator.api_key) may do everything, over REST and GraphQL.

The pod-scoped key (RUNPOD_API_KEY inside a pod; `pod.key`) is another matter: what it may do is NOT
documented (shared/reference/runpod.md). The one observation: a report from inside a real pod (2026-08) saw
REST stop with the pod key refused (403) while the legacy `runpodctl stop pod $RUNPOD_POD_ID`, which goes
through GraphQL, worked. So its powers are a setting of the emulator (RunPodEmulator.pod_key), and each mode is
tested; the default is the harsher reading of that report:

    "graphql"  every REST call refused (403); over GraphQL, the `pod` query and the `podTerminate` mutation on
               its own pod (the report: REST refused, runpodctl's GraphQL route worked). The default.
    "rest"     REST GET and DELETE of its own pod; GraphQL refused. (What the emulator allowed before the report.)
    "action"   REST GET of its own pod and POST /v2/pods/{id}/action {"action": "terminate"} on it; DELETE and
               every other action refused (the report's REST stop: 403); GraphQL refused.
    "none"     everything refused: REST 403, GraphQL errors. A pod that can do nothing about itself.

A pod key stays valid after its pod is gone (REST answers 404, GraphQL `pod` null), and never reaches
another pod (403, or GraphQL errors).

Extra keys (RunPodEmulator.add_key): the user's own restricted keys, e.g. a read-only key, or the key a
watchdog gets: limited to some REST methods, and to GraphQL only when `graphql` is set.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

POD_KEY_MODES = ("graphql", "rest", "action", "none")
DEFAULT_POD_KEY = "graphql"


@dataclass(frozen=True)
class ExtraKey:
    methods: frozenset[str]  # the REST methods it may use
    graphql: bool = False  # whether it may use GraphQL (both operations, on any pod of the account)


def check_mode(mode: str) -> str:
    if mode not in POD_KEY_MODES:
        raise ValueError(f"pod_key is one of {', '.join(POD_KEY_MODES)}, not {mode!r}")
    return mode


def pod_key_rest_allows(mode: str, method: str, template: Optional[str], pod_id: Optional[str], raw: bytes,
                        key_pod: str) -> bool:
    """Whether a pod's key may make this REST request (`pod_id` is the path's {id}; `raw` the body)."""
    own = pod_id == key_pod
    if mode == "rest":
        return own and template == "/v2/pods/{id}" and method in ("GET", "DELETE")
    if mode == "action":
        if own and template == "/v2/pods/{id}" and method == "GET":
            return True
        if own and template == "/v2/pods/{id}/action" and method == "POST":
            try:
                return json.loads(raw or b"null").get("action") == "terminate"
            except (ValueError, AttributeError):
                return False
        return False
    return False  # graphql, none: no REST at all


def graphql_allows(kind: str, mode: str, extra: Optional[ExtraKey], pod_id: str, key_pod: Optional[str]) -> bool:
    """Whether a key of this kind (account, pod, extra) may run a GraphQL operation on `pod_id`."""
    if kind == "account":
        return True
    if kind == "extra":
        return extra is not None and extra.graphql
    return kind == "pod" and mode == "graphql" and pod_id == key_pod

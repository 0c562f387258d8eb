"""RunPod's OpenAPI document (../shared/reference/runpod-openapi-v2.json) as a validator of bodies.

    validate_response("GET", "/v2/pods/{id}", 200, body, content_type="application/json")
    request_errors("CreatePodRequest", body)      # -> ["/gpu: 'foo' was unexpected ...", ...]

Schemas are JSON Schema Draft 2020-12 (OpenAPI 3.1): `$ref`s are resolved inside the document, and
`allOf`/`anyOf`/`unevaluatedProperties`/`if`-`then` are honoured. `date-time` strings are checked
(RFC 3339); the `float` format is only a note in this document and is not checked.

The document is the copy committed beside this module (RunPod's, unchanged: a clean checkout in CI has
no ../shared), or $LORAPOD_RUNPOD_OPENAPI to check against another version. tests/emulator/test_emulator.py
fails when the copy and shared/reference/ differ, where that folder exists.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

SPEC_NAME = "runpod-openapi-v2.json"
SPEC_URI = "urn:lorapod:runpod-openapi-v2"
_REPO = Path(__file__).resolve().parents[2]


class OpenApiViolation(AssertionError):
    """A body (or status, or content type) that RunPod's OpenAPI document does not allow."""


def spec_path() -> Path:
    return Path(os.environ.get("LORAPOD_RUNPOD_OPENAPI") or Path(__file__).with_name(SPEC_NAME))


def shared_copy() -> Path | None:
    """The team's reference copy (shared/reference/ beside or above the repository), if this machine has it."""
    for base in (_REPO, *_REPO.parents):
        if (base / "shared" / "reference" / SPEC_NAME).is_file():
            return base / "shared" / "reference" / SPEC_NAME
    return None


@functools.lru_cache(maxsize=None)
def spec() -> dict:
    return json.loads(spec_path().read_text())


def _absolute_refs(node: Any) -> Any:
    """A copy of `node` whose document-local refs ("#/components/...") point into the registered document."""
    if isinstance(node, dict):
        return {k: (SPEC_URI + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _absolute_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_refs(v) for v in node]
    return node


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _validator(schema_json: str):
    from jsonschema import Draft202012Validator, FormatChecker
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource(SPEC_URI, Resource(contents=spec(), specification=DRAFT202012))
    checker = FormatChecker(formats=())
    checker.checks("date-time")(_is_date_time)
    return Draft202012Validator(json.loads(schema_json), registry=registry, format_checker=checker)


def _pointer(ref: str) -> Any:
    target: Any = spec()
    for part in ref.split("#", 1)[1].lstrip("/").split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target


def _declared(schema: Any) -> set[str]:
    """Every property name `schema` declares, through $ref, allOf/anyOf/oneOf and if/then/else."""
    if not isinstance(schema, dict):
        return set()
    names = set(schema.get("properties", {}))
    if "$ref" in schema:
        names |= _declared(_pointer(schema["$ref"]))
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            names |= _declared(sub)
    for key in ("if", "then", "else"):
        names |= _declared(schema.get(key))
    return names


def schema_errors(schema: dict, instance: Any, *, tidy: bool = False) -> list[str]:
    """Every way `instance` breaks `schema` (a schema taken from the document), one readable line each.

    tidy: name in an unevaluatedProperties error only the properties the schema does not declare at all. Draft
    2020-12 drops the annotations of a failing allOf branch, so a body missing `image` would also be told that
    `name` and `gpu` are "unexpected"; a client reading a 422 wants the one real problem."""
    validator = _validator(json.dumps(_absolute_refs(schema), sort_keys=True))
    found = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        message = error.message
        if tidy and error.validator == "unevaluatedProperties" and isinstance(error.instance, dict):
            unknown = sorted(set(error.instance) - _declared(error.schema))
            if not unknown:
                continue
            listed = ", ".join(repr(name) for name in unknown)
            message = f"Unevaluated properties are not allowed ({listed} {'was' if len(unknown) == 1 else 'were'} " \
                      "unexpected)"
        found.append(f"{where}: {message}")
    return found


def request_errors(schema_name: str, body: Any) -> list[str]:
    """Violations of components/schemas/<schema_name> (e.g. CreatePodRequest, PodActionRequest), tidied as a
    422's `errors` list."""
    return schema_errors({"$ref": f"#/components/schemas/{schema_name}"}, body, tidy=True)


def _resolve(node: dict) -> dict:
    """A response object, following a `$ref` to components/responses."""
    while "$ref" in node:
        node = _pointer(node["$ref"])
    return node


def operation(method: str, path_template: str) -> dict:
    try:
        return spec()["paths"][path_template][method.lower()]
    except KeyError:
        raise OpenApiViolation(f"{method} {path_template} is not an operation of the document") from None


def response_object(method: str, path_template: str, status: int) -> dict:
    responses = operation(method, path_template)["responses"]
    found = responses.get(str(status)) or responses.get("default")
    if found is None:
        raise OpenApiViolation(f"{method} {path_template} documents no {status} and no default response")
    return _resolve(found)


def validate_response(method: str, path_template: str, status: int, body: Any, *,
                      content_type: str | None = None, headers: dict[str, str] | None = None) -> None:
    """Raises OpenApiViolation unless the document allows this response.

    `body` is the decoded JSON (None for no body; a str for text/event-stream). `content_type`, when given, must
    be one the document lists for that status (parameters such as charset ignored). `headers`, when given, are
    checked for what the document requires: an integer Retry-After on 429."""
    response = response_object(method, path_template, status)
    content = response.get("content") or {}
    where = f"{method} {path_template} -> {status}"
    if not content:
        if body not in (None, b"", ""):
            raise OpenApiViolation(f"{where}: the document says no body, got {body!r:.200}")
        return
    media = (content_type or "").split(";")[0].strip().lower()
    if content_type is not None and media not in content:
        raise OpenApiViolation(f"{where}: content type {content_type!r} is not one of {sorted(content)}")
    if body is None:
        raise OpenApiViolation(f"{where}: the document says a {'/'.join(content)} body, got none")
    schema = content[media if media in content else next(iter(content))].get("schema")
    if schema is not None:
        problems = schema_errors(schema, body)
        if problems:
            raise OpenApiViolation(f"{where}: body breaks the document:\n  " + "\n  ".join(problems)
                                   + f"\nbody: {json.dumps(body)[:2000]}")
    if headers is not None and status == 429:
        retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after")
        if retry_after is None or not retry_after.strip().isdigit():
            raise OpenApiViolation(f"{where}: Retry-After must be an integer number of seconds, got {retry_after!r}")


# GET /v2/pods/{id}/logs: the document types the stream as a string and describes each event's data in words:
# `{"source": "container", "line": "...", "ts": "..."}`. This is that description as a schema.
LOG_EVENT_SCHEMA = {
    "type": "object",
    "required": ["source", "line", "ts"],
    "additionalProperties": False,
    "properties": {
        "source": {"$ref": "#/components/schemas/LogSource"},
        "line": {"type": "string"},
        "ts": {"type": "string", "format": "date-time"},
    },
}


def parse_sse(text: str) -> list[dict[str, str]]:
    """Server-Sent Events as [{"id": ..., "data": ..., ...}], one dict per event (fields joined per the spec)."""
    events, current = [], {}
    for line in text.split("\n"):
        if line == "":
            if current:
                events.append(current)
                current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        current[name] = current[name] + "\n" + value if name in current else value
    if current:
        events.append(current)
    return events


def validate_log_stream(text: str) -> list[dict]:
    """The events of a logs response, each with an `id:` and a `data:` payload matching LOG_EVENT_SCHEMA;
    returns the decoded payloads. Raises OpenApiViolation otherwise."""
    payloads = []
    for event in parse_sse(text):
        if "id" not in event or "data" not in event:
            raise OpenApiViolation(f"log event without id or data: {event}")
        try:
            payload = json.loads(event["data"])
        except ValueError:
            raise OpenApiViolation(f"log event data is not JSON: {event['data']!r}") from None
        problems = schema_errors(LOG_EVENT_SCHEMA, payload)
        if problems:
            raise OpenApiViolation(f"log event {payload} breaks the described shape: {problems}")
        payloads.append(payload)
    return payloads


def example_body(method: str, path_template: str, status: int) -> Any:
    """The document's first example for a response, deep-copied (for tests of this module)."""
    content = response_object(method, path_template, status).get("content") or {}
    for media in content.values():
        for example in (media.get("examples") or {}).values():
            return copy.deepcopy(example["value"])
    return None

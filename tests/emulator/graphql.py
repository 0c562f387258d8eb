"""RunPod's legacy GraphQL API, the two operations a pod's watchdog needs, recognised from the query text.

Source: RunPod's docs (runpod/docs, docs/sdks/graphql/manage-pods.md):

    POST https://api.runpod.io/graphql?api_key=...
    {"query": "mutation { podTerminate(input: {podId: \\"...\\"}) }"}

and `query Pod { pod(input: {podId: "..."}) { id desiredStatus ... } }`; public scripts also send the key as
`Authorization: Bearer`. runpod.md: GraphQL is announced to retire in early 2027, but runpodctl still uses it,
and a pod's own key was seen to work there when REST refused it (see keys.py).

Only these two root fields are understood, with podId inline or through `variables`:

    mutation { podTerminate(input: {podId: "abc"}) }
    mutation TerminatePod($input: PodTerminateInput!) { podTerminate(input: $input) }    {"input": {"podId": "abc"}}
    mutation Stop($podId: String!) { podTerminate(input: {podId: $podId}) }             {"podId": "abc"}
    query { pod(input: {podId: "abc"}) { id desiredStatus } }                           (any selection)

Anything else (another field, two fields, a malformed request) is a GraphQLError: the answer is HTTP 200 with
`errors`, as GraphQL servers answer. This is no GraphQL parser: it is a recogniser, strict where it can be.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OPERATIONS = {"podTerminate": "mutation", "pod": "query"}
_HEADER = re.compile(r"\s*(?:(query|mutation)\b\s*(?:[_A-Za-z]\w*)?\s*(?:\([^)]*\))?\s*)?\{", re.S)
_FIELD = re.compile(r"\s*(?:[_A-Za-z]\w*\s*:\s*)?([_A-Za-z]\w*)\s*", re.S)  # an alias may precede it
_INPUT = re.compile(r"\s*input\s*:\s*(.*?)\s*", re.S)
_OBJECT = re.compile(r"\{\s*podId\s*:\s*(\"(?:[^\"\\]|\\.)*\"|\$[_A-Za-z]\w*)\s*\}", re.S)


class GraphQLError(ValueError):
    pass


@dataclass(frozen=True)
class Operation:
    field: str  # "pod" or "podTerminate"
    pod_id: str


def parse(body: Any) -> Operation:
    """The operation a GraphQL request body asks for; GraphQLError when the emulator cannot answer it."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise GraphQLError("a GraphQL request is a JSON object with a `query` string")
    variables = body.get("variables")
    variables = {} if variables is None else variables
    if not isinstance(variables, dict):
        raise GraphQLError("`variables` must be a JSON object")
    text = re.sub(r"#[^\n]*", "", body["query"])  # comments
    header = _HEADER.match(text)
    if header is None:
        raise GraphQLError("Syntax Error: expected `query`, `mutation` or `{`")
    kind = header.group(1) or "query"
    selection = text[header.end():]
    field_match = _FIELD.match(selection)
    if field_match is None:
        raise GraphQLError("Syntax Error: expected a field")
    field, index, arguments = field_match.group(1), field_match.end(), ""
    if selection.startswith("(", index):
        end = _closing(selection, index, "(", ")")
        arguments, index = selection[index + 1:end - 1], end
    index = len(selection) - len(selection[index:].lstrip())
    if selection.startswith("{", index):
        index = _closing(selection, index, "{", "}")
    if field not in OPERATIONS or selection[index:].strip() != "}":
        raise GraphQLError("the RunPod emulator answers exactly one field: pod(input: {podId}) in a query, or "
                           f"podTerminate(input: {{podId}}) in a mutation; not this ({field or 'nothing'} first)")
    if OPERATIONS[field] != kind:
        raise GraphQLError(f"Cannot query field \"{field}\" on type \"{kind.capitalize()}\"")
    return Operation(field, _pod_id(arguments, variables))


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    """The index just past the `closing` that matches the `opening` at `start` (strings may hold either)."""
    depth, quoted, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return index + 1
    raise GraphQLError(f"Syntax Error: no {closing!r} closes the {opening!r} at {start}")


def _pod_id(arguments: str, variables: dict) -> str:
    match = _INPUT.fullmatch(arguments)
    if match is None:
        raise GraphQLError("expected one argument, `input`")
    value: Any = match.group(1)
    if value.startswith("$"):
        value = variables.get(value[1:])
        value = value.get("podId") if isinstance(value, dict) else None
    else:
        inline = _OBJECT.fullmatch(value)
        if inline is None:
            raise GraphQLError("expected input: {podId: \"...\"} or input: $variable")
        literal = inline.group(1)
        value = variables.get(literal[1:]) if literal.startswith("$") else json.loads(literal)
    if not isinstance(value, str) or not value:
        raise GraphQLError("input.podId must be a non-empty string")
    return value

"""Frames as text and as JSON values: parsing a frame bounded in depth, measuring it on the wire, base64 lengths
without decoding, JSON text of any value, the relay's `error` events and the merge of pinned session fields.
Pure functions the whole core and the event log share; see docs/client-input.md for the bounds."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Final

import orjson

from relay.core import events as ev

MAX_JSON_DEPTH: Final = 512
_CONTAINERS: Final = frozenset({dict, list})  # the types a JSON parser makes for objects and arrays


def deep_merge(base: dict[str, Any], pinned: dict[str, Any]) -> dict[str, Any]:
    """Pinned values win; nested objects merge key by key; lists and scalars are replaced whole."""
    merged = dict(base)
    for key, value in pinned.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value  # shared, never mutated: merges build new dicts
    return merged


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` nests deeper than `limit` containers (iterative: no recursion limit to hit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, (dict, list)))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return False


def parse_event(text: str) -> dict[str, Any] | None:
    """The frame as a JSON object, or None when it is not one (or nests deeper than 512 levels)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = _stdlib_loads(text)
    if type(value) is not dict:  # JSON parsers make plain dicts and lists, never subclasses
        return None
    # Cheap guards first: a flat object (every audio event) cannot be deep (one C-level pass over its values'
    # types); only frames with many brackets can.
    if _CONTAINERS.isdisjoint(map(type, value.values())):
        return value
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and json_depth_exceeds(value, MAX_JSON_DEPTH):
        return None
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _stdlib_loads(text: str) -> Any:
    """What orjson refuses that is still JSON (RFC 8259): integers past 64 bits, numbers past a double's range, lone
    surrogate escapes. None for what is not JSON (the standard library's NaN and Infinity extensions included).
    Only frames orjson refused come here."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None


_UNICODE_ESCAPE: Final = re.compile(r"\\u([0-9a-fA-F]{4})")


def may_name_the_relay(text: str) -> bool:
    """Whether a frame the relay's parser refused mentions `relay` anywhere, spelled out or through `\\u` escapes.

    Clients' parsers are laxer than the relay's (a browser reads any depth, Python reads NaN): a frame refused
    here may still read there as a `relay.*` event or an answer to a `relay_` frame. An upstream frame refused
    here that mentions `relay` is dropped rather than forwarded unread (docs/forwarding.md)."""
    if "relay" in text:
        return True
    return "\\u" in text and "relay" in _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def wire_len(text: str) -> int:
    """The frame's length on the wire (UTF-8 bytes); isascii() is O(1) on CPython, so ASCII frames cost nothing."""
    return len(text) if text.isascii() else len(text.encode())


def b64_decoded_len(text: str) -> int:
    """Decoded length of base64 text without decoding it (exact for valid base64)."""
    n = len(text)
    if text[-1:] != "=":  # the common case; a one-character slice is a cached string, no method call
        return n * 3 // 4
    return n * 3 // 4 - 1 - (text[-2:-1] == "=")


def b64_bytes(text: object) -> bytes | None:
    """The bytes of base64 text, or None when it is not a string of valid base64."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def dumps_text(value: Any) -> str:
    """JSON text of `value`."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        return stdlib_dumps(value, exc)


def stdlib_dumps(value: Any, refused: Exception) -> str:
    """JSON text of what orjson refused that JSON can still say: nesting past 255 levels (frames may nest up to
    512), integers past 64 bits, lone surrogates (written as escapes). Rare: only hand-made frames carry them. A
    NaN or an infinity (a number past a double's range) has no JSON spelling: `refused` is raised."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        raise refused from None


def error_event(
    code: str,
    message: str,
    *,
    event_id: object = None,
    error_type: str = "invalid_request_error",
    param: str | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "code": code, "message": message, "param": param, "event_id": None}
    if isinstance(event_id, str):
        error["event_id"] = event_id
    return {"type": ev.ERROR, "event_id": f"relay_{code}", "error": error}


def answered_event_id(event: dict[str, Any]) -> str | None:
    """The `error.event_id` of an `error` event: the id of the frame it answers (None when there is none)."""
    error = event.get("error")
    event_id = error.get("event_id") if isinstance(error, dict) else None
    return event_id if isinstance(event_id, str) else None


def answers_relay(event: dict[str, Any]) -> bool:
    """An `error` answering a frame the relay made (its `error.event_id` starts with `relay_`): the relay's to
    read, never the client's (docs/forwarding.md, "Answers to the relay's own frames")."""
    event_id = answered_event_id(event)
    return event_id is not None and event_id.startswith(ev.RELAY_EVENT_ID_PREFIX)

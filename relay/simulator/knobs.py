"""Fault and behaviour knobs of the simulator, parsed from the realtime URL's query over configured defaults.

Knobs (each also accepted in `SimulatorOptions.knobs` as a default that a query parameter overrides):

| knob | value | effect |
|---|---|---|
| `reject_auth` | flag | the WebSocket handshake is answered 401 |
| `refuse` | flag or HTTP status (400..599) | the handshake is answered with that status (flag: 503) |
| `close_after` | N >= 1 | the socket is dropped (TCP closed, no close frame) after N server events |
| `close_after_sessions` | K >= 1 | `close_after` applies only to the first K realtime sockets of the process |
| `delay_ms` | D >= 0 | every server event is sent D ms late |
| `inject_error` | N >= 1 | an `error` (server_error, code injected_error) follows the N-th server event |
| `stall` | N >= 0 | after reading N client frames the server stops reading (backpressure) |
| `retrieve_fail` | flag | every `conversation.item.retrieve` gets an `error` with the client's event_id |
| `retrieve_no_audio` | flag | retrieves answer the item with its transcript but without `audio` |
| `omit_item_done` | flag | no `conversation.item.done` is ever sent (as observed live) |
| `item_created_name` | `added` / `created` | the name of the item-added event (default `added`) |
| `double_session_updated` | flag | every `session.update` is answered with two `session.updated` |
| `tool_on_audio` | flag | an audio turn calls the first configured tool |

Flags are true for `1`, `true`, `yes`, `on` or an empty value, false for `0`, `false`, `no`, `off`.
Pure parsing; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

_TRUE: Final = frozenset({"", "1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class KnobError(ValueError):
    """A knob with a value it cannot have (answered 400 at the handshake)."""


@dataclass(frozen=True)
class Knobs:
    reject_auth: bool = False
    refuse: int | None = None
    close_after: int | None = None
    close_after_sessions: int | None = None
    delay_ms: int = 0
    inject_error: int | None = None
    stall: int | None = None
    retrieve_fail: bool = False
    retrieve_no_audio: bool = False
    omit_item_done: bool = False
    item_created_name: str = "added"
    double_session_updated: bool = False
    tool_on_audio: bool = False


KNOB_NAMES: Final = tuple(f.name for f in fields(Knobs))


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise KnobError(f"knob {name}: expected a flag (1/0, true/false), got {value!r}")


def _count(name: str, value: Any, minimum: int) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise KnobError(f"knob {name}: expected an integer >= {minimum}, got {value!r}")
    return number


def _refuse(value: Any) -> int | None:
    text = str(value).strip().lower()
    if text.isdigit() and len(text) == 3:
        status = int(text)
        if not 400 <= status <= 599:
            raise KnobError(f"knob refuse: an HTTP error status 400..599, got {value!r}")
        return status
    return 503 if _flag("refuse", value) else None


def parse_knobs(defaults: Mapping[str, Any], query: Mapping[str, str]) -> Knobs:
    """Knobs from `defaults` overridden by the knob-named entries of `query` (other parameters ignored)."""
    raw: dict[str, Any] = {}
    for source in (defaults, query):
        for name, value in source.items():
            if name in KNOB_NAMES:
                raw[name] = value
    unknown = set(defaults) - set(KNOB_NAMES)
    if unknown:
        raise KnobError(f"unknown knob(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "refuse":
            values[name] = _refuse(value)
        elif name in ("close_after", "close_after_sessions", "inject_error"):
            values[name] = _count(name, value, 1)
        elif name == "delay_ms" or name == "stall":
            values[name] = _count(name, value, 0)
        elif name == "item_created_name":
            if value not in ("added", "created"):
                raise KnobError(f"knob item_created_name: 'added' or 'created', got {value!r}")
            values[name] = value
        else:
            values[name] = _flag(name, value)
    return Knobs(**values)

"""The pure bookkeeping of server-side tools in one session: events in, decisions out. No asyncio, no I/O, no clock.

The session core (`relay.core.session.RelaySession`) calls it at a few hook points and carries out what it decides:
- `merge_tools(session)`: the server tools merged into a session config (a client tool of the same name is
  replaced; the client cannot remove them), for the relay's opening `session.update` and every client one;
- `on_client_event(...)`: a client `session.update` gets the tools merged; a client `function_call_output` for a
  server call is refused (`event_blocked`); a client `response.create` is held while the relay still owes outputs
  to a response that mixed client and server calls (`hold`), and so are the frames after it, in order;
- `on_server_event(...)`: function-call items of server tools are recognized (and hidden from the client by
  default: their output items, argument deltas, conversation items, the relay's output items, their entries in
  `response.done`); a call is started once per `call_id` when its arguments are complete; a `previous_item_id`
  naming a hidden item becomes the nearest item the client has seen (errors answering the relay's tool frames,
  whose event ids start with `relay_tool_`, are the session's to swallow, like every `relay_` answer);
- `call_finished(...)`: the handler's outcome becomes a `relay.tool_call` record (and client event with relay
  events on), a `conversation.item.create` with the `function_call_output`, and, once every call of a
  response that only called server tools has its output, one `response.create`.
Drains, in the order the core empties them: `to_upstream()` (frames the relay sends), `to_client()` (relay
events), `to_records()` (relay log records), `to_release()` (held client frames, to be processed again),
`to_start()` (calls for the runner), `to_arm()` (hold timers: (generation, seconds)). See docs/tools.md.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from relay.core import events as ev
from relay.core.toolset import ToolCall, ToolOutcome, ToolSet, parse_arguments

TOOL_EVENT_ID_PREFIX: Final = "relay_tool_"
# Calls, responses and hidden items remembered per session; the oldest are forgotten past this.
HISTORY_LIMIT: Final = 1024
_MAX_CHAIN: Final = 64  # a previous_item_id chain through hidden items is never longer in practice
# Client frames held behind a response.create are bounded: past this much the hold ends early (the frames go on
# in order), so a client streaming audio during a slow tool cannot grow the relay's memory without limit.
HOLD_MAX_BYTES: Final = 8 * 1024 * 1024

_HIDDEN_WHEN_ITEM: Final = frozenset(
    {
        ev.RESPONSE_OUTPUT_ITEM_ADDED,
        ev.RESPONSE_OUTPUT_ITEM_DONE,
        ev.CONVERSATION_ITEM_ADDED,
        ev.CONVERSATION_ITEM_CREATED,
        ev.CONVERSATION_ITEM_DONE,
        ev.CONVERSATION_ITEM_RETRIEVED,
    }
)
_HIDDEN_WHEN_ITEM_ID: Final = frozenset(
    {
        ev.RESPONSE_FUNCTION_CALL_ARGUMENTS_DELTA,
        ev.RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE,
        ev.CONVERSATION_ITEM_DELETED,
        ev.CONVERSATION_ITEM_TRUNCATED,
    }
)


@dataclass(frozen=True)
class ClientVerdict:
    action: Literal["forward", "reject", "hold"]
    event: dict[str, Any] | None = None  # the changed frame, when forwarding a change
    code: str = ""
    message: str = ""
    param: str | None = None


FORWARD: Final = ClientVerdict("forward")
HOLD: Final = ClientVerdict("hold")


@dataclass
class _Call:
    name: str
    item_id: str | None
    response_id: str | None
    started: bool = False


@dataclass
class _Response:
    server_calls: set[str] = field(default_factory=set)
    client_calls: set[str] = field(default_factory=set)
    outputs_sent: set[str] = field(default_factory=set)
    status: str | None = None  # set by response.done
    continued: bool = False
    hold_released: bool = False

    def owes_outputs(self) -> bool:
        return bool(self.server_calls - self.outputs_sent)


class ToolState:
    """Server-tool bookkeeping of one session. See the module docstring for how to drive it."""

    def __init__(self, tools: ToolSet, *, relay_events: bool) -> None:
        self.tools = tools
        self.relay_events = relay_events
        self._calls: dict[str, _Call] = {}  # call_id -> server call
        self._item_calls: dict[str, str] = {}  # function_call item id -> its call_id
        self._responses: dict[str | None, _Response] = {}
        # Items the client does not see, with the previous_item_id the upstream gave them (None: not known yet).
        self._hidden: dict[str, str | None] = {}
        self._held: deque[str] = deque()
        self._held_bytes = 0
        self._hold_generation = 0
        self.holding = False
        self._responses_continued = 0
        self._upstream: list[dict[str, Any]] = []
        self._client: list[dict[str, Any]] = []
        self._records: list[dict[str, Any]] = []
        self._released: list[str] = []
        self._start: list[ToolCall] = []
        self._arm: list[tuple[int, float]] = []

    # ---- drains -----------------------------------------------------------------------------------------
    def to_upstream(self) -> list[dict[str, Any]]:
        out, self._upstream = self._upstream, []
        return out

    def to_client(self) -> list[dict[str, Any]]:
        out, self._client = self._client, []
        return out

    def to_records(self) -> list[dict[str, Any]]:
        out, self._records = self._records, []
        return out

    def to_release(self) -> list[str]:
        out, self._released = self._released, []
        return out

    def to_start(self) -> list[ToolCall]:
        out, self._start = self._start, []
        return out

    def to_arm(self) -> list[tuple[int, float]]:
        out, self._arm = self._arm, []
        return out

    # ---- session config ---------------------------------------------------------------------------------
    def merge_tools(self, session: dict[str, Any]) -> dict[str, Any]:
        """`session` with the server tools in its `tools` (client tools of the same names replaced)."""
        names = self.tools.names
        current = session.get("tools")
        kept = [t for t in current if not (isinstance(t, dict) and t.get("name") in names)] if isinstance(current, list) else []
        return {**session, "tools": kept + self.tools.definitions()}

    # ---- client -> upstream -----------------------------------------------------------------------------
    def on_client_event(self, event: dict[str, Any], kind: str, changed: dict[str, Any] | None) -> ClientVerdict:
        """What to do with a client frame (`changed`: the frame as an earlier rule already changed it)."""
        if kind == ev.SESSION_UPDATE:
            base = changed if changed is not None else event
            session = base.get("session")
            if not isinstance(session, dict) or "tools" not in session:
                return FORWARD  # a patch without tools keeps the upstream's tools, server tools included
            if not isinstance(session["tools"], list):
                return ClientVerdict(
                    "reject", code="invalid_value", message="session.tools must be an array", param="session.tools"
                )
            return ClientVerdict("forward", event={**base, "session": self.merge_tools(session)})
        if kind == ev.CONVERSATION_ITEM_CREATE:
            return self._client_output(event.get("item"), "item.call_id") or FORWARD
        if kind == ev.RESPONSE_CREATE:
            # An out-of-band response takes its items inline (`response.input`): an output for a server call
            # there is the same answer in another place.
            response = event.get("response")
            inline = response.get("input") if isinstance(response, dict) else None
            if isinstance(inline, list):
                for index, item in enumerate(inline):
                    if (verdict := self._client_output(item, f"response.input[{index}].call_id")) is not None:
                        return verdict
            if self._must_hold():
                return HOLD
        return FORWARD

    def _client_output(self, item: object, param: str) -> ClientVerdict | None:
        """The refusal of a client `function_call_output` item that answers a server call (or whose call_id the
        relay cannot match because it is not a string), else None."""
        if not isinstance(item, dict) or item.get("type") != "function_call_output":
            return None
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            return ClientVerdict("reject", code="invalid_value", message=f"{param} must be a string", param=param)
        if call_id in self._calls:
            return ClientVerdict(
                "reject",
                code=ev.CODE_EVENT_BLOCKED,
                message=f"call {call_id!r} belongs to a server-side tool; the relay answers it",
                param=param,
            )
        return None

    def hold(self, text: str) -> None:
        """Keep a client frame until the relay's outputs are sent or the hold expires (the first frame starts a
        timer) or HOLD_MAX_BYTES are held."""
        if not self.holding:
            self.holding = True
            self._hold_generation += 1
            self._arm.append((self._hold_generation, self.tools.max_timeout))
        self._held.append(text)
        self._held_bytes += len(text)
        if self._held_bytes > HOLD_MAX_BYTES:
            self._release()

    def hold_expired(self, generation: int) -> None:
        if self.holding and generation == self._hold_generation:
            self._release()

    def _must_hold(self) -> bool:
        return any(r.client_calls and r.owes_outputs() and not r.hold_released for r in self._responses.values())

    def _release(self) -> None:
        self.holding = False
        for response in self._responses.values():
            if response.client_calls:
                response.hold_released = True
        self._released.extend(self._held)
        self._held.clear()
        self._held_bytes = 0

    # ---- upstream -> client -----------------------------------------------------------------------------
    def on_server_event(self, event: dict[str, Any], kind: object) -> dict[str, Any] | None:
        """The event as the client should see it: `event` itself, a changed copy, or None (not forwarded)."""
        hide = self.tools.hide_events
        if kind in _HIDDEN_WHEN_ITEM:
            item = event.get("item")
            if isinstance(item, dict) and self._observe_item(item, event, kind):
                added = kind in (ev.CONVERSATION_ITEM_ADDED, ev.CONVERSATION_ITEM_CREATED)
                if hide and added and isinstance(item.get("id"), str):
                    previous = event.get("previous_item_id")
                    self._remember_hidden(item["id"], previous if isinstance(previous, str) else None)
                return None if hide else event
        elif kind in _HIDDEN_WHEN_ITEM_ID:
            item_id, call_id = event.get("item_id"), event.get("call_id")
            server = (isinstance(item_id, str) and item_id in self._item_calls) or (
                isinstance(call_id, str) and call_id in self._calls
            )
            if kind == ev.RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE:
                server = self._arguments_done(event) or server
            if server or (hide and isinstance(item_id, str) and item_id in self._hidden):
                return None if hide else event
        elif kind == ev.RESPONSE_DONE:
            return self._response_done(event)
        if hide:
            previous = event.get("previous_item_id")
            if isinstance(previous, str) and previous in self._hidden:
                return {**event, "previous_item_id": self._visible_before(previous)}
        return event

    def _observe_item(self, item: dict[str, Any], event: dict[str, Any], kind: object) -> bool:
        """Register function calls; True when `item` is server-tool traffic (a call or the relay's output)."""
        item_type = item.get("type")
        item_id = item.get("id") if isinstance(item.get("id"), str) else None
        if item_type == "function_call_output":
            call_id = item.get("call_id")
            return isinstance(call_id, str) and call_id in self._calls
        if item_type != "function_call":
            return False
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            return False
        if kind not in (ev.RESPONSE_OUTPUT_ITEM_ADDED, ev.RESPONSE_OUTPUT_ITEM_DONE):
            # Only the model's calls are the relay's: a function_call item a client created itself stays its own.
            return call_id in self._calls or (item_id is not None and item_id in self._item_calls)
        response_id = event.get("response_id") if isinstance(event.get("response_id"), str) else None
        if self.tools.get(item.get("name")) is None:
            self._response(response_id).client_calls.add(call_id)
            return False
        call = self._register(call_id, str(item.get("name")), item_id, response_id)
        if kind == ev.RESPONSE_OUTPUT_ITEM_DONE:
            self._start_call(call_id, call, item.get("arguments"))
        return True

    def _register(self, call_id: str, name: str, item_id: str | None, response_id: str | None) -> _Call:
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = _Call(name, item_id, response_id)
            _bound(self._calls)
        if call.item_id is None and item_id is not None:
            call.item_id = item_id
        if call.response_id is None and response_id is not None:
            # First seen without its response (a conversation.item event): it belongs to this one.
            self._responses.get(None, _Response()).server_calls.discard(call_id)
            call.response_id = response_id
        if call.item_id is not None:
            self._item_calls[call.item_id] = call_id
            _bound(self._item_calls)
            if self.tools.hide_events and call.item_id not in self._hidden:
                self._remember_hidden(call.item_id, None)
        self._response(call.response_id).server_calls.add(call_id)
        return call

    def _arguments_done(self, event: dict[str, Any]) -> bool:
        call_id, item_id = event.get("call_id"), event.get("item_id")
        if not isinstance(call_id, str) and isinstance(item_id, str):
            call_id = self._item_calls.get(item_id)
        if not isinstance(call_id, str):
            return False
        call = self._calls.get(call_id)
        if call is None:
            if self.tools.get(event.get("name")) is None:
                return False
            response_id = event.get("response_id")
            call = self._register(
                call_id,
                str(event.get("name")),
                item_id if isinstance(item_id, str) else None,
                response_id if isinstance(response_id, str) else None,
            )
        self._start_call(call_id, call, event.get("arguments"))
        return True

    def _start_call(self, call_id: str, call: _Call, arguments: object) -> None:
        if call.started:
            return
        call.started = True
        parsed, problem = parse_arguments(arguments)
        text = arguments if isinstance(arguments, str) else orjson.dumps(arguments, default=repr).decode()
        self._start.append(ToolCall(call_id, call.name, call.item_id, call.response_id, text, parsed, problem))

    def _response_done(self, event: dict[str, Any]) -> dict[str, Any]:
        response = event.get("response")
        if not isinstance(response, dict):
            return event
        response_id = response.get("id") if isinstance(response.get("id"), str) else None
        output = response.get("output")
        kept: list[Any] = []
        stripped = False
        if isinstance(output, list):
            for item in output:
                if isinstance(item, dict) and item.get("type") == "function_call" and isinstance(item.get("call_id"), str):
                    if self.tools.get(item.get("name")) is not None:
                        item_id = item.get("id") if isinstance(item.get("id"), str) else None
                        call = self._register(item["call_id"], str(item["name"]), item_id, response_id)
                        self._start_call(item["call_id"], call, item.get("arguments"))  # no-op when already started
                        stripped = True
                        continue
                    self._response(response_id).client_calls.add(item["call_id"])
                kept.append(item)
        state = self._response(response_id)
        status = response.get("status")
        state.status = status if isinstance(status, str) else "unknown"
        # A call the response never finished (cancelled mid-arguments) will get no output: owe none for it.
        state.server_calls = {c for c in state.server_calls if c in self._calls and self._calls[c].started}
        self._maybe_continue(response_id)
        if stripped and self.tools.hide_events:
            return {**event, "response": {**response, "output": kept}}
        return event

    def _response(self, response_id: str | None) -> _Response:
        response = self._responses.get(response_id)
        if response is None:
            response = self._responses[response_id] = _Response()
            _bound(self._responses)
        return response

    def _remember_hidden(self, item_id: str, previous: str | None) -> None:
        self._hidden[item_id] = previous
        _bound(self._hidden)

    def _visible_before(self, item_id: str) -> str | None:
        """The nearest item before `item_id` (a hidden one) that the client has seen; None when there is none."""
        current: str | None = item_id
        for _ in range(_MAX_CHAIN):
            if current is None or current not in self._hidden:
                return current
            current = self._hidden[current]
        return None

    # ---- outcomes -----------------------------------------------------------------------------------------
    def call_finished(self, call: ToolCall, outcome: ToolOutcome, *, send: bool) -> None:
        """Record the outcome; with `send` (the session is still forwarding) give the model its output."""
        arguments: Any = call.arguments if call.arguments is not None else call.arguments_text
        self._records.append(
            {
                "name": call.name,
                "call_id": call.call_id,
                "item_id": call.item_id,
                "response_id": call.response_id,
                "arguments": arguments,
                "output": outcome.output,
                "result": outcome.result,
                "duration_ms": outcome.duration_ms,
            }
        )
        if self.relay_events and send:
            public: dict[str, Any] = {
                "type": ev.RELAY_TOOL_CALL,
                "event_id": f"{TOOL_EVENT_ID_PREFIX}call_{call.call_id}",
                "name": call.name,
                "call_id": call.call_id,
                "result": outcome.result,
                "duration_ms": outcome.duration_ms,
            }
            if self.tools.details_to_client:
                public["arguments"] = arguments
                public["output"] = outcome.output
            self._client.append(public)
        if not send or outcome.result == "cancelled":
            return
        self._upstream.append(
            {
                "type": ev.CONVERSATION_ITEM_CREATE,
                "event_id": f"{TOOL_EVENT_ID_PREFIX}output_{call.call_id}",
                "item": {"type": "function_call_output", "call_id": call.call_id, "output": outcome.output},
            }
        )
        response = self._response(call.response_id)
        response.outputs_sent.add(call.call_id)
        self._maybe_continue(call.response_id)
        if self.holding and not self._must_hold():
            self._release()

    def _maybe_continue(self, response_id: str | None) -> None:
        """One `response.create` once a completed response that called only server tools has every output."""
        response = self._responses.get(response_id)
        if (
            response is None
            or response.continued
            or response.status != "completed"
            or not response.server_calls
            or response.client_calls
            or response.owes_outputs()
        ):
            return
        response.continued = True
        self._responses_continued += 1
        self._upstream.append(
            {"type": ev.RESPONSE_CREATE, "event_id": f"{TOOL_EVENT_ID_PREFIX}response_{self._responses_continued}"}
        )


def _bound(table: dict[Any, Any]) -> None:
    """Forget the oldest entries past HISTORY_LIMIT (dicts keep insertion order)."""
    while len(table) > HISTORY_LIMIT:
        del table[next(iter(table))]

"""The pure core of one relay session: frames in, decisions out. No I/O, no asyncio, no clock, no logging.

`RelaySession` is a sans-I/O state machine in the style of websockets' `Protocol`. How to drive it:

- **Feed** it what crossed the relay: `receive_client_text`, `receive_client_binary`, `receive_server_text`; and
  what happened around it: `upstream_connected`, `retrieve_timed_out`, `audio_saved`, `tool_call_finished`,
  `tool_hold_expired`, `session_closing`, `session_closed`, and for a resume `upstream_dropped`,
  `begin_restore`, `restore_abandoned`, `finish_restore`, `resume_failed`.
- **Then drain** what to do, in this order: `to_client()` and `to_upstream()` (text frames), `to_log()` (log
  entries, in forwarding order), `to_save()` (item audio to write as WAV), `to_arm()` and `to_disarm()`
  (retrieve timers to start and to cancel), and `tools.to_start()` / `tools.to_arm()` when server tools are on.
  Each drain returns everything decided since the last call and forgets it; feeding several times before
  draining is allowed; the order inside each drain is the order decided.
- It never raises on input: any JSON value may stand in any field of a frame from either side. A field of the
  wrong type is not acted on (the frame is forwarded as it is), except where acting is a promise (a pinned
  `session.update` whose `session` is not an object is answered `invalid_value`); see docs/client-input.md.
- Its state is explicit: `state` (`SessionState`: open, closing, closed) and the retrieve ledger
  (`retrieves`, who asked for each item's retrieve: `Asker`).

Everything is forwarded as the raw text it arrived as (docs/forwarding.md), except the few things the relay
interprets, each in its own module:
- audio formats (`relay.core.formats`), from `session.created`/`session.updated`, and each item's format at the
  time the item appeared; items, the audio that crossed for them, truncate clamping (`relay.core.items`);
- retrieve-after-done (`relay.core.afterdone`, `relay.core.retrieves`; docs/retrieve-after-done.md);
- pinned session fields, blocked client events, invalid client frames (here);
- answers to the relay's own frames: an `error` whose `error.event_id` starts with `relay_` is never the
  client's (here, after retrieves, tools and resume had their look);
- server-side tools (`relay.core.tools`; docs/tools.md); the upstream's lifecycle and resume
  (`relay.core.upstream`; docs/resume.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from relay.core import events as ev
from relay.core.formats import AudioFormat
from relay.core.frames import answers_relay, dumps_text, error_event, may_name_the_relay, parse_event, wire_len
from relay.core.items import ItemBook
from relay.core.keptaudio import KeptAudioBudget
from relay.core.outbox import LogEntry
from relay.core.policy import SessionPolicy
from relay.core.toolset import ToolCall, ToolOutcome
from relay.core.upstream import SessionState, UpstreamSide

# Client requests a resume sends again when the dropped upstream never answered them (docs/resume.md).
_REQUESTS: Final = frozenset({ev.RESPONSE_CREATE, ev.INPUT_AUDIO_BUFFER_COMMIT})

# Stream deltas: read only by their observer (if any) and forwarded. No relay answer, relay.* name, resume
# bookkeeping or after-forward trigger can be one of them, so they skip those checks (a property test compares both
# paths).
_STREAM_DELTAS: Final = frozenset(
    {ev.RESPONSE_OUTPUT_AUDIO_DELTA, ev.RESPONSE_OUTPUT_TEXT_DELTA, ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA}
)

# The server events whose content the core reads (formats, items, audio), by type: each returns the audio format
# the event's audio is in, for its log summary. Every other server event is forwarded unread.
_OBSERVERS: Final[dict[str, Callable[[ItemBook, dict[str, Any]], AudioFormat | None]]] = {
    ev.SESSION_CREATED: ItemBook._on_session_config,
    ev.SESSION_UPDATED: ItemBook._on_session_config,
    ev.ERROR: ItemBook._on_error,
    ev.RESPONSE_OUTPUT_AUDIO_DELTA: ItemBook._on_output_audio_delta,
    ev.INPUT_AUDIO_BUFFER_SPEECH_STARTED: ItemBook._on_speech_started,
    ev.INPUT_AUDIO_BUFFER_SPEECH_STOPPED: ItemBook._on_speech_stopped,
    ev.INPUT_AUDIO_BUFFER_COMMITTED: ItemBook._on_committed,
    ev.CONVERSATION_ITEM_ADDED: ItemBook._on_item_added,
    ev.CONVERSATION_ITEM_CREATED: ItemBook._on_item_added,
    ev.RESPONSE_OUTPUT_ITEM_ADDED: ItemBook._on_item_added,
    ev.CONVERSATION_ITEM_RETRIEVED: ItemBook._on_item_retrieved,
}


class RelaySession(UpstreamSide):
    """State and decisions of one client<->upstream session. See the module docstring for how to drive it."""

    def __init__(self, policy: SessionPolicy, kept_audio: KeptAudioBudget | None = None) -> None:
        super().__init__(policy, kept_audio)

    @property
    def closing(self) -> bool:
        """Nothing is forwarded any more (the session is closing or closed)."""
        return self.state is not SessionState.OPEN

    # ---- client -> upstream ---------------------------------------------------------------------------
    def receive_client_binary(self, size: int) -> None:
        self._reject_client(ev.CODE_BINARY_NOT_SUPPORTED, "binary frames are not supported; send JSON text", None)

    def receive_client_text(self, text: str) -> None:
        if self.closing:
            return
        if self.tools is not None and self.tools.holding:
            self.tools.hold(text)  # behind a held response.create, in order
            self._drain_tools()  # a hold grown past its bound lets everything go
            return
        event = parse_event(text)
        if event is None:
            self._reject_client(ev.CODE_INVALID_JSON, "the frame is not a JSON object", None)
            return
        kind = event.get("type")
        event_id = event.get("event_id")
        if not isinstance(kind, str):
            self._reject_client(ev.CODE_MISSING_TYPE, "the event has no string `type`", event_id)
            return
        if kind in self.policy.blocked_client_events:
            self._reject_client(ev.CODE_EVENT_BLOCKED, f"event type {kind!r} is blocked by the relay's operator", event_id)
            return

        changed: dict[str, Any] | None = None
        if kind == ev.INPUT_AUDIO_BUFFER_APPEND:
            self._note_append(event)
        elif kind == ev.SESSION_UPDATE and self.policy.pinned_session:
            if "session" in event and not isinstance(event["session"], dict):
                # The operator's fields cannot be merged into it, and forwarding it unpinned breaks the pin.
                self._reject_client(ev.CODE_INVALID_VALUE, "`session` must be an object", event_id, param="session")
                return
            changed = self._pin(event)
        elif kind == ev.CONVERSATION_ITEM_TRUNCATE and self.policy.clamp_truncate:
            changed = self._clamp_truncate(event)
        elif kind == ev.CONVERSATION_ITEM_RETRIEVE:
            item_id = event.get("item_id")
            if isinstance(item_id, str):
                self.retrieves.client_asked(item_id, event_id)
        elif kind in (ev.INPUT_AUDIO_BUFFER_CLEAR,):
            self._uncommitted_start_ms = self._appended_ms
        if self.tools is not None:
            verdict = self.tools.on_client_event(event, kind, changed)
            if verdict.action == "reject":
                self._reject_client(verdict.code, verdict.message, event_id, param=verdict.param)
                return
            if verdict.action == "hold":
                self.tools.hold(text)
                self._drain_tools()
                return
            changed = verdict.event if verdict.event is not None else changed

        if self._settle:
            self._settle_items()
        if changed is None:
            record = LogEntry("client", kind, event, bytes=wire_len(text), audio_format=self.input_format)
            if self._gap is None:
                self._upstream.append(text)
                self.log(record)
            else:
                self._hold_in_gap(text, kind, event, record)
        else:
            out = dumps_text(changed)
            record = LogEntry("client", kind, changed, bytes=wire_len(out), client_event=event, audio_format=self.input_format)
            if self._gap is None:
                self._upstream.append(out)
                self.log(record)
            else:
                self._hold_in_gap(out, kind, changed, record)
        if kind == ev.SESSION_UPDATE:
            self._session_update_sent(event if changed is None else changed, text if changed is None else out)
            if self._restore_echo is not None:
                self._restore_echo.config = False  # the next session.updated answers the client
        if self.resume is not None and kind in _REQUESTS:
            self.resume.request_sent(kind, event_id, text if changed is None else out)

    def _reject_client(self, code: str, message: str, event_id: object, *, param: str | None = None) -> None:
        event = error_event(code, message, event_id=event_id, param=param)
        self._send_client_event(event)
        record: dict[str, Any] = {"code": code, "message": message}
        if param is not None:
            record["param"] = param
        if isinstance(event_id, str):
            record["event_id"] = event_id
        self.log_relay(ev.RELAY_CLIENT_ERROR, record)

    def internal_error(self, text: str | None, error: str, traceback: str) -> None:
        """Handling one client frame raised (a relay bug): answer that frame `relay_error`, log the traceback;
        the session goes on."""
        event = parse_event(text) if text is not None else None
        event_id = event.get("event_id") if event is not None else None
        self.log_relay(ev.RELAY_INTERNAL_ERROR, {"error": error, "traceback": traceback})
        self._reject_client(ev.CODE_RELAY_ERROR, "the relay failed to handle this event", event_id)

    def upstream_internal_error(self, error: str, traceback: str) -> None:
        """Handling one upstream frame raised (a relay bug): log the traceback; the session goes on. The client is
        not sent an `error` (several client libraries treat any `error` as fatal)."""
        self.log_relay(ev.RELAY_INTERNAL_ERROR, {"error": error, "traceback": traceback, "dir": "server"})

    # ---- upstream -> client ---------------------------------------------------------------------------
    def receive_server_text(self, text: str) -> None:
        self._receive_server_text(text)
        if self._settle:
            self._settle_items()

    def _receive_server_text(self, text: str) -> None:
        if self._restore is not None:
            self._restore_answer(text)
            return
        if self.closing:
            # Answers to pending retrieves are still read while the session winds down; nothing is forwarded.
            event = parse_event(text)
            if event is not None and self._is_relay_answer(event):
                self._handle_relay_answer(event, wire_len(text))
            return
        event = parse_event(text)
        if not self._upstream_connected_logged:
            self._log_upstream_connected(event)
            if event is not None and event.get("type") == ev.SESSION_CREATED:
                self._client_has_session_created = True  # forwarded below, like every event
        if event is None:
            if may_name_the_relay(text):
                # A client's laxer parser might read it as the relay's own event (or an answer to the relay's
                # frame), which only the relay may send: dropped, like a readable relay.* event.
                self.log_relay(ev.RELAY_UPSTREAM_EVENT_DROPPED, {"type": None, "invalid_json": True, "bytes": wire_len(text)})
                return
            # Not ours to judge: forward untouched, log what it was.
            self._client.append(text)
            self.log(LogEntry("server", None, {"invalid_json": True, "text": text[:4096]}, bytes=wire_len(text)))
            return
        kind = event.get("type")
        if kind in _STREAM_DELTAS and self.tools is None and self._restore_echo is None:
            fmt = self._observe_server_event(event, kind)
            self._client.append(text)
            self.log(LogEntry("server", kind, event, bytes=wire_len(text), audio_format=fmt))
            return
        if self._is_relay_answer(event):
            self._handle_relay_answer(event, wire_len(text))
            return
        if isinstance(kind, str) and kind.startswith("relay."):
            # Only the relay speaks relay.*: a spoofed relay.audio_saved could point a page at another host.
            self.log_relay(ev.RELAY_UPSTREAM_EVENT_DROPPED, {"type": kind[:128], "bytes": wire_len(text)})
            return
        if self._restore_echo is not None and self._restore_echo_taken(kind, event, text):
            return
        fmt = self._observe_server_event(event, kind)
        if self.resume is not None:
            # Every event the upstream sent, whether the client sees it or not (hidden server-tool traffic too):
            # a resume restores server-tool calls and their outputs, and must know a response ended.
            self.resume.on_server(kind, event)
        if self.tools is not None and self._tool_view(text, event, kind):
            return
        if kind == ev.ERROR and answers_relay(event):
            # The relay's own frame was answered (a pinned session.update, a re-sent append...): the relay's to
            # read, never the client's. The bookkeeping above and below still sees it.
            self.log(LogEntry("relay", kind, event, bytes=wire_len(text)))
        else:
            self._client.append(text)
            self.log(LogEntry("server", kind if isinstance(kind, str) else None, event, bytes=wire_len(text), audio_format=fmt))
        if kind in (ev.CONVERSATION_ITEM_RETRIEVED, ev.ERROR):
            self._retire_client_retrieve(event, kind)
        self._after_forward(event, kind)

    # ---- server-side tools (the rules live in relay.core.tools) --------------------------------------------
    def _tool_view(self, text: str, event: dict[str, Any], kind: object) -> bool:
        """Server-tool traffic: True when the event was handled here (hidden, or forwarded changed)."""
        assert self.tools is not None
        shown = self.tools.on_server_event(event, kind)
        if shown is event:
            self._drain_tools()
            return False
        record_type = kind if isinstance(kind, str) else None
        if shown is None:
            self.log(LogEntry("relay", record_type, event, bytes=wire_len(text)))
        else:
            out = dumps_text(shown)
            self._client.append(out)
            self.log(LogEntry("server", record_type, shown, bytes=wire_len(out), server_event=event))
            self._after_forward(shown, kind)
        self._drain_tools()
        return True

    def tool_call_finished(self, call: ToolCall, outcome: ToolOutcome) -> None:
        """The bridge ran a server tool: record it and, unless the session is ending, answer the model."""
        if self.tools is not None:
            self.tools.call_finished(call, outcome, send=not self.closing)
            self._drain_tools()

    def tool_hold_expired(self, generation: int) -> None:
        if self.tools is not None and not self.closing:
            self.tools.hold_expired(generation)
            self._drain_tools()

    def _drain_tools(self) -> None:
        assert self.tools is not None
        for frame in self.tools.to_upstream():
            self._send_relay_frame(frame)
        for record in self.tools.to_records():
            self.log_relay(ev.RELAY_TOOL_CALL, record)
        if not self.closing:
            for event in self.tools.to_client():
                self._send_client_event(event)
        for text in self.tools.to_release():
            self.receive_client_text(text)

    def _observe_server_event(self, event: dict[str, Any], kind: object) -> AudioFormat | None:
        """Update formats and item bookkeeping before forwarding; returns the audio format of this event."""
        observer = _OBSERVERS.get(kind) if isinstance(kind, str) else None
        return observer(self, event) if observer is not None else None

    def upstream_dropped(self, close_code: int | None, error: str) -> None:
        super().upstream_dropped(close_code, error)
        self._retrieves_lost_with_connection()

    # ---- the session's end ----------------------------------------------------------------------------
    def session_closing(self) -> None:
        """Stop forwarding: from here on only answers to the relay's own retrieves are taken in."""
        self.state = SessionState.CLOSING

    def session_closed(self) -> None:
        """Retrieves still unanswered are saved from the stream and logged as failed; then every piece of
        kept audio goes back to the process-wide budget."""
        self.state = SessionState.CLOSED
        self._give_up_pending_retrieves()
        self.release_kept_audio()

    def audio_saved(self, record: dict[str, Any]) -> None:
        """The bridge wrote a WAV: log `relay.audio_saved` and tell clients that asked for relay events."""
        self.log_relay(ev.RELAY_AUDIO_SAVED, record)
        if self.policy.relay_events and not self.closing:
            public: dict[str, Any] = {k: record[k] for k in ("item_id", "url", "duration_ms", "source") if k in record}
            self._send_client_event({"type": ev.RELAY_AUDIO_SAVED, "event_id": f"relay_saved_{record['item_id']}", **public})


"""The pure core of one relay session: frames in, actions out. No I/O, no asyncio, no clock.

Feed it what crosses the relay (`receive_client_text`, `receive_client_binary`, `receive_server_text`) and what
happens around it (`upstream_connected`, `retrieve_timed_out`, `session_closing`); then drain what to do, in the
order decided: `to_upstream()` (text frames), `to_client()` (text frames), `to_log()` (log entries, in forwarding
order), `to_save()` (item audio to write as WAV), `to_arm()` (retrieve timers to start).

It owns the few things the relay interprets (CONTRACT C4, C5, C6):
- the session's effective audio formats (from `session.created`/`session.updated`), and each item's format at
  the time the item appeared;
- retrieve-after-done: one `conversation.item.retrieve` per audio item, on the first sign the item is complete,
  answers matched by item id in request order, relay answers swallowed, errors matched by event_id;
- the audio that crossed the relay per item, kept (bounded per item, and process-wide through a shared
  `KeptAudioBudget`) as a fallback when a retrieve has no audio;
- truncate clamping, pinned session fields, blocked client events, invalid client frames;
- server-side tools, through the hooks of `relay.tools.state` (docs/tools.md).
Everything else is forwarded as the raw text it arrived as. Any JSON value may stand in any field of a frame from
either side: a field of the wrong type is not acted on (the frame is forwarded as it is), except where acting is a
promise (a pinned `session.update` whose `session` is not an object is answered `invalid_value`); see
docs/client-input.md. Nothing per item or per turn outlives its use: a saved item is forgotten (only its id and
forwarded audio length stay, for the last `MAX_FINISHED_ITEMS`); items never finished are bounded by
`MAX_TRACKED_ITEMS`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import orjson

from relay.core import events as ev
from relay.core.keptaudio import KeptAudio, KeptAudioBudget
from relay.tools.config import ToolSet
from relay.tools.state import RELAY_TOOL_CALL, ToolCall, ToolOutcome, ToolState

if TYPE_CHECKING:  # relay.core.resume builds on this module; the core only holds its objects
    from relay.core.resume import GapQueue, Restore, ResumePolicy, ResumeState

MAX_JSON_DEPTH: Final = 512
ORJSON_MAX_DEPTH: Final = 254  # orjson.dumps refuses deeper values; see `dumps_text`
# Items whose bookkeeping (format, forwarded audio for truncate clamping) is remembered per session; older ones
# with no retrieve in flight are forgotten, so a session's state does not grow with its number of turns.
MAX_TRACKED_ITEMS: Final = 256
# Items already saved (or done without audio) are forgotten at once; their ids are remembered, with the audio
# forwarded for them (a barge-in truncate usually comes after the item was saved), for this many items.
MAX_FINISHED_ITEMS: Final = 64
# Client retrieves awaiting an answer per session; past this the oldest is forgotten (an upstream that never
# answers must not make the relay remember every request).
MAX_CLIENT_RETRIEVES: Final = 256
VAD_LAG_MARGIN_MS: Final = 2000.0  # how late a server's speech_started may name an onset, beyond its prefix padding
# Item ids become file names (<data_dir>/sessions/<sid>/<item_id>.wav): anything else is never saved (C5).
SAFE_ITEM_ID_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")  # fullmatch only: `$` lets "\n" by
_AUDIO_CONTENT_TYPES: Final = frozenset({"input_audio", "output_audio", "audio"})


@dataclass(frozen=True)
class AudioFormat:
    """An audio wire format: `audio/pcm` at `rate`, or G.711 (`audio/pcmu`, `audio/pcma`) at 8 kHz."""

    type: str = "audio/pcm"
    rate: int = 24000

    # Derived once: they are read several times per audio frame.
    sample_width: int = field(init=False, repr=False, compare=False)
    bytes_per_second: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        width = 1 if self.type in ("audio/pcmu", "audio/pcma") else 2
        object.__setattr__(self, "sample_width", width)
        object.__setattr__(self, "bytes_per_second", self.rate * width)

    def ms(self, n_bytes: int) -> float:
        return n_bytes * 1000.0 / self.bytes_per_second if self.bytes_per_second else 0.0

    @classmethod
    def from_config(cls, value: object, default: AudioFormat) -> AudioFormat:
        if not isinstance(value, dict):
            return default
        kind = value.get("type", default.type)
        if not isinstance(kind, str):
            return default
        if kind in ("audio/pcmu", "audio/pcma"):
            return cls(kind, 8000)
        rate = value.get("rate", default.rate if kind == default.type else 24000)
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            rate = default.rate
        return cls(kind, rate)


DEFAULT_FORMAT: Final = AudioFormat()


@dataclass(frozen=True)
class SessionPolicy:
    """What the operator configured for every session (a slice of Settings the core needs)."""

    retrieve_after_done: bool = True
    clamp_truncate: bool = True
    pinned_session: dict[str, Any] = field(default_factory=dict)
    blocked_client_events: frozenset[str] = frozenset()
    max_item_audio_seconds: float = 120.0
    relay_events: bool = False
    tools: ToolSet | None = None  # server-side tools (relay.tools; docs/tools.md)
    resume: ResumePolicy | None = None  # None: a dropped upstream ends the session (docs/resume.md)


@dataclass(slots=True)
class LogEntry:
    """One record-to-be. The event log stamps seq/ts/t_ms and summarizes audio once the frame is forwarded."""

    dir: str  # "client" | "server" | "relay"
    type: str | None
    event: Any
    bytes: int | None = None
    client_event: Any = None
    audio_format: AudioFormat | None = None  # the format audio in `event` is in, for its summary
    server_event: Any = None  # only on a changed server frame: what arrived


@dataclass(frozen=True)
class AudioToSave:
    item_id: str
    pcm: bytes  # as on the wire in `format` (PCM16 or G.711 bytes)
    format: AudioFormat
    source: str  # "retrieved" | "stream"


@dataclass
class _Item:
    item_id: str
    role: str | None = None  # "user" | "assistant" | None (unknown yet)
    format: AudioFormat | None = None
    has_audio: bool = False
    retrieve_sent: bool = False
    saved: bool = False
    # Deltas as received (base64), decoded only if a fallback save needs them: most items never do.
    output_audio: list[KeptAudio] = field(default_factory=list)
    output_audio_bytes: int = 0
    output_forwarded_bytes: int = 0
    input_start_ms: float | None = None
    input_end_ms: float | None = None


class _InputChunk(NamedTuple):
    """One append, as received."""

    start_ms: float
    end_ms: float
    audio: KeptAudio  # base64, decoded only if a fallback save needs it
    bytes_per_second: int
    sample_width: int

    def offset(self, ms: float) -> int:
        """Byte offset of `ms` milliseconds into this chunk, on a sample boundary."""
        n = int(ms * self.bytes_per_second / 1000.0)
        return n - n % self.sample_width


def _is_audio_part(part: object) -> bool:
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    return isinstance(kind, str) and kind in _AUDIO_CONTENT_TYPES


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
        return None
    if not isinstance(value, dict):
        return None
    # Cheap guards first: a flat object (every audio event) cannot be deep; only frames with many brackets can.
    for child in value.values():
        if isinstance(child, (dict, list)):
            break
    else:
        return value
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and json_depth_exceeds(value, MAX_JSON_DEPTH):
        return None
    return value


def wire_len(text: str) -> int:
    """The frame's length on the wire (UTF-8 bytes); isascii() is O(1) on CPython, so ASCII frames cost nothing."""
    return len(text) if text.isascii() else len(text.encode())


def b64_decoded_len(text: str) -> int:
    """Decoded length of base64 text without decoding it (exact for valid base64)."""
    n = len(text)
    return n * 3 // 4 - text.endswith("=") - text.endswith("==")


def _b64(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _answers_resume(error: dict[str, Any]) -> bool:
    """An `error` answering a frame a resume sent (its event_id starts with `relay_resume`): the relay's, not
    the client's."""
    detail = error.get("error")
    event_id = detail.get("event_id") if isinstance(detail, dict) else None
    return isinstance(event_id, str) and event_id.startswith("relay_resume")


def dumps_text(value: Any) -> str:
    """JSON text of `value`. orjson stops at 255 levels of nesting, and frames may nest up to 512, so deeper
    values go through the standard library instead (rare: only hand-made frames nest that deep)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        if not json_depth_exceeds(value, ORJSON_MAX_DEPTH):
            raise
        return json.dumps(value, separators=(",", ":"))


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


class RelaySession:
    """State and decisions of one client<->upstream session. See the module docstring for the contract."""

    def __init__(self, policy: SessionPolicy, kept_audio: KeptAudioBudget | None = None) -> None:
        self.policy = policy
        # Shared by every session of a process (the bridge passes one in); a lone core gets its own.
        self.kept_audio = kept_audio if kept_audio is not None else KeptAudioBudget()
        self.input_format = DEFAULT_FORMAT
        self.output_format = DEFAULT_FORMAT
        self.upstream_session_id: str | None = None
        self._items: dict[str, _Item] = {}
        # Forgotten items: id -> ms of audio forwarded for it (None: not an audio item), the newest last.
        self._finished: dict[str, int | None] = {}
        self._settle: list[str] = []  # items that may be finished, looked at once the current frame is handled
        # Per item id, who asked for a retrieve, in request order: "relay", "relay_late" (timed out), "client".
        self._retrieve_askers: dict[str, deque[str]] = {}
        # A client retrieve's event_id -> its item id, so an `error` answering it retires its place in line.
        self._client_retrieves: dict[str, str] = {}
        self._input_chunks: deque[_InputChunk] = deque()
        self._appended_ms = 0.0
        # Where the upstream's audio time 0 lies on this session's appended-audio timeline: 0 until a resume,
        # whose new upstream counts from the first append it was sent.
        self._upstream_audio_origin_ms = 0.0
        self._resent_input_from_ms: float | None = None  # audio a resume re-sends: kept until it is committed
        self._uncommitted_start_ms = 0.0
        # Server VAD's prefix padding (None: manual turns), and the starts of user items that may still need
        # their audio from the stream: together they say how much appended audio must be kept (`_trim_input`).
        self._vad_prefix_ms: float | None = 300.0  # the API's default turn detection: server VAD, 300 ms padding
        self._unsaved_user_starts: dict[str, float] = {}
        self._pending_speech: tuple[float, float | None] | None = None
        self._upstream: list[str] = []
        self._client: list[str] = []
        self._log: list[LogEntry] = []
        self._save: list[AudioToSave] = []
        self._arm: list[str] = []
        self._disarm: list[str] = []
        self._connect_ms: float | None = None
        self._upstream_connected_logged = False
        self.closing = False
        self.counts = {"client": 0, "server": 0, "relay": 0}
        self.tools = ToolState(policy.tools, relay_events=policy.relay_events) if policy.tools is not None else None
        # Upstream resume (docs/resume.md): what a new upstream needs, the client frames held while there is
        # none, and the rebuild in progress on a new one.
        self.resume: ResumeState | None = None
        if policy.resume is not None:
            from relay.core.resume import ResumeState  # here: relay.core.resume imports this module

            self.resume = ResumeState(policy.resume)
        self._gap: GapQueue | None = None
        self._restore: Restore | None = None

    # ---- drains ---------------------------------------------------------------------------------------
    def to_upstream(self) -> list[str]:
        out, self._upstream = self._upstream, []
        return out

    def to_client(self) -> list[str]:
        out, self._client = self._client, []
        return out

    def to_log(self) -> list[LogEntry]:
        out, self._log = self._log, []
        return out

    def to_save(self) -> list[AudioToSave]:
        out, self._save = self._save, []
        return out

    def to_arm(self) -> list[str]:
        out, self._arm = self._arm, []
        return out

    def to_disarm(self) -> list[str]:
        """Items whose retrieve timer is no longer needed (answered, failed or given up)."""
        out, self._disarm = self._disarm, []
        return out

    def log(self, entry: LogEntry) -> None:
        self.counts[entry.dir] = self.counts.get(entry.dir, 0) + 1
        self._log.append(entry)

    def log_relay(self, record_type: str, event: dict[str, Any]) -> None:
        self.log(LogEntry("relay", record_type, event))

    # ---- lifecycle ------------------------------------------------------------------------------------
    def upstream_connected(self, connect_ms: float) -> None:
        """The upstream handshake completed: send the pinned session, if any, before any client frame."""
        self._connect_ms = connect_ms
        if self.policy.pinned_session or self.tools is not None:
            session = deep_merge({"type": "realtime"}, self.policy.pinned_session)
            if self.tools is not None:
                session = self.tools.merge_tools(session)
            update = {"type": ev.SESSION_UPDATE, "event_id": "relay_pinned_session", "session": session}
            self._send_relay_frame(update)

    def _send_relay_frame(self, event: dict[str, Any], audio_format: AudioFormat | None = None) -> None:
        text = dumps_text(event)
        self._upstream.append(text)
        self.log(LogEntry("relay", event["type"], event, bytes=wire_len(text), audio_format=audio_format))

    def _send_client_event(self, event: dict[str, Any]) -> str:
        text = dumps_text(event)
        self._client.append(text)
        return text

    def send_client_error(self, code: str, message: str, *, error_type: str = "server_error") -> None:
        """A lifecycle error for the client (upstream unavailable, expired...), logged as a relay `error`."""
        event = error_event(code, message, error_type=error_type)
        text = self._send_client_event(event)
        self.log(LogEntry("relay", ev.ERROR, event, bytes=wire_len(text)))

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
                self._retrieve_askers.setdefault(item_id, deque()).append("client")
                if isinstance(event_id, str):
                    self._client_retrieves.pop(event_id, None)  # re-inserted last: the oldest stays first
                    self._client_retrieves[event_id] = item_id
                    if len(self._client_retrieves) > MAX_CLIENT_RETRIEVES:
                        del self._client_retrieves[next(iter(self._client_retrieves))]
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
            if self._gap is None:
                self._upstream.append(text)
            else:
                self._hold_in_gap(text, kind, event)
            self.log(LogEntry("client", kind, event, bytes=wire_len(text), audio_format=self.input_format))
        else:
            out = dumps_text(changed)
            if self._gap is None:
                self._upstream.append(out)
            else:
                self._hold_in_gap(out, kind, changed)
            self.log(LogEntry("client", kind, changed, bytes=wire_len(out), client_event=event, audio_format=self.input_format))
        if kind == ev.SESSION_UPDATE and self.resume is not None:
            self.resume.session_update_sent(event if changed is None else changed, text if changed is None else out)

    def _reject_client(self, code: str, message: str, event_id: object, *, param: str | None = None) -> None:
        event = error_event(code, message, event_id=event_id, param=param)
        self._send_client_event(event)
        record: dict[str, Any] = {"code": code, "message": message}
        if param is not None:
            record["param"] = param
        if isinstance(event_id, str):
            record["event_id"] = event_id
        self.log_relay(ev.RELAY_CLIENT_ERROR, record)

    def _pin(self, event: dict[str, Any]) -> dict[str, Any]:
        session = event.get("session")
        merged = deep_merge(session if isinstance(session, dict) else {}, self.policy.pinned_session)
        return {**event, "session": merged}

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

    def _clamp_truncate(self, event: dict[str, Any]) -> dict[str, Any] | None:
        item_id = event.get("item_id")
        end = event.get("audio_end_ms")
        if not isinstance(item_id, str) or not isinstance(end, (int, float)) or isinstance(end, bool):
            return None
        if item_id in self._finished:
            forwarded_ms = self._finished[item_id]
        else:
            item = self._items.get(item_id)
            forwarded_ms = self._forwarded_ms(item) if item is not None else None
        if forwarded_ms is None or end <= forwarded_ms:
            return None
        return {**event, "audio_end_ms": forwarded_ms}

    @staticmethod
    def _forwarded_ms(item: _Item) -> int | None:
        return int(item.format.ms(item.output_forwarded_bytes)) if item.format is not None else None

    def _note_append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            return
        fmt = self.input_format
        n_bytes = b64_decoded_len(audio)  # exact for valid base64; invalid audio is the upstream's to refuse
        start = self._appended_ms
        self._appended_ms = start + fmt.ms(n_bytes)
        if not self.policy.retrieve_after_done and self.resume is None:
            return  # nothing will be saved or re-sent: keep no stream copy
        kept = self.kept_audio.keep(audio, n_bytes)
        self._input_chunks.append(_InputChunk(start, self._appended_ms, kept, fmt.bytes_per_second, fmt.sample_width))
        self._trim_input()

    def _trim_input(self) -> None:
        """Drop appended audio no item can still need: before the uncommitted buffer (with server VAD, before
        what a speech onset could reach back to, with a margin for the server's detection lag), unless an
        unsaved user item starts there; never more than `max_item_audio_seconds`."""
        floor = self._uncommitted_start_ms
        if self._vad_prefix_ms is not None:
            floor = max(floor, self._appended_ms - self._vad_prefix_ms - VAD_LAG_MARGIN_MS)
        if self._unsaved_user_starts and self.policy.retrieve_after_done:  # (else kept only for a resume)
            floor = min(floor, min(self._unsaved_user_starts.values()))
        if self._resent_input_from_ms is not None:
            # After a resume the new upstream detects speech in re-sent audio late (by up to the whole gap):
            # keep that audio until its first commit.
            if self._uncommitted_start_ms > self._resent_input_from_ms:
                self._resent_input_from_ms = None
            else:
                floor = min(floor, self._resent_input_from_ms)
        floor = max(floor, self._appended_ms - self.policy.max_item_audio_seconds * 1000.0)
        chunks = self._input_chunks
        while chunks and chunks[0].end_ms <= floor:
            self.kept_audio.free(chunks.popleft().audio)

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
        if event is None:
            # Not ours to judge: forward untouched, log what it was.
            self._client.append(text)
            self.log(LogEntry("server", None, {"invalid_json": True, "text": text[:4096]}, bytes=wire_len(text)))
            return
        if self._is_relay_answer(event):
            self._handle_relay_answer(event, wire_len(text))
            return
        kind = event.get("type")
        if isinstance(kind, str) and kind.startswith("relay."):
            # Only the relay speaks relay.*: a spoofed relay.audio_saved could point a page at another host.
            self.log_relay(ev.RELAY_UPSTREAM_EVENT_DROPPED, {"type": kind[:128], "bytes": wire_len(text)})
            return
        if kind == ev.ERROR and self.resume is not None and _answers_resume(event):
            self.log(LogEntry("relay", kind, event, bytes=wire_len(text)))  # e.g. a re-sent append refused
            return
        fmt = self._observe_server_event(event, kind)
        if self.tools is not None and self._tool_view(text, event, kind):
            return
        self._client.append(text)
        self.log(LogEntry("server", kind if isinstance(kind, str) else None, event, bytes=wire_len(text), audio_format=fmt))
        if kind in (ev.CONVERSATION_ITEM_RETRIEVED, ev.ERROR):
            self._retire_client_retrieve(event, kind)
        self._after_forward(event, kind)
        if self.resume is not None:
            self.resume.on_server(kind, event)

    # ---- server-side tools (the rules live in relay.tools.state) -------------------------------------------
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
            out = orjson.dumps(shown).decode()
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
            self.log_relay(RELAY_TOOL_CALL, record)
        if not self.closing:
            for event in self.tools.to_client():
                self._send_client_event(event)
        for text in self.tools.to_release():
            self.receive_client_text(text)

    def _log_upstream_connected(self, event: dict[str, Any] | None) -> None:
        self._upstream_connected_logged = True
        if event is not None and event.get("type") == ev.SESSION_CREATED:
            session = event.get("session")
            if isinstance(session, dict) and isinstance(session.get("id"), str):
                self.upstream_session_id = session["id"]
        self.log_relay(
            ev.RELAY_UPSTREAM_CONNECTED,
            {"upstream_session_id": self.upstream_session_id, "connect_ms": self._connect_ms},
        )

    def _observe_server_event(self, event: dict[str, Any], kind: object) -> AudioFormat | None:
        """Update formats and item bookkeeping before forwarding; returns the audio format of this event."""
        if kind in (ev.SESSION_CREATED, ev.SESSION_UPDATED):
            session = event.get("session")
            if isinstance(session, dict):
                audio = session.get("audio")
                if isinstance(audio, dict):
                    self._observe_turn_detection(audio.get("input"))
                    for direction in ("input", "output"):
                        part = audio.get(direction)
                        if isinstance(part, dict) and "format" in part:
                            current = self.input_format if direction == "input" else self.output_format
                            new = AudioFormat.from_config(part["format"], current)
                            if direction == "input":
                                self.input_format = new
                            else:
                                self.output_format = new
            return None
        if kind == ev.RESPONSE_OUTPUT_AUDIO_DELTA:
            item_id = event.get("item_id")
            if isinstance(item_id, str):
                item = self._item(item_id, "assistant")
                item.has_audio = True
                delta = event.get("delta")
                if isinstance(delta, str):
                    n = b64_decoded_len(delta)
                    item.output_forwarded_bytes += n
                    cap = (item.format or self.output_format).bytes_per_second * self.policy.max_item_audio_seconds
                    if self.policy.retrieve_after_done and not item.saved and item.output_audio_bytes + n <= cap:
                        item.output_audio.append(self.kept_audio.keep(delta, n))
                        item.output_audio_bytes += n
                return item.format
            return self.output_format
        if kind == ev.INPUT_AUDIO_BUFFER_SPEECH_STARTED:
            start = event.get("audio_start_ms")
            item_id = event.get("item_id")
            if isinstance(item_id, str) and isinstance(start, (int, float)):
                item = self._item(item_id, "user")
                item.input_start_ms = float(start) + self._upstream_audio_origin_ms
                if not item.saved and self.policy.retrieve_after_done:
                    self._unsaved_user_starts[item_id] = item.input_start_ms
            return None
        if kind == ev.INPUT_AUDIO_BUFFER_SPEECH_STOPPED:
            end = event.get("audio_end_ms")
            item_id = event.get("item_id")
            if isinstance(item_id, str) and isinstance(end, (int, float)):
                item = self._item(item_id, "user")
                item.input_end_ms = float(end) + self._upstream_audio_origin_ms
            return None
        if kind == ev.INPUT_AUDIO_BUFFER_COMMITTED:
            item_id = event.get("item_id")
            if isinstance(item_id, str):
                item = self._item(item_id, "user")
                item.has_audio = True
                if item.input_start_ms is None:
                    item.input_start_ms = self._uncommitted_start_ms
                if item.input_end_ms is None:
                    item.input_end_ms = self._appended_ms
                if not item.saved and self.policy.retrieve_after_done:
                    self._unsaved_user_starts[item_id] = item.input_start_ms
                self._uncommitted_start_ms = item.input_end_ms
            return None
        if kind in (ev.CONVERSATION_ITEM_ADDED, ev.CONVERSATION_ITEM_CREATED, ev.RESPONSE_OUTPUT_ITEM_ADDED):
            self._observe_item(event.get("item"))
            return None
        if kind == ev.CONVERSATION_ITEM_RETRIEVED:
            raw_item = event.get("item")
            if isinstance(raw_item, dict):
                self._observe_item(raw_item)
                return self._items[raw_item["id"]].format if isinstance(raw_item.get("id"), str) else None
            return None
        return None

    def _observe_turn_detection(self, audio_input: object) -> None:
        if not isinstance(audio_input, dict) or "turn_detection" not in audio_input:
            return
        detection = audio_input["turn_detection"]
        if not isinstance(detection, dict):
            self._vad_prefix_ms = None  # manual turns: the whole uncommitted buffer may become an item
            return
        prefix = detection.get("prefix_padding_ms", 300)
        self._vad_prefix_ms = float(prefix) if isinstance(prefix, (int, float)) and prefix >= 0 else 300.0

    def _item(self, item_id: str, role: str | None) -> _Item:
        item = self._items.get(item_id)
        if item is None:
            item = _Item(item_id)
            self._items[item_id] = item
            if item_id in self._finished:
                # Seen again after it was forgotten (a late done, a client's retrieve): never retrieved twice.
                item.saved = item.retrieve_sent = True
                self._settle.append(item_id)
            if len(self._items) > MAX_TRACKED_ITEMS:
                self._forget_old_items()
        if item.role is None and role is not None:
            item.role = role
        if item.format is None and item.role is not None:
            item.format = self.input_format if item.role == "user" else self.output_format
        return item

    def _observe_item(self, raw: object) -> _Item | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            return None
        role = raw.get("role") if raw.get("type", "message") == "message" else None
        item = self._item(raw["id"], role if isinstance(role, str) and role in ("user", "assistant") else None)
        content = raw.get("content")
        if isinstance(content, list) and any(_is_audio_part(c) for c in content):
            item.has_audio = True
            if item.role is None:
                item.role = (
                    "user" if any(isinstance(c, dict) and c.get("type") == "input_audio" for c in content) else "assistant"
                )
            if item.format is None:
                item.format = self.input_format if item.role == "user" else self.output_format
        return item

    def _after_forward(self, event: dict[str, Any], kind: object) -> None:
        """Retrieve-after-done triggers (C5): item done, or the other signs of completion seen live."""
        item: _Item | None = None
        if kind in (ev.CONVERSATION_ITEM_DONE, ev.RESPONSE_OUTPUT_ITEM_DONE):
            item = self._observe_item(event.get("item"))
            if item is not None and (not item.has_audio or not self.policy.retrieve_after_done):
                self._finish(item)  # nothing to retrieve or save: only its truncate bookkeeping stays
                return
        elif kind == ev.INPUT_AUDIO_TRANSCRIPTION_COMPLETED and self.policy.retrieve_after_done:
            item_id = event.get("item_id")
            if isinstance(item_id, str):
                item = self._item(item_id, "user")
                item.has_audio = True
        if item is not None and item.has_audio and not item.retrieve_sent:
            item.retrieve_sent = True
            if not SAFE_ITEM_ID_RE.fullmatch(item.item_id):
                self._finish(item)
                self.log_relay(ev.RELAY_AUDIO_NOT_SAVED, {"item_id": item.item_id, "reason": "unsafe_item_id"})
                return
            self._retrieve_askers.setdefault(item.item_id, deque()).append("relay")
            self._send_relay_frame(
                {
                    "type": ev.CONVERSATION_ITEM_RETRIEVE,
                    "item_id": item.item_id,
                    "event_id": ev.RELAY_RETRIEVE_EVENT_ID_PREFIX + item.item_id,
                }
            )
            self._arm.append(item.item_id)

    def _retire_client_retrieve(self, event: dict[str, Any], kind: object) -> None:
        """A forwarded answer to a client's retrieve leaves the line; its audio is saved too (C5)."""
        if kind == ev.ERROR:
            error = event.get("error")
            event_id = error.get("event_id") if isinstance(error, dict) else None
            item_id = self._client_retrieves.pop(event_id, None) if isinstance(event_id, str) else None
            askers = self._retrieve_askers.get(item_id) if item_id is not None else None
            if askers and "client" in askers:
                askers.remove("client")
                self._drop_empty_askers(item_id)
            return
        raw = event.get("item")
        item_id = raw.get("id") if isinstance(raw, dict) else None
        askers = self._retrieve_askers.get(item_id) if isinstance(item_id, str) else None
        if not askers or askers[0] != "client":
            return
        askers.popleft()
        self._drop_empty_askers(item_id)
        for event_id, asked_for in self._client_retrieves.items():
            if asked_for == item_id:
                del self._client_retrieves[event_id]
                break
        item = self._items.get(item_id)  # type: ignore[arg-type]
        if self.policy.retrieve_after_done and item is not None and item.has_audio and isinstance(raw, dict):
            self._save_retrieved(item, raw, fallback=False)

    # ---- answers to the relay's retrieves -------------------------------------------------------------
    def _is_relay_answer(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind == ev.CONVERSATION_ITEM_RETRIEVED:
            item = event.get("item")
            item_id = item.get("id") if isinstance(item, dict) else None
            askers = self._retrieve_askers.get(item_id) if isinstance(item_id, str) else None
            return bool(askers) and askers[0] in ("relay", "relay_late")  # type: ignore[index]
        if kind == ev.ERROR:
            error = event.get("error")
            event_id = error.get("event_id") if isinstance(error, dict) else None
            if not isinstance(event_id, str) or not event_id.startswith(ev.RELAY_RETRIEVE_EVENT_ID_PREFIX):
                return False
            # Only when the relay really asked: a client may use the same prefix for its own event ids.
            askers = self._retrieve_askers.get(event_id[len(ev.RELAY_RETRIEVE_EVENT_ID_PREFIX) :])
            return askers is not None and ("relay" in askers or "relay_late" in askers)
        return False

    def _handle_relay_answer(self, event: dict[str, Any], size: int) -> None:
        kind = event["type"]
        if kind == ev.CONVERSATION_ITEM_RETRIEVED:
            item_raw = event["item"]
            item_id: str = item_raw["id"]
            asker = self._retrieve_askers[item_id].popleft()
            self._drop_empty_askers(item_id)
            if asker == "relay":
                self._disarm.append(item_id)
            item = self._observe_item(item_raw)
            self.log(LogEntry("relay", kind, event, bytes=size, audio_format=item.format if item else None))
            if asker == "relay" and item is not None:
                self._save_retrieved(item, item_raw)
            return
        item_id = event["error"]["event_id"][len(ev.RELAY_RETRIEVE_EVENT_ID_PREFIX) :]
        askers = self._retrieve_askers.get(item_id)
        asker = askers.popleft() if askers and askers[0] in ("relay", "relay_late") else "relay_late"
        self._drop_empty_askers(item_id)
        self.log(LogEntry("relay", kind, event, bytes=size))
        if asker == "relay":
            self._disarm.append(item_id)
            self.log_relay(ev.RELAY_RETRIEVE_FAILED, {"item_id": item_id, "reason": "error", "error": event.get("error")})
            item = self._items.get(item_id)
            if item is not None:
                self._save_from_stream(item)

    def _save_retrieved(self, item: _Item, raw: dict[str, Any], *, fallback: bool = True) -> None:
        pcm = bytearray()
        content = raw.get("content")
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and isinstance(part.get("audio"), str):
                decoded = _b64(part["audio"])
                if decoded:
                    pcm += decoded
        if pcm and item.format is not None:
            self._queue_save(item, bytes(pcm), "retrieved")
        elif fallback:
            self._save_from_stream(item)

    def retrieve_timed_out(self, item_id: str) -> None:
        """The bridge's timer for this item's retrieve fired; a no-op when the answer already came."""
        askers = self._retrieve_askers.get(item_id)
        if not askers or "relay" not in askers:
            return
        askers[askers.index("relay")] = "relay_late"
        self._disarm.append(item_id)  # the timer that fired is spent
        self.log_relay(ev.RELAY_RETRIEVE_FAILED, {"item_id": item_id, "reason": "timeout"})
        item = self._items.get(item_id)
        if item is not None:
            self._save_from_stream(item)

    @property
    def pending_retrieves(self) -> list[str]:
        return [item_id for item_id, askers in self._retrieve_askers.items() if "relay" in askers]

    def session_closing(self) -> None:
        """Stop forwarding: from here on only answers to the relay's own retrieves are taken in."""
        self.closing = True

    def session_closed(self) -> None:
        """Retrieves still unanswered are saved from the stream and logged as failed; then every piece of
        kept audio goes back to the process-wide budget."""
        for item_id in self.pending_retrieves:
            askers = self._retrieve_askers[item_id]
            askers[askers.index("relay")] = "relay_late"
            self.log_relay(ev.RELAY_RETRIEVE_FAILED, {"item_id": item_id, "reason": "session_closed"})
            item = self._items.get(item_id)
            if item is not None:
                self._save_from_stream(item)
        self.release_kept_audio()

    def release_kept_audio(self) -> None:
        """Give every kept piece of audio back (the session is over: nothing more will be saved)."""
        for item in self._items.values():
            self._free_output_audio(item)
        while self._input_chunks:
            self.kept_audio.free(self._input_chunks.popleft().audio)

    # ---- bounded bookkeeping --------------------------------------------------------------------------
    def _drop_empty_askers(self, item_id: object) -> None:
        if not isinstance(item_id, str):
            return
        askers = self._retrieve_askers.get(item_id)
        if askers is not None and not askers:
            del self._retrieve_askers[item_id]
            self._settle.append(item_id)

    def _finish(self, item: _Item) -> None:
        """Nothing more will be saved for `item`: let go of its audio; it is forgotten once no retrieve of it is
        in flight (`_settle_items`)."""
        item.saved = True
        self._unsaved_user_starts.pop(item.item_id, None)
        self._free_output_audio(item)
        self._settle.append(item.item_id)

    def _settle_items(self) -> None:
        """Forget finished items nobody waits on; remember their ids (bounded) so they are never retrieved twice."""
        candidates, self._settle = self._settle, []
        for item_id in candidates:
            item = self._items.get(item_id)
            if item is None or not item.saved or item_id in self._retrieve_askers:
                continue
            del self._items[item_id]
            # Seen again after it was forgotten: what was known the first time stands.
            known = self._finished.pop(item_id, None)
            self._finished[item_id] = known if known is not None else self._forwarded_ms(item)
            if len(self._finished) > MAX_FINISHED_ITEMS:
                del self._finished[next(iter(self._finished))]

    def _free_output_audio(self, item: _Item) -> None:
        for piece in item.output_audio:
            self.kept_audio.free(piece)
        item.output_audio = []

    def _forget_old_items(self) -> None:
        """Forget the oldest items past `MAX_TRACKED_ITEMS`: first those with no retrieve in flight; past twice
        the bound, any (an upstream that never answers must not make the relay remember every item)."""
        excess = len(self._items) - MAX_TRACKED_ITEMS
        hard = len(self._items) > 2 * MAX_TRACKED_ITEMS
        for item_id in list(self._items)[:-1]:  # never the item being added
            if excess <= 0:
                break
            askers = self._retrieve_askers.get(item_id)
            if askers and not hard and ("relay" in askers or "client" in askers):
                continue
            item = self._items.pop(item_id)
            self._free_output_audio(item)
            self._unsaved_user_starts.pop(item_id, None)
            if self._retrieve_askers.pop(item_id, None) is not None:
                self._disarm.append(item_id)
            excess -= 1
        # Ids asked about that never became items (a client retrieving unknown ids whose errors carry no
        # event_id): the oldest go first.
        while len(self._retrieve_askers) > 2 * MAX_TRACKED_ITEMS:
            self._retrieve_askers.pop(next(iter(self._retrieve_askers)))

    # ---- saving ---------------------------------------------------------------------------------------
    def _save_from_stream(self, item: _Item) -> None:
        if item.saved or item.format is None:
            return
        if item.role == "user":
            pcm = self._input_span(item)
        elif any(piece.released for piece in item.output_audio):
            pcm = None
        else:
            pcm = b"".join(_b64(piece.data) or b"" for piece in item.output_audio)
        if pcm is None:
            # Part of its audio was given back to the process-wide budget: a WAV with holes would mislead.
            self._finish(item)
            self.log_relay(ev.RELAY_RETRIEVE_FAILED, {"item_id": item.item_id, "reason": "audio_released"})
            return
        self._queue_save(item, pcm, "stream")

    def _input_span(self, item: _Item) -> bytes | None:
        """The appended audio of a user item, or None when part of it was released for the budget."""
        start = item.input_start_ms if item.input_start_ms is not None else 0.0
        end = item.input_end_ms if item.input_end_ms is not None else self._appended_ms
        out = bytearray()
        for chunk in self._input_chunks:
            if chunk.end_ms <= start or chunk.start_ms >= end:
                continue
            if chunk.audio.released:
                return None
            pcm = _b64(chunk.audio.data)
            if pcm is None:
                continue
            lo = chunk.offset(max(0.0, start - chunk.start_ms))
            hi = chunk.offset(end - chunk.start_ms) if end < chunk.end_ms else len(pcm)
            out += pcm[lo:hi]
        return bytes(out)

    def _queue_save(self, item: _Item, pcm: bytes, source: str) -> None:
        assert item.format is not None
        self._finish(item)  # the stream copy is no longer needed once the item is saved
        if not SAFE_ITEM_ID_RE.fullmatch(item.item_id):
            return
        self._save.append(AudioToSave(item.item_id, pcm, item.format, source))

    def audio_saved(self, record: dict[str, Any]) -> None:
        """The bridge wrote a WAV: log `relay.audio_saved` and tell clients that asked for relay events."""
        self.log_relay(ev.RELAY_AUDIO_SAVED, record)
        if self.policy.relay_events and not self.closing:
            public: dict[str, Any] = {k: record[k] for k in ("item_id", "url", "duration_ms", "source") if k in record}
            self._send_client_event({"type": ev.RELAY_AUDIO_SAVED, "event_id": f"relay_saved_{record['item_id']}", **public})

    # ---- upstream resume (docs/resume.md) -------------------------------------------------------------
    # The bridge reconnects; the core tells the client, holds client frames, rebuilds the session on the new
    # upstream (hiding its answers, logged as `dir: relay`) and then sends what it held.

    def upstream_dropped(self, close_code: int | None, error: str) -> None:
        """The upstream dropped and a resume begins: forwarding to the client goes on, client frames are held."""
        assert self.resume is not None
        self.closing = False
        self._restore = None
        number, ended, self._gap = self.resume.dropped(self.uncommitted_audio(self.resume.policy.buffer_seconds * 1000.0))
        self._resent_input_from_ms = self._appended_ms - self._gap.audio_ms
        self.log_relay(ev.RELAY_UPSTREAM_INTERRUPTED, {"close_code": close_code, "error": error, "drop": number})
        if self.policy.relay_events:
            self._send_client_event(
                {"type": ev.RELAY_UPSTREAM_INTERRUPTED, "event_id": f"relay_interrupted_{number}", "close_code": close_code}
            )
        if ended is not None:
            text = self._send_client_event(ended)
            self.log(LogEntry("relay", ev.RESPONSE_DONE, ended, bytes=wire_len(text)))

    def begin_restore(self, attempt: int, connect_ms: float) -> None:
        """A new upstream is connected: send the effective configuration and the completed items."""
        assert self.resume is not None
        self._connect_ms = connect_ms
        self._restore = self.resume.restore(attempt, self._resume_overlay)
        for frame in self._restore.first_frames:
            self._send_relay_frame(frame)

    def _resume_overlay(self, session: dict[str, Any]) -> dict[str, Any]:
        """What the relay adds to every client `session.update` (`_pin`: the pins) goes over the resumed
        configuration too."""
        pinned: dict[str, Any] = self._pin({"session": session})["session"]
        return pinned

    @property
    def restore_finished(self) -> bool:
        return self._restore is not None and self._restore.done

    def _restore_answer(self, text: str) -> None:
        """An event of the new upstream while the restore runs: never forwarded, logged as the relay's."""
        assert self._restore is not None
        event = parse_event(text)
        kind = event.get("type") if event is not None else None
        if event is not None and kind in (ev.SESSION_CREATED, ev.SESSION_UPDATED):
            self._observe_server_event(event, kind)  # the audio formats in effect on the new upstream
            if kind == ev.SESSION_CREATED:
                self._upstream_connected_logged, self.upstream_session_id = False, None
                self._log_upstream_connected(event)
        record = event if event is not None else {"invalid_json": True, "text": text[:4096]}
        self.log(LogEntry("relay", kind if isinstance(kind, str) else None, record, bytes=wire_len(text)))
        for frame in self._restore.answer(event):
            self._send_relay_frame(frame)

    def restore_abandoned(self, attempt: int, error: str) -> None:
        """This attempt failed (no connection, or it dropped or stalled during the restore); held frames stay."""
        self.closing = False
        restore, self._restore = self._restore, None
        record: dict[str, Any] = {"attempt": attempt, "result": "failed", "error": error}
        if restore is not None:
            record["items_restored"] = restore.restored
        self.log_relay(ev.RELAY_UPSTREAM_RESUME_ATTEMPT, record)

    def finish_restore(self, attempt: int, downtime_ms: float) -> None:
        """The new upstream has the session: send what was held, in order, and tell the client."""
        assert self.resume is not None and self._restore is not None and self._gap is not None
        restore, self._restore = self._restore, None
        gap, self._gap = self._gap, None
        self.log_relay(ev.RELAY_UPSTREAM_RESUME_ATTEMPT, {"attempt": attempt, "result": "ok"})
        # What the new upstream hears is the last `gap.audio_ms` of the appended audio (older appends are dropped
        # first), so its audio time 0 is that far back on this session's timeline.
        self._upstream_audio_origin_ms = max(0.0, self._appended_ms - gap.audio_ms)
        self._uncommitted_start_ms = max(self._uncommitted_start_ms, self._upstream_audio_origin_ms)
        for frame in gap.drain(self.resume.drops):
            if isinstance(frame, str):
                self._upstream.append(frame)  # a client frame of the gap: logged when it arrived
            else:
                self._send_relay_frame(frame, self.input_format)  # audio re-sent: logged as a summary
        self.resume.resumes += 1
        items_dropped = self.resume.history.dropped + restore.refused
        record = {
            "attempt": attempt,
            "downtime_ms": round(downtime_ms, 3),
            "items_restored": restore.restored,
            "items_dropped": items_dropped,
            "config_refused": restore.config_refused,
            "frames_dropped": gap.dropped_frames,
            "audio_dropped_ms": round(gap.dropped_audio_ms, 3),
        }
        self.log_relay(ev.RELAY_UPSTREAM_RESUMED, record)
        if self.policy.relay_events:
            public = {key: record[key] for key in ("attempt", "downtime_ms", "items_restored", "items_dropped")}
            self._send_client_event(
                {"type": ev.RELAY_UPSTREAM_RESUMED, "event_id": f"relay_resumed_{self.resume.drops}", **public}
            )

    def resume_failed(self, attempts: int, downtime_ms: float, reason: str) -> None:
        """No new upstream (every attempt failed, or the session ended meanwhile): the held frames are dropped."""
        self._restore = None
        gap, self._gap = self._gap, None
        self.log_relay(
            ev.RELAY_UPSTREAM_RESUME_FAILED,
            {
                "attempts": attempts,
                "downtime_ms": round(downtime_ms, 3),
                "reason": reason,
                "frames_dropped": len(gap.entries) + gap.dropped_frames if gap is not None else 0,
            },
        )

    def uncommitted_audio(self, max_ms: float) -> list[tuple[str, float]]:
        """The appended audio no commit has taken yet, at most the last `max_ms` of it (whole appends), as
        (base64 audio, ms), oldest first. With server VAD only what a speech onset can still reach back to is
        kept at all (`_trim_input`), so an idle stream costs nothing more than it does for saving."""
        out: list[tuple[str, float]] = []
        total = 0.0
        for chunk in reversed(self._input_chunks):
            if chunk.end_ms <= self._uncommitted_start_ms:
                break
            ms = chunk.end_ms - chunk.start_ms
            if total + ms > max_ms or chunk.audio.data is None:  # released for the process-wide budget: the
                break  # re-sent audio stays one contiguous tail
            out.append((chunk.audio.data, ms))
            total += ms
        out.reverse()
        return out

    def _hold_in_gap(self, text: str, kind: str, event: dict[str, Any]) -> None:
        assert self._gap is not None
        audio_ms: float | None = None
        if kind == ev.INPUT_AUDIO_BUFFER_APPEND:
            audio = event.get("audio")
            audio_ms = self.input_format.ms(b64_decoded_len(audio)) if isinstance(audio, str) else 0.0
        self._gap.add(text, audio_ms)

"""One simulated realtime session: the protocol state machine behind one WebSocket (sans-I/O).

`SimSession` takes client frames (`receive_text`, `receive_binary`) and produces server events (`drain`).
It owns the effective session config, the input audio buffer and its VAD, the conversation items with their
audio, and at most one live response. A live response is streamed by `step_response()`, one chunk per call,
each returning the milliseconds of audio it carried so the adapter can pace it; client frames processed
between steps can cancel it (barge-in, `response.cancel`). Items that become complete are also queued for
`drain_completed()` (the adapter adds them to a REST conversation when the socket is tied to one).
No asyncio, no sockets, no clock: the server module does all I/O and timing.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from audio import pcm
from relay.core import events as ev
from relay.simulator import replies
from relay.simulator.config import (
    AudioFormat,
    Flavour,
    SessionConfigError,
    apply_session_update,
    default_session,
    input_format,
    output_format,
    turn_detection,
    validate_response_params,
    wants_audio,
)
from relay.simulator.knobs import Knobs
from relay.simulator.vad import EnergyVad

CHUNK_MS: Final = 40  # audio per output delta (the GA service sends 20..100 ms)
MIN_COMMIT_MS: Final = 100  # OpenAI rejects commits of less than 100 ms of audio
MAX_BUFFER_S: Final = 900  # uncommitted audio kept in manual-turn mode (older audio is dropped)
_IMPLEMENTED: Final = frozenset(
    {
        ev.SESSION_UPDATE,
        ev.INPUT_AUDIO_BUFFER_APPEND,
        ev.INPUT_AUDIO_BUFFER_COMMIT,
        ev.INPUT_AUDIO_BUFFER_CLEAR,
        ev.CONVERSATION_ITEM_CREATE,
        ev.CONVERSATION_ITEM_RETRIEVE,
        ev.CONVERSATION_ITEM_TRUNCATE,
        ev.CONVERSATION_ITEM_DELETE,
        ev.RESPONSE_CREATE,
        ev.RESPONSE_CANCEL,
    }
)


class IdMint:
    """Unique ids: a random per-session token and a counter, e.g. `item_3f9a1c0b000012`."""

    def __init__(self) -> None:
        self._token = secrets.token_hex(4)
        self._n = 0

    def __call__(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._token}{self._n:06d}"


@dataclass
class StoredItem:
    """A conversation item: its wire form (never with audio) and, for audio content, the PCM16 behind it."""

    item: dict[str, Any]
    audio: bytearray | None = None
    fmt: AudioFormat | None = None
    audio_index: int = 0

    def audio_ms(self) -> float:
        if self.audio is None or self.fmt is None:
            return 0.0
        return pcm.duration_ms(len(self.audio), self.fmt.rate)


class AudioArchive:
    """Item audio kept across sessions (bounded), so a test can ask what a retrieve would have answered."""

    def __init__(self, max_items: int = 10_000) -> None:
        self._items: OrderedDict[str, StoredItem] = OrderedDict()
        self._max = max_items

    def put(self, stored: StoredItem) -> None:
        self._items[stored.item["id"]] = stored
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def remove(self, item_id: str) -> None:
        self._items.pop(item_id, None)

    def retrieved_pcm(self, item_id: str) -> tuple[bytes, int] | None:
        stored = self._items.get(item_id)
        return None if stored is None else retrieved_pcm(stored)


def retrieved_wire(stored: StoredItem) -> bytes | None:
    """The audio bytes a retrieve of this item carries: post-processed, in the item's format."""
    if stored.audio is None or stored.fmt is None:
        return None
    return stored.fmt.from_pcm16(replies.post_process(bytes(stored.audio)))


def retrieved_pcm(stored: StoredItem) -> tuple[bytes, int] | None:
    """The PCM16 a client decodes from a retrieve of this item (post-processed; G.711 round-tripped)."""
    wire = retrieved_wire(stored)
    if wire is None or stored.fmt is None:
        return None
    return stored.fmt.to_pcm16(wire), stored.fmt.rate


@dataclass
class _Response:
    id: str
    modalities: list[str]
    metadata: dict[str, str] | None
    in_conversation: bool
    out_fmt: AudioFormat
    voice: Any
    text: str
    audio: bytes | None  # PCM16 at out_fmt.rate
    item: dict[str, Any]
    stored: StoredItem
    text_chunks: list[str]
    input_tokens: int
    cursor: int = 0  # bytes of `audio` sent
    text_cursor: int = 0  # text chunks sent
    sent_text: str = ""
    output: list[dict[str, Any]] = field(default_factory=list)

    @property
    def with_audio(self) -> bool:
        return self.audio is not None


@dataclass
class _Reply:
    kind: Literal["message", "function_call"]
    text: str = ""
    audio: bytes | None = None  # PCM16 at the output rate
    calls: list[tuple[str, str]] = field(default_factory=list)  # function calls: (name, arguments JSON)


def _schedule_text(text: str, steps: int) -> list[str]:
    """The text deltas of a response spread over its `steps` chunks ("" = no text delta at that step)."""
    deltas = replies.split_text(text, steps)
    if steps <= len(deltas):
        return deltas
    schedule = [""] * steps
    for index, delta in enumerate(deltas):
        schedule[index * steps // len(deltas)] = delta
    return schedule


class SimSession:
    """The protocol state of one realtime socket. Feed frames in, drain events out."""

    def __init__(
        self,
        flavour: Flavour,
        model: str,
        knobs: Knobs | None = None,
        *,
        archive: AudioArchive | None = None,
        conversation_id: str | None = None,
    ) -> None:
        self.flavour: Flavour = flavour
        self.knobs = knobs or Knobs()
        self.config = default_session(flavour, model)
        self._mint = IdMint()
        self._archive = archive
        self.conversation_id = conversation_id or self._mint("conv")
        self._out: list[dict[str, Any]] = []
        self._completed: list[dict[str, Any]] = []
        self._emitted = 0
        self._error_injected = False
        self.items: OrderedDict[str, StoredItem] = OrderedDict()
        self._response: _Response | None = None
        self._calls: dict[str, str] = {}  # call_id -> tool name
        # Input audio: the uncommitted buffer, in samples of the current input format since `_epoch_ms`.
        self._fmt = input_format(self.config)
        self._appended_ms = 0.0
        self._epoch_ms = 0.0
        self._epoch_samples = 0
        self._buf = bytearray()
        self._buf_first = 0  # epoch sample index of _buf[0]
        self._vad: EnergyVad | None = None
        self._speech_item: str | None = None
        self._speech_start_ms = 0
        self._reset_vad()

    # --- outputs ----------------------------------------------------------------------------------------

    def drain(self) -> list[dict[str, Any]]:
        out, self._out = self._out, []
        return out

    def drain_completed(self) -> list[dict[str, Any]]:
        """Items that became complete since the last call (wire form without audio)."""
        out, self._completed = self._completed, []
        return out

    @property
    def responding(self) -> bool:
        return self._response is not None

    @property
    def response_id(self) -> str | None:
        return None if self._response is None else self._response.id

    def _emit(self, type_: str, **fields: Any) -> None:
        event: dict[str, Any] = {"type": type_, "event_id": self._mint("event")}
        event.update(fields)
        self._out.append(event)
        self._emitted += 1
        if self.knobs.inject_error is not None and not self._error_injected and self._emitted >= self.knobs.inject_error:
            self._error_injected = True
            self._emit(
                ev.ERROR,
                error={
                    "type": "server_error",
                    "code": "injected_error",
                    "message": "Error injected by the simulator's inject_error knob.",
                    "param": None,
                    "event_id": None,
                },
            )

    def _error(
        self,
        code: str,
        message: str,
        param: str | None,
        event_id: str | None,
        kind: str = "invalid_request_error",
    ) -> None:
        self._emit(
            ev.ERROR,
            error={"type": kind, "code": code, "message": message, "param": param, "event_id": event_id},
        )

    def _item_added(self, item: dict[str, Any], previous: str | None) -> None:
        name = ev.CONVERSATION_ITEM_CREATED if self.knobs.item_created_name == "created" else ev.CONVERSATION_ITEM_ADDED
        self._emit(name, previous_item_id=previous, item=copy.deepcopy(item))

    def _item_done(self, item: dict[str, Any], previous: str | None) -> None:
        if not self.knobs.omit_item_done:
            self._emit(ev.CONVERSATION_ITEM_DONE, previous_item_id=previous, item=copy.deepcopy(item))

    def _complete(self, item: dict[str, Any]) -> None:
        self._completed.append(copy.deepcopy(item))

    # --- session start and config --------------------------------------------------------------------

    def start(self) -> None:
        self._emit(ev.SESSION_CREATED, session=copy.deepcopy(self.config))

    def _reset_vad(self) -> None:
        td = turn_detection(self.config)
        self._speech_item = None
        if td is None:
            self._vad = None
            return
        self._vad = EnergyVad(
            self._fmt.rate,
            td.threshold,
            td.silence_duration_ms,
            td.prefix_padding_ms,
            origin_ms=self._appended_ms,
        )
        # The new detector starts at the present: older buffered samples are never fed to it.

    def _new_epoch(self) -> None:
        """The input format changed: uncommitted audio in the old format is discarded."""
        self._fmt = input_format(self.config)
        self._epoch_ms = self._appended_ms
        self._epoch_samples = 0
        self._buf = bytearray()
        self._buf_first = 0

    # --- client frames -------------------------------------------------------------------------------

    def receive_binary(self) -> None:
        self._error("invalid_json", "Binary frames are not supported: send JSON text frames.", None, None)

    def receive_text(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError as exc:
            self._error("invalid_json", f"The frame is not valid JSON: {exc}", None, None)
            return
        self.receive_event(event)

    def receive_event(self, event: Any) -> None:
        if not isinstance(event, dict):
            self._error("invalid_json", "A client event must be a JSON object.", None, None)
            return
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        type_ = event.get("type")
        if not isinstance(type_, str):
            self._error("missing_required_parameter", "Missing required parameter: 'type'.", "type", event_id)
            return
        if type_ not in _IMPLEMENTED:
            self._error("invalid_value", f"Invalid value: '{type_}'. Unsupported client event type.", "type", event_id)
            return
        try:
            self._dispatch(type_, event, event_id)
        except SessionConfigError as exc:
            self._error(exc.code, exc.message, exc.param, event_id)

    def _dispatch(self, type_: str, event: dict[str, Any], event_id: str | None) -> None:
        if type_ == ev.SESSION_UPDATE:
            self._session_update(event)
        elif type_ == ev.INPUT_AUDIO_BUFFER_APPEND:
            self._append(event)
        elif type_ == ev.INPUT_AUDIO_BUFFER_COMMIT:
            self._commit(event_id)
        elif type_ == ev.INPUT_AUDIO_BUFFER_CLEAR:
            self._buf = bytearray()
            self._buf_first = self._epoch_samples
            self._reset_vad()
            self._emit(ev.INPUT_AUDIO_BUFFER_CLEARED)
        elif type_ == ev.CONVERSATION_ITEM_CREATE:
            self._item_create(event)
        elif type_ == ev.CONVERSATION_ITEM_RETRIEVE:
            self._retrieve(event, event_id)
        elif type_ == ev.CONVERSATION_ITEM_TRUNCATE:
            self._truncate(event)
        elif type_ == ev.CONVERSATION_ITEM_DELETE:
            self._delete(event)
        elif type_ == ev.RESPONSE_CREATE:
            self._response_create(event, event_id)
        elif type_ == ev.RESPONSE_CANCEL:
            self._response_cancel(event, event_id)

    def _session_update(self, event: dict[str, Any]) -> None:
        if "session" not in event:
            raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'session'.", "session")
        old_fmt, old_td = input_format(self.config), turn_detection(self.config)
        self.config = apply_session_update(self.config, event["session"], self.flavour)
        if input_format(self.config) != old_fmt:
            self._new_epoch()
            self._reset_vad()
        elif turn_detection(self.config) != old_td:
            self._reset_vad()
        for _ in range(2 if self.knobs.double_session_updated else 1):
            self._emit(ev.SESSION_UPDATED, session=copy.deepcopy(self.config))

    # --- input audio ---------------------------------------------------------------------------------

    def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'audio'.", "audio")
        try:
            samples = self._fmt.to_pcm16(pcm.decode_base64_audio(audio))
        except pcm.AudioFormatError as exc:
            raise SessionConfigError("invalid_value", f"Invalid 'audio': {exc}.", "audio") from exc
        if not samples:
            return
        self._buf += samples
        n = len(samples) // 2
        self._epoch_samples += n
        self._appended_ms = self._epoch_ms + self._epoch_samples * 1000.0 / self._fmt.rate
        if self._vad is None:
            self._cap_manual_buffer()
            return
        for boundary in self._vad.feed(np.frombuffer(samples, dtype="<i2")):
            if boundary.kind == "started":
                self._speech_started(boundary.audio_ms)
            else:
                self._speech_stopped(boundary.audio_ms, boundary.speech_ms - self._vad.onset_ms)
        if not self._vad.in_speech:
            self._trim_idle_buffer()

    def _trim_idle_buffer(self) -> None:
        # In VAD mode only the prefix padding before a future onset can ever be committed: keep a margin.
        td = turn_detection(self.config)
        keep_ms = (td.prefix_padding_ms if td else 0) + 1000
        keep = math.ceil(keep_ms * self._fmt.rate / 1000)
        excess = len(self._buf) // 2 - keep
        if excess > self._fmt.rate:  # trim in >= 1 s steps, not on every append
            del self._buf[: excess * 2]
            self._buf_first += excess

    def _cap_manual_buffer(self) -> None:
        # Manual turns never trim on their own; a client that never commits must not grow memory forever.
        excess = len(self._buf) // 2 - MAX_BUFFER_S * self._fmt.rate
        if excess > 0:
            del self._buf[: excess * 2]
            self._buf_first += excess

    def _sample_at(self, ms: float) -> int:
        """Epoch sample index of the first sample at or after appended time `ms`."""
        return max(0, math.ceil((ms - self._epoch_ms) * self._fmt.rate / 1000.0 - 1e-6))

    def _take(self, start_ms: float, end_ms: float) -> bytes:
        """The buffered samples in [start_ms, end_ms); everything before end_ms leaves the buffer."""
        first = min(max(self._sample_at(start_ms), self._buf_first), self._buf_first + len(self._buf) // 2)
        last = min(max(self._sample_at(end_ms), first), self._buf_first + len(self._buf) // 2)
        audio = bytes(self._buf[(first - self._buf_first) * 2 : (last - self._buf_first) * 2])
        del self._buf[: (last - self._buf_first) * 2]
        self._buf_first = last
        return audio

    def _speech_started(self, audio_start_ms: int) -> None:
        self._speech_item = self._mint("item")
        self._speech_start_ms = audio_start_ms
        self._emit(ev.INPUT_AUDIO_BUFFER_SPEECH_STARTED, audio_start_ms=audio_start_ms, item_id=self._speech_item)
        td = turn_detection(self.config)
        if self._response is not None and td is not None and td.interrupt_response:
            self._cancel_response("turn_detected")

    def _speech_stopped(self, audio_end_ms: int, speech_ms: float) -> None:
        item_id = self._speech_item or self._mint("item")
        self._speech_item = None
        self._emit(ev.INPUT_AUDIO_BUFFER_SPEECH_STOPPED, audio_end_ms=audio_end_ms, item_id=item_id)
        audio = self._take(self._speech_start_ms, audio_end_ms)
        self._commit_user_audio(item_id, audio, speech_ms)
        td = turn_detection(self.config)
        if td is not None and td.create_response and self._response is None:
            self._start_response({})

    def _commit(self, event_id: str | None) -> None:
        buffered_ms = pcm.duration_ms(len(self._buf), self._fmt.rate)
        if buffered_ms < MIN_COMMIT_MS:
            self._error(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
                None,
                event_id,
            )
            return
        item_id = self._speech_item or self._mint("item")
        audio = bytes(self._buf)
        self._buf_first += len(self._buf) // 2
        self._buf = bytearray()
        self._reset_vad()
        self._commit_user_audio(item_id, audio, buffered_ms)

    def _commit_user_audio(self, item_id: str, audio: bytes, speech_ms: float) -> None:
        previous = self._last_item_id()
        self._emit(ev.INPUT_AUDIO_BUFFER_COMMITTED, previous_item_id=previous, item_id=item_id)
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        stored = StoredItem(item=item, audio=bytearray(audio), fmt=self._fmt, audio_index=0)
        self._store(stored)
        self._item_added(item, previous)
        self._item_done(item, previous)
        transcript = replies.describe_speech(speech_ms)
        item["content"][0]["transcript"] = transcript
        self._emit(
            ev.INPUT_AUDIO_TRANSCRIPTION_COMPLETED,
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round(stored.audio_ms() / 1000.0, 3)},
        )
        self._complete(item)

    # --- conversation items --------------------------------------------------------------------------

    def _last_item_id(self) -> str | None:
        return next(reversed(self.items), None) if self.items else None

    def _store(self, stored: StoredItem, after: str | None = None) -> None:
        item_id = stored.item["id"]
        if after is None or after == self._last_item_id():
            self.items[item_id] = stored
        else:
            keys = list(self.items)
            position = 0 if after == "root" else keys.index(after) + 1
            entries = list(self.items.items())
            entries.insert(position, (item_id, stored))
            self.items = OrderedDict(entries)
        if stored.audio is not None and self._archive is not None:
            self._archive.put(stored)

    def _find(self, event: dict[str, Any]) -> StoredItem:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'item_id'.", "item_id")
        stored = self.items.get(item_id)
        if stored is None:
            raise SessionConfigError("item_not_found", f"Item with item_id '{item_id}' not found.", "item_id")
        return stored

    def _item_create(self, event: dict[str, Any]) -> None:
        raw = event.get("item")
        if not isinstance(raw, dict):
            raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        after = event.get("previous_item_id")
        if after is not None and (not isinstance(after, str) or (after != "root" and after not in self.items)):
            raise SessionConfigError("invalid_value", f"Previous item with id '{after}' not found.", "previous_item_id")
        stored = self._parse_item(raw)
        self._store(stored, after)
        keys = list(self.items)
        index = keys.index(stored.item["id"])
        previous = keys[index - 1] if index > 0 else None
        self._item_added(stored.item, previous)
        self._item_done(stored.item, previous)
        self._complete(stored.item)

    def _parse_item(self, raw: dict[str, Any]) -> StoredItem:
        kind = raw.get("type", "message")
        item_id = raw.get("id")
        if item_id is not None and (not isinstance(item_id, str) or not item_id or item_id in self.items):
            raise SessionConfigError("invalid_value", f"Invalid or duplicate item id {item_id!r}.", "item.id")
        base = {
            "id": item_id or self._mint("item"),
            "object": "realtime.item",
            "type": kind,
            "status": "completed",
        }
        if kind == "function_call_output":
            call_id, output = raw.get("call_id"), raw.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str):
                raise SessionConfigError(
                    "missing_required_parameter",
                    "function_call_output needs string 'call_id' and 'output'.",
                    "item.call_id" if not isinstance(call_id, str) else "item.output",
                )
            return StoredItem({**base, "call_id": call_id, "output": output})
        if kind == "function_call":
            name, arguments = raw.get("name"), raw.get("arguments", "{}")
            call_id = raw.get("call_id") or self._mint("call")
            if not isinstance(name, str) or not isinstance(arguments, str) or not isinstance(call_id, str):
                raise SessionConfigError("invalid_type", "function_call needs string 'name' and 'arguments'.", "item")
            self._calls[call_id] = name
            return StoredItem({**base, "call_id": call_id, "name": name, "arguments": arguments})
        if kind != "message":
            raise SessionConfigError("invalid_value", f"Unsupported item type {kind!r}.", "item.type")
        role = raw.get("role")
        allowed = {
            "user": ("input_text", "input_audio"),
            "system": ("input_text",),
            "assistant": ("output_text", "output_audio"),
        }
        if role not in allowed:
            raise SessionConfigError("invalid_value", f"Invalid role {role!r}.", "item.role")
        content = raw.get("content")
        if not isinstance(content, list) or not content:
            raise SessionConfigError("invalid_type", "A message needs a non-empty 'content' array.", "item.content")
        parts: list[dict[str, Any]] = []
        stored = StoredItem({**base, "role": role, "content": parts})
        for index, part in enumerate(content):
            where = f"item.content[{index}]"
            if not isinstance(part, dict) or part.get("type") not in allowed[role]:
                raise SessionConfigError("invalid_value", f"Unsupported content part for role {role}.", f"{where}.type")
            ptype = part["type"]
            if ptype in ("input_text", "output_text"):
                if not isinstance(part.get("text"), str):
                    raise SessionConfigError("invalid_type", "'text' must be a string.", f"{where}.text")
                parts.append({"type": ptype, "text": part["text"]})
                continue
            transcript = part.get("transcript")
            if transcript is not None and not isinstance(transcript, str):
                raise SessionConfigError("invalid_type", "'transcript' must be a string.", f"{where}.transcript")
            if "audio" in part:
                if not isinstance(part["audio"], str) or stored.audio is not None:
                    raise SessionConfigError("invalid_value", "One base64 'audio' string per item.", f"{where}.audio")
                try:
                    samples = self._fmt.to_pcm16(pcm.decode_base64_audio(part["audio"]))
                except pcm.AudioFormatError as exc:
                    raise SessionConfigError("invalid_value", f"Invalid 'audio': {exc}.", f"{where}.audio") from exc
                stored.audio, stored.fmt, stored.audio_index = bytearray(samples), self._fmt, index
                if transcript is None:
                    transcript = replies.describe_speech(stored.audio_ms())
            parts.append({"type": ptype, "transcript": transcript})
        return stored

    def _retrieve(self, event: dict[str, Any], event_id: str | None) -> None:
        stored = self._find(event)
        if self.knobs.retrieve_fail:
            self._error(
                "retrieve_failed",
                "Retrieve failed (simulator knob retrieve_fail).",
                "item_id",
                event_id,
                kind="server_error",
            )
            return
        item = copy.deepcopy(stored.item)
        wire = retrieved_wire(stored)
        if wire is not None and not self.knobs.retrieve_no_audio:
            item["content"][stored.audio_index]["audio"] = base64.b64encode(wire).decode("ascii")
        self._emit(ev.CONVERSATION_ITEM_RETRIEVED, item=item)

    def _truncate(self, event: dict[str, Any]) -> None:
        stored = self._find(event)
        if stored.item.get("role") != "assistant" or stored.audio is None or stored.fmt is None:
            raise SessionConfigError("invalid_value", "Only assistant messages with audio can be truncated.", "item_id")
        content_index = event.get("content_index", 0)
        if content_index != stored.audio_index:
            raise SessionConfigError("invalid_value", f"Content index {content_index!r} has no audio.", "content_index")
        end = event.get("audio_end_ms")
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            raise SessionConfigError("invalid_type", "'audio_end_ms' must be a non-negative integer.", "audio_end_ms")
        if self._response is not None and self._response.stored is stored:
            self._cancel_response("client_cancelled")
        available = stored.audio_ms()
        if end > available + 1e-6:
            raise SessionConfigError(
                "invalid_value",
                f"Audio content of {available:.0f}ms is already shorter than {end}ms.",
                "audio_end_ms",
            )
        keep = math.floor(end * stored.fmt.rate / 1000.0 + 1e-6)
        del stored.audio[keep * 2 :]
        # GA: truncating drops the server-side transcript, so no unheard text stays in the context.
        stored.item["content"][stored.audio_index]["transcript"] = ""
        self._emit(
            ev.CONVERSATION_ITEM_TRUNCATED,
            item_id=stored.item["id"],
            content_index=content_index,
            audio_end_ms=end,
        )

    def _delete(self, event: dict[str, Any]) -> None:
        stored = self._find(event)
        if self._response is not None and self._response.stored is stored:
            self._cancel_response("client_cancelled")
        item_id = stored.item["id"]
        del self.items[item_id]
        if self._archive is not None:
            self._archive.remove(item_id)
        self._emit(ev.CONVERSATION_ITEM_DELETED, item_id=item_id)

    # --- responses -----------------------------------------------------------------------------------

    def _response_create(self, event: dict[str, Any], event_id: str | None) -> None:
        if self._response is not None:
            self._error(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}.",
                None,
                event_id,
            )
            return
        self._start_response(validate_response_params(event.get("response"), self.flavour))

    def _response_cancel(self, event: dict[str, Any], event_id: str | None) -> None:
        wanted = event.get("response_id")
        if self._response is None or (wanted is not None and wanted != self._response.id):
            self._error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found.",
                "response_id" if wanted is not None else None,
                event_id,
            )
            return
        self._cancel_response("client_cancelled")

    def _decide_reply(self, with_audio: bool, out_rate: int) -> _Reply:
        """The deterministic 'model': what to answer, from the last item of the conversation."""
        tools = self.config["tools"] if self.config["tool_choice"] != "none" else []
        last = next(reversed(self.items.values()), None)
        if last is None or last.item.get("role") in ("assistant", "system"):
            text = replies.GREETING
            return _Reply("message", text, replies.speak_text(text, out_rate) if with_audio else None)
        item = last.item
        if item["type"] == "function_call_output":
            name = self._calls.get(item["call_id"], "unknown")
            text = replies.tool_result_reply(name, item["output"])
            return _Reply("message", text, replies.speak_text(text, out_rate) if with_audio else None)
        if item["type"] == "function_call":
            text = f"Waiting for the output of {item['name']}."
            return _Reply("message", text, replies.speak_text(text, out_rate) if with_audio else None)
        if last.audio is not None and last.fmt is not None:
            if self.knobs.tool_on_audio and tools:
                return _Reply("function_call", calls=[(str(tools[0]["name"]), "{}")])
            heard = next((p.get("transcript") for p in item["content"] if p.get("transcript")), None)
            text = replies.echo_text(heard or replies.describe_speech(last.audio_ms()))
            audio = replies.echo_audio(bytes(last.audio), last.fmt.rate, out_rate) if with_audio else None
            return _Reply("message", text, audio)
        user_text = " ".join(p.get("text") or p.get("transcript") or "" for p in item.get("content", []))
        calls = replies.find_tool_calls(user_text, tools)
        if calls:
            return _Reply("function_call", calls=calls)
        if replies.asks_recall(user_text):
            text = replies.recall_reply(self._earlier_user_texts(last))
            return _Reply("message", text, replies.speak_text(text, out_rate) if with_audio else None)
        text = replies.text_reply(user_text)
        return _Reply("message", text, replies.speak_text(text, out_rate) if with_audio else None)

    def _earlier_user_texts(self, last: StoredItem) -> list[str]:
        """The texts (or transcripts) of the user messages before `last`, in conversation order."""
        texts: list[str] = []
        for stored in self.items.values():
            if stored is last:
                break
            item = stored.item
            if item.get("type") == "message" and item.get("role") == "user":
                text = " ".join(p.get("text") or p.get("transcript") or "" for p in item.get("content", []))
                if text:
                    texts.append(text)
        return texts

    def _response_object(
        self, resp: _Response, status: str, details: dict[str, Any] | None, usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {
            "id": resp.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": copy.deepcopy(resp.output),
            "conversation_id": self.conversation_id if resp.in_conversation else None,
            "output_modalities": list(resp.modalities),
            "max_output_tokens": self.config["max_output_tokens"],
            "audio": {
                "output": {
                    "format": copy.deepcopy(self.config["audio"]["output"]["format"]),
                    "voice": copy.deepcopy(resp.voice),
                }
            },
            "usage": usage,
            "metadata": resp.metadata,
        }

    def _start_response(self, params: dict[str, Any]) -> None:
        modalities = params.get("output_modalities", self.config["output_modalities"])
        with_audio = wants_audio(modalities)
        out_fmt = output_format(self.config)
        reply = self._decide_reply(with_audio, out_fmt.rate)
        in_conversation = params.get("conversation", "auto") != "none"
        input_tokens = sum(replies.audio_tokens(s.audio_ms()) + 8 for s in self.items.values())
        resp_id = self._mint("resp")
        item_id = self._mint("item")
        if reply.kind == "function_call":
            self._function_call_response(resp_id, item_id, reply.calls, modalities, params, in_conversation, input_tokens)
            return
        part_type = "output_audio" if with_audio else "output_text"
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        stored = StoredItem(
            item=item,
            audio=bytearray() if with_audio else None,
            fmt=out_fmt if with_audio else None,
            audio_index=0,
        )
        n_chunks = max(1, math.ceil(len(reply.audio or b"") / self._chunk_bytes(out_fmt))) if with_audio else 0
        resp = _Response(
            id=resp_id,
            modalities=modalities,
            metadata=params.get("metadata"),
            in_conversation=in_conversation,
            out_fmt=out_fmt,
            voice=self.config["audio"]["output"]["voice"],
            text=reply.text,
            audio=reply.audio,
            item=item,
            stored=stored,
            text_chunks=_schedule_text(reply.text, n_chunks if with_audio else len(reply.text.split())),
            input_tokens=input_tokens,
        )
        self._response = resp
        self._emit(ev.RESPONSE_CREATED, response=self._response_object(resp, "in_progress", None, None))
        self._emit(ev.RESPONSE_OUTPUT_ITEM_ADDED, response_id=resp_id, output_index=0, item=copy.deepcopy(item))
        if in_conversation:
            previous = self._last_item_id()
            self._store(stored)
            self._item_added(item, previous)
        part: dict[str, Any] = {"type": "audio", "transcript": ""} if with_audio else {"type": "text", "text": ""}
        item["content"].append({"type": part_type, "transcript": ""} if with_audio else {"type": part_type, "text": ""})
        self._emit(
            ev.RESPONSE_CONTENT_PART_ADDED,
            response_id=resp_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            part=part,
        )

    def _chunk_bytes(self, fmt: AudioFormat) -> int:
        return fmt.rate * CHUNK_MS // 1000 * 2

    def _function_call_response(
        self,
        resp_id: str,
        item_id: str,
        calls: list[tuple[str, str]],
        modalities: list[str],
        params: dict[str, Any],
        in_conversation: bool,
        input_tokens: int,
    ) -> None:
        """One response whose output is a function_call item per (name, arguments), streamed in order."""
        resp: _Response | None = None
        outputs: list[dict[str, Any]] = []
        for index, (tool, arguments) in enumerate(calls):
            call_id = self._mint("call")
            self._calls[call_id] = tool
            item: dict[str, Any] = {
                "id": item_id if index == 0 else self._mint("item"),
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": tool,
                "call_id": call_id,
                "arguments": "",
            }
            if resp is None:
                resp = _Response(
                    id=resp_id,
                    modalities=modalities,
                    metadata=params.get("metadata"),
                    in_conversation=in_conversation,
                    out_fmt=output_format(self.config),
                    voice=self.config["audio"]["output"]["voice"],
                    text="",
                    audio=None,
                    item=item,
                    stored=StoredItem(item=item),
                    text_chunks=[],
                    input_tokens=input_tokens,
                )
                self._emit(ev.RESPONSE_CREATED, response=self._response_object(resp, "in_progress", None, None))
            ids = {"response_id": resp_id, "output_index": index}
            self._emit(ev.RESPONSE_OUTPUT_ITEM_ADDED, **ids, item=copy.deepcopy(item))
            previous = self._last_item_id()
            if in_conversation:
                self._store(resp.stored if index == 0 else StoredItem(item=item))
                self._item_added(item, previous)
            ids = {**ids, "item_id": item["id"], "call_id": call_id}
            self._emit(ev.RESPONSE_FUNCTION_CALL_ARGUMENTS_DELTA, **ids, delta=arguments)
            self._emit(ev.RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE, **ids, name=tool, arguments=arguments)
            item["arguments"] = arguments
            item["status"] = "completed"
            if in_conversation:
                self._item_done(item, previous)
                self._complete(item)
            self._emit(ev.RESPONSE_OUTPUT_ITEM_DONE, response_id=resp_id, output_index=index, item=copy.deepcopy(item))
            outputs.append(copy.deepcopy(item))
        assert resp is not None
        resp.output = outputs
        usage = self._usage(resp, 0.0, "".join(arguments for _, arguments in calls))
        self._emit(ev.RESPONSE_DONE, response=self._response_object(resp, "completed", {"type": "completed"}, usage))

    def _usage(self, resp: _Response, audio_ms: float, text: str) -> dict[str, Any]:
        out_audio, out_text = replies.audio_tokens(audio_ms), replies.text_tokens(text)
        return {
            "total_tokens": resp.input_tokens + out_audio + out_text,
            "input_tokens": resp.input_tokens,
            "output_tokens": out_audio + out_text,
            "input_token_details": {"text_tokens": 0, "audio_tokens": resp.input_tokens, "cached_tokens": 0},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }

    def step_response(self) -> float:
        """Emit the next chunk of the live response (or its end); the ms of audio emitted, for pacing."""
        resp = self._response
        if resp is None:
            return 0.0
        ids = {"response_id": resp.id, "item_id": resp.item["id"], "output_index": 0, "content_index": 0}
        sent_ms = 0.0
        if resp.with_audio and resp.audio is not None and resp.cursor < len(resp.audio):
            chunk = resp.audio[resp.cursor : resp.cursor + self._chunk_bytes(resp.out_fmt)]
            resp.cursor += len(chunk)
            assert resp.stored.audio is not None
            resp.stored.audio += chunk
            self._emit(
                ev.RESPONSE_OUTPUT_AUDIO_DELTA,
                **ids,
                delta=base64.b64encode(resp.out_fmt.from_pcm16(chunk)).decode("ascii"),
            )
            sent_ms = pcm.duration_ms(len(chunk), resp.out_fmt.rate)
        if resp.text_cursor < len(resp.text_chunks):
            delta = resp.text_chunks[resp.text_cursor]
            resp.text_cursor += 1
            if delta:
                resp.sent_text += delta
                self._emit(self._text_delta_type(resp), **ids, delta=delta)
        elif not resp.with_audio or resp.audio is None or resp.cursor >= len(resp.audio):
            self._finish_response("completed", None)
        return sent_ms

    def _text_delta_type(self, resp: _Response) -> str:
        if resp.with_audio and self.flavour == "openai":
            return ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA
        return ev.RESPONSE_OUTPUT_TEXT_DELTA

    def _cancel_response(self, reason: str) -> None:
        self._finish_response("cancelled", reason)

    def _finish_response(self, status: str, reason: str | None) -> None:
        resp = self._response
        if resp is None:
            return
        self._response = None
        ids = {"response_id": resp.id, "item_id": resp.item["id"], "output_index": 0, "content_index": 0}
        text = resp.sent_text
        if resp.with_audio:
            self._emit(ev.RESPONSE_OUTPUT_AUDIO_DONE, **ids)
            if self.flavour == "openai":
                self._emit(ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE, **ids, transcript=text)
            else:
                self._emit(ev.RESPONSE_OUTPUT_TEXT_DONE, **ids, text=text)
            resp.item["content"][0]["transcript"] = text
            part: dict[str, Any] = {"type": "audio", "transcript": text}
        else:
            self._emit(ev.RESPONSE_OUTPUT_TEXT_DONE, **ids, text=text)
            resp.item["content"][0]["text"] = text
            part = {"type": "text", "text": text}
        self._emit(ev.RESPONSE_CONTENT_PART_DONE, **ids, part=part)
        resp.item["status"] = "completed" if status == "completed" else "incomplete"
        if resp.in_conversation and resp.item["id"] in self.items:
            keys = list(self.items)
            index = keys.index(resp.item["id"])
            self._item_done(resp.item, keys[index - 1] if index > 0 else None)
            self._complete(resp.item)
        self._emit(ev.RESPONSE_OUTPUT_ITEM_DONE, response_id=resp.id, output_index=0, item=copy.deepcopy(resp.item))
        resp.output = [copy.deepcopy(resp.item)]
        audio_ms = resp.stored.audio_ms()
        details: dict[str, Any] = {"type": status}
        if reason is not None:
            details["reason"] = reason
        self._emit(
            ev.RESPONSE_DONE,
            response=self._response_object(resp, status, details, self._usage(resp, audio_ms, text)),
        )

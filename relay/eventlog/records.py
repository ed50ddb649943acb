"""The record builder of the event log: what one record says and the bytes it is written as.

Boundary: given a session's id, a seq, the time and a `LogEntry`, build the record (the fixed fields in their
order, the top-level ids, `bytes`, the event with its audio summarized and, with `log_content` off, its content
replaced by lengths) and encode it as one JSON line; the same for a `relay.log_gap` line. Pure and synchronous:
no queue, no thread, no file. The writer (`relay/eventlog/writer.py`) calls it on the event loop and moves the
bytes it returns. The record format is docs/event-log.md.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, Final

import orjson

from relay.core import events as ev
from relay.core.formats import AudioFormat
from relay.core.frames import b64_decoded_len as _b64_len
from relay.core.frames import stdlib_dumps
from relay.core.outbox import LogEntry

# The flat audio record in native code, built from _flatrecord.c at install time when a C compiler is there
# (docs/performance.md, "The ninth round"); without it the Python builder writes every record, the same bytes.
# `native_audio_records` writes a run of them into one blob, in one call.
native_audio_record: Callable[..., bytes | None] | None
native_audio_records: Callable[..., tuple[bytes, int]] | None
try:
    from relay.eventlog._flatrecord import audio_record as native_audio_record
    from relay.eventlog._flatrecord import audio_records as native_audio_records
except ImportError:
    native_audio_record = native_audio_records = None

SCHEMA_VERSION: Final = 1

_TEXT_DELTA_TYPES: Final = frozenset(
    {ev.RESPONSE_OUTPUT_TEXT_DELTA, ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA, ev.INPUT_AUDIO_TRANSCRIPTION_DELTA}
)
_TEXT_KEYS: Final = ("text", "transcript", "instructions")
_TEXT_KEYS_SET: Final = frozenset(_TEXT_KEYS)
_ID_KEYS: Final = ("event_id", "item_id", "response_id")
_AUDIO_PAYLOAD_FIELD: Final[dict[str, str]] = dict(ev.AUDIO_PAYLOAD_FIELD)
_NESTING: Final = frozenset({dict, list})
_MAX_SHARED_SUMMARIES: Final = 256


def round_ms(ms: float) -> float:
    """Milliseconds to three decimals (microseconds), half up: a third of what `round(ms, 3)` costs."""
    return int(ms * 1000.0 + (0.5 if ms >= 0 else -0.5)) / 1000.0


def audio_summary(b64: str, fmt: AudioFormat | None, with_hash: bool = False) -> dict[str, Any]:
    """What the log keeps of an audio payload: its size, its duration in the format in effect, and (`log_audio_hash`)
    a hash.

    The hash is the SHA-256 of the base64 payload as it crossed the relay (first 16 hex digits): it identifies
    the payload without decoding it. It is off by default: hashing every audio frame was about half of what
    rendering a record cost (see docs/performance.md). Sizes come from the base64 length, which is exact for valid
    base64."""
    n_bytes = _b64_len(b64)
    summary: dict[str, Any] = {"audio_bytes": n_bytes, "audio_ms": round_ms(fmt.ms(n_bytes)) if fmt is not None else None}
    if with_hash:
        summary["sha256"] = hashlib.sha256(b64.encode("ascii", "replace")).hexdigest()[:16]
    return summary


_MAX_WALK_DEPTH: Final = 64  # events are shallow; a deeper payload is logged as it is past this depth


def _scrub(value: Any, fmt: AudioFormat | None, keep_text: bool, with_hash: bool, depth: int = 0) -> Any:
    """Every `audio` string (content parts, items in responses, anywhere) summarized; with `keep_text` off every
    `text`, `transcript` and `instructions` string replaced by its length. Tool-call arguments and outputs stay.
    Copies only the containers it changes."""
    if depth > _MAX_WALK_DEPTH:
        return value
    if isinstance(value, dict):
        changed: dict[str, Any] | None = None
        for key, child in value.items():
            new = child
            if isinstance(child, str):
                if key == "audio":
                    new = audio_summary(child, fmt, with_hash)
                elif not keep_text and key in _TEXT_KEYS:
                    new = len(child)
            elif isinstance(child, (dict, list)):
                new = _scrub(child, fmt, keep_text, with_hash, depth + 1)
            if new is not child:
                if changed is None:
                    changed = dict(value)
                changed[key] = new
        return value if changed is None else changed
    if isinstance(value, list):
        items = [
            _scrub(child, fmt, keep_text, with_hash, depth + 1) if isinstance(child, (dict, list)) else child for child in value
        ]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def summarize_event(
    event: Any, record_type: str | None, fmt: AudioFormat | None, keep_text: bool, audio_hash: bool = False
) -> Any:
    """The event as it goes in the log: audio replaced by a summary (with a hash when `audio_hash`); text by its
    length when not kept.

    Builds new containers where it changes something; never mutates the event it is given.
    """
    if not isinstance(event, dict):
        return event
    audio_field = ev.AUDIO_PAYLOAD_FIELD.get(record_type or "")
    if audio_field is not None and keep_text:
        # The hot path (an audio frame every 20 ms each way): its audio is at the top and nothing else nests, so the
        # general walk is not needed (it was a third of what rendering such a record cost).
        payload = event.get(audio_field)
        if isinstance(payload, str) and (audio_field == "audio" or "audio" not in event):
            for value in event.values():
                if type(value) is dict or type(value) is list:
                    break
            else:
                return {**event, audio_field: audio_summary(payload, fmt, audio_hash)}
    out = _scrub(event, fmt, keep_text, audio_hash)
    delta = out.get("delta")
    if audio_field == "delta" and isinstance(delta, str):
        out = {**out, "delta": audio_summary(delta, fmt, audio_hash)}
    elif not keep_text and record_type in _TEXT_DELTA_TYPES and isinstance(delta, str):
        out = {**out, "delta": len(delta)}
    if not keep_text and record_type == ev.RELAY_TOOL_CALL:
        # A tool call's arguments and output are conversation content (docs/tools.md).
        out = {**out, **{k: _content_len(out[k]) for k in ("arguments", "output") if k in out}}
    return out


def _content_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(orjson.dumps(value, default=repr))


def _ids(event: Any) -> dict[str, str]:
    """The record's top-level `event_id`/`item_id`/`response_id`: only string values, else absent, so a collector
    sees one JSON type per key; a client's non-string value stays inside `event` (docs/configuration.md)."""
    if not isinstance(event, dict):
        return {}
    ids: dict[str, str] = {}
    event_id = event.get("event_id")
    item_id = event.get("item_id")
    if item_id is None and isinstance(event.get("item"), dict):
        item_id = event["item"].get("id")
    response_id = event.get("response_id")
    if response_id is None and isinstance(event.get("response"), dict):
        response_id = event["response"].get("id")
    for key, value in (("event_id", event_id), ("item_id", item_id), ("response_id", response_id)):
        if isinstance(value, str):
            ids[key] = value
    return ids


_THREE_DIGITS: Final = tuple(f"{n:03d}" for n in range(1000))


class _Rfc3339:
    """RFC 3339 UTC timestamps with microseconds; the seconds part is formatted once per second. Safe to share
    between threads: the cache is one tuple, replaced whole."""

    def __init__(self) -> None:
        self._cache: tuple[int, str] = (-1, "")

    def __call__(self, wall: float) -> str:
        second = int(wall)
        micros = int((wall - second) * 1_000_000 + 0.5)  # `wall - second` is exact in binary floating point
        if micros == 1_000_000:
            second, micros = second + 1, 0
        cached_second, prefix = self._cache
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._cache = (second, prefix)
        # Two table lookups: a third cheaper than formatting "%06d" (measured inside a whole record's build).
        return prefix + _THREE_DIGITS[micros // 1000] + _THREE_DIGITS[micros % 1000] + "Z"


class RecordBuilder:
    """Builds and encodes records for one `EventLog`: `log_content` (`keep_text`) and `log_audio_hash`
    (`audio_hash`) are fixed at start. Shared by every session; called on the event loop (`build`) and on the
    writer thread (`gap`)."""

    def __init__(self, *, keep_text: bool = True, audio_hash: bool = False, native: bool = True) -> None:
        self.keep_text = keep_text
        self.audio_hash = audio_hash
        # The native writer of flat audio records, for the default options (it writes neither hashes nor lengths).
        self._native = native_audio_record if native and keep_text and not audio_hash else None
        self._native_run = native_audio_records if self._native is not None else None
        self._timestamp = _Rfc3339()
        self._summaries: dict[tuple[int, int], dict[str, Any]] = {}

    def _head(self, session_id: str, seq: int | None, wall: float, t_ms: float, dir_: str, type_: str | None) -> dict[str, Any]:
        """The fields every record starts with, in their order (docs/event-log.md)."""
        return {
            "v": SCHEMA_VERSION,
            "ts": self._timestamp(wall),
            "level": "info",  # stdout carries daemon records too: one schema for a collector
            "t_ms": round_ms(t_ms),
            "session_id": session_id,
            "seq": seq,
            "dir": dir_,
            "type": type_,
        }

    def audio_run(
        self, session_id: str, first_seq: int, wall: float, t_ms: float, entries: list[LogEntry], start: int
    ) -> tuple[bytes, int]:
        """The records of the flat audio entries from `entries[start]` on, up to the first other one, as one blob with
        seqs from `first_seq`, and how many: each line what `build` gives for that entry. Written in native code in
        one call (a flood's burst of frames costs no Python per record); (b"", 0) without it, or when
        `entries[start]` is not such an entry: `build` writes that one."""
        if self._native_run is None:
            return b"", 0
        return self._native_run(session_id, first_seq, wall, t_ms, entries, start, _AUDIO_PAYLOAD_FIELD)

    def build(self, session_id: str, seq: int, wall: float, t_ms: float, entry: LogEntry) -> bytes:
        """One record as its JSON line. Raises what orjson raises for a value it cannot encode."""
        audio_field = _AUDIO_PAYLOAD_FIELD.get(entry.type) if entry.type is not None else None
        if audio_field is not None and entry.client_event is None and entry.server_event is None:
            if self._native is not None:  # None back: a shape it does not write the same way
                fmt = entry.audio_format
                bytes_per_second = fmt.bytes_per_second if fmt is not None else -1
                line = self._native(
                    session_id, seq, wall, t_ms, entry.dir, entry.type, entry.event, audio_field, entry.bytes, bytes_per_second
                )
                if line is not None:
                    return line
            line = self._flat_audio(session_id, seq, wall, t_ms, entry, audio_field)
            if line is not None:
                return line
        record = self._head(session_id, seq, wall, t_ms, entry.dir, entry.type)
        record.update(_ids(entry.event))
        if entry.bytes is not None:  # a wire frame's length; the relay's own records have none (absent, not null)
            record["bytes"] = entry.bytes
        record["event"] = summarize_event(entry.event, entry.type, entry.audio_format, self.keep_text, self.audio_hash)
        for key, value in (("client_event", entry.client_event), ("server_event", entry.server_event)):
            if value is not None:
                record[key] = summarize_event(value, entry.type, entry.audio_format, self.keep_text, self.audio_hash)
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError as exc:
            # A frame may nest deeper than orjson writes, or carry a big integer or a lone surrogate: it still
            # gets its one record. Only a value JSON cannot spell (an infinity) stays a dropped, declared record.
            return (stdlib_dumps(record, exc) + "\n").encode()

    def _flat_audio(self, session_id: str, seq: int, wall: float, t_ms: float, entry: LogEntry, field: str) -> bytes | None:
        """The hot path, an audio frame every 20 ms each way: the record of a flat event (no object or list in it)
        whose audio is a top-level string, built in one piece without the general walk of the event. The same
        record as the general path gives (a test compares them); None for any other shape."""
        event = entry.event
        if type(event) is not dict:
            return None
        payload = event.get(field)
        if type(payload) is not str or (field != "audio" and "audio" in event):
            return None
        if not _NESTING.isdisjoint(map(type, event.values())):
            return None
        if not self.keep_text and not _TEXT_KEYS_SET.isdisjoint(event):
            return None
        record = {  # `_head`'s fields written out (one call less per record); a property test keeps them equal
            "v": SCHEMA_VERSION,
            "ts": self._timestamp(wall),
            "level": "info",
            "t_ms": round_ms(t_ms),
            "session_id": session_id,
            "seq": seq,
            "dir": entry.dir,
            "type": entry.type,
        }
        for key in _ID_KEYS:  # what `_ids` gives for an event with nothing nested
            value = event.get(key)
            if type(value) is str:
                record[key] = value
        if entry.bytes is not None:
            record["bytes"] = entry.bytes
        record["event"] = {**event, field: self._summary(payload, entry.audio_format)}
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:  # a lone surrogate or a huge integer: the general path's fallback writes it
            return None

    def _summary(self, payload: str, fmt: AudioFormat | None) -> dict[str, Any]:
        """`audio_summary`, shared between payloads of one size and format (a stream's chunks are all one size):
        the record only encodes it, so one dict serves them all. With `log_audio_hash` each payload has its own."""
        if self.audio_hash:
            return audio_summary(payload, fmt, True)
        n_bytes = _b64_len(payload)
        key = (n_bytes, fmt.bytes_per_second if fmt is not None else -1)
        summary = self._summaries.get(key)
        if summary is None:
            if len(self._summaries) >= _MAX_SHARED_SUMMARIES:
                self._summaries.clear()
            summary = self._summaries[key] = audio_summary(payload, fmt)
        return summary

    def gap(self, session_id: str, started_mono: float, from_seq: int, to_seq: int, reason: str) -> bytes:
        """The `relay.log_gap` line declaring seqs `from_seq`..`to_seq` dropped; its own seq is null."""
        record = self._head(
            session_id, None, time.time(), (time.monotonic() - started_mono) * 1000.0, "relay", ev.RELAY_LOG_GAP
        )
        record["event"] = {"from_seq": from_seq, "to_seq": to_seq, "reason": reason}
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)

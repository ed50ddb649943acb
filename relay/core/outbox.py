"""What a session has decided and not yet handed out: the record types (`LogEntry`, `AudioToSave`) and the
queues the drains empty (`Outbox`: frames to the client and to the upstream, log entries, audio to save, retrieve
timers to arm and disarm). The bridge empties them in that order after every feed (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from relay.core import events as ev
from relay.core.formats import AudioFormat
from relay.core.frames import dumps_text, error_event, wire_len


class LogEntry(msgspec.Struct, gc=False):
    """One record-to-be. The event log stamps seq/ts/t_ms and summarizes audio once the frame is forwarded.

    A msgspec Struct: two are made per round trip, and a Struct is made in a quarter of a slotted dataclass's time
    (docs/performance.md, "The thirteenth round"). Not tracked by the garbage collector: an entry only points at
    parsed JSON and formats, never back at anything that points at it, so it cannot be part of a cycle."""

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


class Outbox:
    """The drain queues of one session, and the ways decisions enter them. Each drain returns everything decided
    since the last call, in the order decided, and forgets it; an empty drain may be the queue itself, so a caller
    uses what it gets at once and does not keep it."""

    def __init__(self) -> None:
        self._upstream: list[str] = []
        self._client: list[str] = []
        self._log: list[LogEntry] = []
        self._save: list[AudioToSave] = []
        self._arm: list[str] = []
        self._disarm: list[str] = []
        self.counts = {"client": 0, "server": 0, "relay": 0}

    # Most flushes decide nothing for most queues: an empty queue is handed out as it is instead of being swapped
    # for a new list (six drains a flush, two flushes a round trip).
    def to_upstream(self) -> list[str]:
        out = self._upstream
        if out:
            self._upstream = []
        return out

    def to_client(self) -> list[str]:
        out = self._client
        if out:
            self._client = []
        return out

    def to_log(self) -> list[LogEntry]:
        out = self._log
        if out:
            self._log = []
        return out

    def to_save(self) -> list[AudioToSave]:
        out = self._save
        if out:
            self._save = []
        return out

    def to_arm(self) -> list[str]:
        out = self._arm
        if out:
            self._arm = []
        return out

    def to_disarm(self) -> list[str]:
        """Items whose retrieve timer is no longer needed (answered, failed or given up)."""
        out = self._disarm
        if out:
            self._disarm = []
        return out

    def log(self, entry: LogEntry) -> None:
        try:
            self.counts[entry.dir] += 1
        except KeyError:
            self.counts[entry.dir] = 1
        self._log.append(entry)

    def log_relay(self, record_type: str, event: dict[str, Any]) -> None:
        self.log(LogEntry("relay", record_type, event))

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


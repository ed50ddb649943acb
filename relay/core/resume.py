"""Upstream resume, the pure parts: what a session must remember to survive a dropped upstream, and how to
rebuild it on a new one. No I/O, no asyncio, no clock (see docs/resume.md for the rules users rely on).

- `is_resumable`: which ends of an upstream socket are drops (resumed) and which are a normal end.
- `backoff_delays`: the waits before each reconnect attempt (0.5 s, 1 s, 2 s... with +-50% jitter).
- what a new upstream needs: the effective configuration (relay.core.update_line, `UpdateLine.effective_session`:
  the session core keeps the line of session.updates for the input format anyway) and the compact history
  (relay.core.resume_memory, `CompactHistory`);
- `GapQueue`: client frames that arrive while there is no upstream, in order, within their bounds, after the
  audio appended since the last commit (which the session core keeps anyway, see `RelaySession.uncommitted_audio`).
- `Restore`: the frames that rebuild a session on a new upstream and the bookkeeping of their answers.
- `ResumeState`: the above for one session, fed by the session core with what crosses the relay.
The reconnect loop itself lives in the bridge (relay.bridge); the session core (relay.core.upstream) feeds this.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from relay.core import events as ev
from relay.core.frames import answered_event_id, parse_event, wire_len
from relay.core.outbox import LogEntry
from relay.core.resume_memory import CompactHistory, HistoryItem

# A drop is an end without a normal close: no close frame at all (1006), or one of these codes.
RESUMABLE_CLOSE_CODES: Final = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
BACKOFF_FIRST_S: Final = 0.5
KiB: Final = 1024


def is_resumable(close_code: int | None) -> bool:
    """True for a drop: no close frame (the upstream link reports it as 1006) or a going-away, server-error or
    try-again code. None is an end the relay decided (an upstream that stopped reading): not resumed."""
    return close_code in RESUMABLE_CLOSE_CODES


def backoff_delays(attempts: int, rand: Callable[[], float]) -> list[float]:
    """Seconds to wait before each attempt: 0.5, 1, 2, 4... each scaled by 0.5..1.5 (`rand()` in [0, 1))."""
    return [BACKOFF_FIRST_S * 2.0**index * (0.5 + rand()) for index in range(max(0, attempts))]


@dataclass(frozen=True)
class ResumePolicy:
    """The operator's resume settings for one session."""

    attempts: int = 3
    buffer_seconds: float = 5.0
    history_max_bytes: int = 256 * KiB
    gap_max_bytes: int = 8 * 1024 * KiB


# ---- audio and client frames kept across the gap ---------------------------------------------------------------


@dataclass
class _Queued:
    text: str  # the client's frame, or for audio from before the drop its base64 audio
    audio_ms: float | None  # None: not an append
    # The frame's record, logged when it is sent; None for audio from before the drop, which is re-sent as the
    # relay's own append.
    record: LogEntry | None


@dataclass(frozen=True)
class HeldFrame:
    """A client frame held in the gap, with the record it gets when it is sent (the log follows the order frames
    were forwarded in, so a held frame is logged after the restore frames that went out ahead of it)."""

    text: str
    record: LogEntry


@dataclass
class GapQueue:
    """Client frames that arrive while no upstream is there, in order, plus the audio appended since the last
    commit before the drop. Appends are bounded by `max_audio_ms` (the oldest go first), everything by
    `max_bytes` (an append makes room before a later frame is refused); what does not fit is counted."""

    max_bytes: int
    max_audio_ms: float
    entries: deque[_Queued] = field(default_factory=deque)
    bytes: int = 0
    audio_ms: float = 0.0
    dropped_frames: int = 0
    dropped_audio_ms: float = 0.0

    def seed(self, audio: Iterable[tuple[str, float]]) -> None:
        """Audio forwarded before the drop and not committed: (base64 audio, its length in ms), oldest first."""
        for b64_audio, ms in audio:
            self._put(_Queued(b64_audio, ms, None))

    def add(self, text: str, audio_ms: float | None, record: LogEntry) -> None:
        self._put(_Queued(text, audio_ms, record))

    def add_resent(self, text: str) -> None:
        """A client frame the dropped upstream never answered, sent again as it was: the relay's own frame now,
        logged `dir: relay` when it is sent (its first sending was logged as the client's)."""
        event = parse_event(text)
        kind = event.get("type") if event is not None else None
        record = LogEntry("relay", kind if isinstance(kind, str) else None, event, bytes=wire_len(text))
        self._put(_Queued(text, None, record))

    def _put(self, entry: _Queued) -> None:
        size = len(entry.text)
        if entry.audio_ms is not None:
            self.audio_ms += entry.audio_ms
            while self.audio_ms > self.max_audio_ms and self._drop_oldest_append():
                pass
            if entry.audio_ms > self.max_audio_ms:  # alone longer than the bound: nothing of it is kept
                self.audio_ms -= entry.audio_ms
                self._count_dropped(entry)
                return
        while self.bytes + size > self.max_bytes and self._drop_oldest_append():
            pass
        if self.bytes + size > self.max_bytes:
            if entry.audio_ms is not None:
                self.audio_ms -= entry.audio_ms
            self._count_dropped(entry)
            return
        self.entries.append(entry)
        self.bytes += size

    def _drop_oldest_append(self) -> bool:
        for entry in self.entries:
            if entry.audio_ms is not None:
                self.entries.remove(entry)
                self.bytes -= len(entry.text)
                self.audio_ms -= entry.audio_ms
                self._count_dropped(entry)
                return True
        return False

    def _count_dropped(self, entry: _Queued) -> None:
        self.dropped_frames += 1
        if entry.audio_ms is not None:
            self.dropped_audio_ms += entry.audio_ms

    def drain(self, number: int) -> list[HeldFrame | dict[str, Any]]:
        """What to send, in order: a client frame of the gap as a `HeldFrame`, audio forwarded before the drop as
        the relay's own append (an object to send and log as such). The queue is empty afterwards."""
        out: list[HeldFrame | dict[str, Any]] = []
        for index, entry in enumerate(self.entries):
            if entry.record is not None:
                out.append(HeldFrame(entry.text, entry.record))
            else:
                out.append(resent_append(entry.text, number, index))
        self.entries.clear()
        self.bytes = 0
        self.audio_ms = 0.0
        return out


# ---- the restore ----------------------------------------------------------------------------------------------


@dataclass
class _Create:
    event_id: str
    index: int  # position in the plan
    kept_id: bool


class Restore:
    """One attempt's rebuild of the session on a new upstream: the effective `session.update`, then one
    `conversation.item.create` per restorable item, in order, with its original id. Answers come in request
    order: an `item.added`/`item.created` answers the oldest create in line, an `error` names its event_id. An
    item refused with its id is tried once more without it (placed after the nearest earlier item kept under its
    own id); refused again, it counts as dropped. Done once the configuration and every create are answered."""

    def __init__(self, tag: str, session: dict[str, Any], items: list[HistoryItem]) -> None:
        self.prefix = f"relay_resume{tag}_"
        self.items = items
        self.config_event_id = self.prefix + "session"
        self.config_answered = False
        self.config_refused = False
        self.restored = 0
        self.refused = 0
        self._kept: set[int] = set()
        self._in_line: deque[_Create] = deque()
        self.item_ids: set[str] = set()  # the ids the new upstream gave the restored items
        self.first_frames: list[dict[str, Any]] = [
            {"type": ev.SESSION_UPDATE, "event_id": self.config_event_id, "session": session}
        ]
        for index in range(len(items)):
            self.first_frames.append(self._create(index, keep_id=True))

    def _create(self, index: int, *, keep_id: bool, previous: str | None = None) -> dict[str, Any]:
        event_id = f"{self.prefix}item{index}" + ("" if keep_id else "_noid")
        self._in_line.append(_Create(event_id, index, keep_id))
        frame: dict[str, Any] = {
            "type": ev.CONVERSATION_ITEM_CREATE,
            "event_id": event_id,
            "item": self.items[index].restore_item(keep_id=keep_id),
        }
        if previous is not None:
            frame["previous_item_id"] = previous
        return frame

    @property
    def done(self) -> bool:
        return self.config_answered and not self._in_line

    def answer(self, event: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Take one event from the new upstream; returns frames to send now (a retry without the id)."""
        if event is None:
            return []
        kind = event.get("type")
        if kind == ev.SESSION_UPDATED:
            self.config_answered = True
        elif kind in (ev.CONVERSATION_ITEM_ADDED, ev.CONVERSATION_ITEM_CREATED) and self._in_line:
            create = self._in_line.popleft()
            self.restored += 1
            if create.kept_id:
                self._kept.add(create.index)
            item = event.get("item")
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                self.item_ids.add(item["id"])
        elif kind == ev.ERROR:
            event_id = answered_event_id(event)
            if event_id == self.config_event_id:
                self.config_answered = self.config_refused = True
                return []
            for create in self._in_line:
                if create.event_id == event_id:
                    self._in_line.remove(create)
                    if create.kept_id:
                        return [self._create(create.index, keep_id=False, previous=self._previous_kept(create.index))]
                    self.refused += 1
                    break
        return []

    def _previous_kept(self, index: int) -> str | None:
        """Where a retry goes: after the nearest earlier item kept under its id; with none, at the start ("root")
        when later items were sent before it (else the retry would land after them)."""
        earlier = [i for i in self._kept if i < index]
        if earlier:
            return self.items[max(earlier)].item_id
        return "root" if index < len(self.items) - 1 else None


class RestoreEcho:
    """What the new upstream may still send about a finished restore, which answers the relay's frames and is never
    forwarded: a second `session.updated` for its configuration (Yandex was seen sending two for one update) until
    the client sends a `session.update` of its own, and the restored items' later events (`conversation.item.done`,
    another `added`/`created`) until each item's `done`."""

    def __init__(self, item_ids: set[str], *, config: bool) -> None:
        self.item_ids = item_ids
        self.config = config  # False: a client update (sent again after the drop) is answered next

    @property
    def over(self) -> bool:
        return not self.config and not self.item_ids

    def takes(self, kind: object, event: dict[str, Any]) -> bool:
        if kind == ev.SESSION_UPDATED:
            taken, self.config = self.config, False
            return taken
        if kind in (ev.CONVERSATION_ITEM_ADDED, ev.CONVERSATION_ITEM_CREATED, ev.CONVERSATION_ITEM_DONE):
            item = event.get("item")
            item_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(item_id, str) and item_id in self.item_ids:
                if kind == ev.CONVERSATION_ITEM_DONE:
                    self.item_ids.discard(item_id)
                return True
        return False


# ---- one session's resume state -------------------------------------------------------------------------------

RESPONSE_FAILED_CODE: Final = "upstream_interrupted"
MAX_UNANSWERED_REQUESTS: Final = 16  # an upstream that answers none of them must not make the relay keep them all


def failed_response_done(response_id: str, number: int, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The relay-made end of a response the dropped upstream never finished (so no client waits forever); its
    `output` lists the response's messages as `incomplete`, so a client can close what it was playing."""
    return {
        "type": ev.RESPONSE_DONE,
        "event_id": f"relay_resume{number}_response_done",
        "response": {
            "id": response_id,
            "object": "realtime.response",
            "status": "failed",
            "status_details": {
                "type": "failed",
                "error": {
                    "type": "server_error",
                    "code": RESPONSE_FAILED_CODE,
                    "message": "the upstream connection dropped during this response; the relay reconnected",
                },
            },
            "output": output or [],
        },
    }


def resent_append(b64_audio: str, number: int, index: int) -> dict[str, Any]:
    """Audio forwarded before the drop, re-sent as the relay's own append (its own `relay_` event_id)."""
    return {"type": ev.INPUT_AUDIO_BUFFER_APPEND, "event_id": f"relay_resume{number}_audio{index}", "audio": b64_audio}


class ResumeState:
    """What one session remembers for a resume, fed with every frame the relay forwards (cheap on audio)."""

    def __init__(self, policy: ResumePolicy) -> None:
        self.policy = policy
        self.history = CompactHistory(policy.history_max_bytes)
        self.response_in_flight: str | None = None
        self.response_messages: list[dict[str, Any]] = []  # the response's assistant messages, as `incomplete`
        self.drops = 0  # numbers the relay's event ids of each resume
        self.resumes = 0
        # Client requests forwarded and not answered yet ((kind, event_id, text), oldest first): a drop loses
        # them with the old socket, so they are sent again after the restore.
        self.requests: deque[tuple[str, object, str]] = deque(maxlen=MAX_UNANSWERED_REQUESTS)

    def request_sent(self, kind: str, event_id: object, text: str) -> None:
        """A client `response.create` or `input_audio_buffer.commit` went (or will go) to the upstream."""
        self.requests.append((kind, event_id, text))

    def _request_answered(self, kind: str | None, event_id: object = None) -> None:
        for request in self.requests:
            if (kind is None or request[0] == kind) and (event_id is None or request[1] == event_id):
                self.requests.remove(request)
                return

    def on_server(self, kind: object, event: dict[str, Any]) -> None:
        if kind in _IGNORED:
            return
        if kind == ev.ERROR:
            answered = answered_event_id(event)
            if isinstance(answered, str):
                self._request_answered(None, answered)
        elif kind == ev.INPUT_AUDIO_BUFFER_COMMITTED:
            self._request_answered(ev.INPUT_AUDIO_BUFFER_COMMIT)
        elif kind in (ev.CONVERSATION_ITEM_ADDED, ev.CONVERSATION_ITEM_CREATED, ev.RESPONSE_OUTPUT_ITEM_ADDED):
            item = event.get("item")
            self.history.observe_item(item, complete=False)
            if kind == ev.RESPONSE_OUTPUT_ITEM_ADDED and _is_assistant_message(item):
                incomplete = {"object": "realtime.item", "type": "message", "role": "assistant", "status": "incomplete"}
                self.response_messages.append({"id": item["id"], **incomplete, "content": []})
        elif kind in (ev.CONVERSATION_ITEM_DONE, ev.RESPONSE_OUTPUT_ITEM_DONE):
            self.history.observe_item(event.get("item"), complete=True)
        elif kind == ev.INPUT_AUDIO_TRANSCRIPTION_COMPLETED:
            self.history.transcript(event.get("item_id"), event.get("transcript"))
        elif kind == ev.CONVERSATION_ITEM_DELETED:
            self.history.deleted(event.get("item_id"))
        elif kind == ev.RESPONSE_CREATED:
            self._request_answered(ev.RESPONSE_CREATE)
            response = event.get("response")
            response_id = response.get("id") if isinstance(response, dict) else None
            self.response_in_flight = response_id if isinstance(response_id, str) else ""
            self.response_messages = []
        elif kind == ev.RESPONSE_DONE:
            self.response_in_flight = None
            self.response_messages = []

    def dropped(
        self, unanswered_updates: list[str], uncommitted_audio: Iterable[tuple[str, float]]
    ) -> tuple[int, dict[str, Any] | None, GapQueue]:
        """The upstream dropped: (this drop's number, the response.done ending a response in flight or None,
        the queue for the gap: the session.updates it never answered, the audio appended since the last commit,
        then the requests it never answered)."""
        self.drops += 1
        ended = None
        if self.response_in_flight is not None:
            ended = failed_response_done(self.response_in_flight, self.drops, self.response_messages)
            self.response_in_flight = None
            self.response_messages = []
        gap = GapQueue(self.policy.gap_max_bytes, self.policy.buffer_seconds * 1000.0)
        for text in unanswered_updates:
            gap.add_resent(text)
        gap.seed(uncommitted_audio)
        # After the audio they may commit: the requests the old upstream never answered (a response.create that
        # got no response.created would otherwise leave a client waiting for a response that never comes).
        for _kind, _event_id, text in self.requests:
            gap.add_resent(text)
        self.requests.clear()
        return self.drops, ended, gap

    def restore(self, attempt: int, session: dict[str, Any]) -> Restore:
        """The restore of this attempt: `session` (the effective configuration) and the history."""
        return Restore(f"{self.drops}_{attempt}", session, self.history.restorable())


def _is_assistant_message(item: object) -> TypeGuard[dict[str, Any]]:
    return (
        isinstance(item, dict)
        and item.get("type") == "message"
        and item.get("role") == "assistant"
        and isinstance(item.get("id"), str)
    )


# Server events the resume state never looks at: the bulk of a session (audio and text deltas).
_IGNORED: Final = frozenset(
    {
        ev.RESPONSE_OUTPUT_AUDIO_DELTA,
        ev.RESPONSE_OUTPUT_TEXT_DELTA,
        ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA,
        ev.RESPONSE_FUNCTION_CALL_ARGUMENTS_DELTA,
        ev.INPUT_AUDIO_TRANSCRIPTION_DELTA,
    }
)


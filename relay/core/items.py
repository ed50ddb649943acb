"""The session's per-item bookkeeping: which items exist (role, format, whether they carry audio), the audio that
crossed the relay for each (kept, bounded, as the fallback when a retrieve brings none; the appended input audio is
`relay.core.appended`'s), truncate clamping, and saving an item's audio (docs/retrieve-after-done.md,
docs/client-input.md for the bounds). Nothing per item outlives its use: a saved item is forgotten (only its id
and forwarded audio length stay, for the last `MAX_FINISHED_ITEMS`); items never finished are bounded by
`MAX_TRACKED_ITEMS`.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from relay.core import events as ev
from relay.core.appended import AppendedAudio, decode_runs
from relay.core.formats import DEFAULT_FORMAT, AudioFormat
from relay.core.frames import b64_bytes, b64_decoded_len
from relay.core.keptaudio import RUN_BYTES, SEPARATOR, KeptAudio, KeptAudioBudget
from relay.core.outbox import AudioToSave
from relay.core.policy import SessionPolicy
from relay.core.retrieves import RetrieveLedger
from relay.core.update_line import UpdateLine, WaitingUpdate

# Items whose bookkeeping (format, forwarded audio for truncate clamping) is remembered per session; older ones
# with no retrieve in flight are forgotten, so a session's state does not grow with its number of turns.
MAX_TRACKED_ITEMS: Final = 256
# Items already saved (or done without audio) are forgotten at once; their ids are remembered, with the audio
# forwarded for them (a barge-in truncate usually comes after the item was saved), for this many items.
MAX_FINISHED_ITEMS: Final = 64
# Item ids become file names (<data_dir>/sessions/<sid>/<item_id>.wav): anything else is never saved
# (docs/retrieve-after-done.md).
SAFE_ITEM_ID_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")  # fullmatch only: `$` lets "\n" by
# Ids whose file would be another file of the session folder: `recording` is the session recording's name.
RESERVED_ITEM_IDS: Final = frozenset({"recording"})


def safe_item_id(item_id: str) -> bool:
    """Whether `item_id` may name a WAV in its session's folder (and its URL)."""
    return SAFE_ITEM_ID_RE.fullmatch(item_id) is not None and item_id not in RESERVED_ITEM_IDS


# A session id as it may name a folder, a log file and URLs (docs/event-log.md); fullmatch only.
SESSION_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A session id exactly as the relay mints it (`relay.bridge.new_session_id`): what retention may delete.
MINTED_SESSION_ID_RE: Final = re.compile(r"sess_[A-Za-z0-9]{16}")
_AUDIO_CONTENT_TYPES: Final = frozenset({"input_audio", "output_audio", "audio"})


@dataclass
class Item:
    """What the relay knows of one conversation item: enough to retrieve, save and clamp its audio."""

    item_id: str
    role: str | None = None  # "user" | "assistant" | None (unknown yet)
    format: AudioFormat | None = None
    has_audio: bool = False
    retrieve_sent: bool = False
    saved: bool = False
    # Deltas as received (base64), decoded only if a fallback save needs them: most items never do. Sealed runs
    # (pieces of the process-wide budget), then the open run's texts (relay.core.keptaudio, RUN_BYTES).
    output_audio: deque[KeptAudio] = field(default_factory=deque)
    output_open: list[str] = field(default_factory=list)
    output_open_bytes: int = 0
    output_audio_bytes: int = 0
    # The budget took some of its kept audio (oldest first): the pieces are dropped, this remembers the loss.
    output_audio_lost: bool = False
    output_forwarded_bytes: int = 0
    input_start_ms: float | None = None
    input_end_ms: float | None = None


def is_audio_part(part: object) -> bool:
    """A content part that carries audio (input, output, or either as the API spells it)."""
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    return isinstance(kind, str) and kind in _AUDIO_CONTENT_TYPES


class ItemBook(AppendedAudio):
    """Items and appended audio of one session, with the queues their decisions go to (a base of RelaySession)."""

    def __init__(self, policy: SessionPolicy, kept_audio: KeptAudioBudget | None) -> None:
        super().__init__(policy, kept_audio)
        self.output_format = DEFAULT_FORMAT
        self._stated_input_format = DEFAULT_FORMAT  # as the upstream last stated it
        self.updates = UpdateLine()  # session.updates waiting for their answers
        self._items: dict[str, Item] = {}
        # Forgotten items: id -> ms of audio forwarded for it (None: not an audio item), the newest last.
        self._finished: dict[str, int | None] = {}
        self._settle: list[str] = []  # items that may be finished, looked at once the current frame is handled
        self.retrieves = RetrieveLedger(on_settled=lambda item_id: self._settle.append(item_id))

    def _item(self, item_id: str, role: str | None) -> Item:
        item = self._items.get(item_id)
        if item is None:
            item = Item(item_id)
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

    def _observe_item(self, raw: object) -> Item | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            return None
        role = raw.get("role") if raw.get("type", "message") == "message" else None
        item = self._item(raw["id"], role if isinstance(role, str) and role in ("user", "assistant") else None)
        content = raw.get("content")
        if isinstance(content, list) and any(is_audio_part(c) for c in content):
            item.has_audio = True
            if item.role is None:
                item.role = (
                    "user" if any(isinstance(c, dict) and c.get("type") == "input_audio" for c in content) else "assistant"
                )
            if item.format is None:
                item.format = self.input_format if item.role == "user" else self.output_format
        return item

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
    def _forwarded_ms(item: Item) -> int | None:
        return int(item.format.ms(item.output_forwarded_bytes)) if item.format is not None else None

    def _finish(self, item: Item) -> None:
        """Nothing more will be saved for `item`: let go of its audio; it is forgotten once no retrieve of it is
        in flight (`_settle_items`)."""
        item.saved = True
        if self._unsaved_user_starts.pop(item.item_id, None) is not None:
            self._trim_input()  # the appended audio it held on to may go now
        self._free_output_audio(item)
        self._settle.append(item.item_id)

    def _settle_items(self) -> None:
        """Forget finished items nobody waits on; remember their ids (bounded) so they are never retrieved twice."""
        candidates, self._settle = self._settle, []
        for item_id in candidates:
            item = self._items.get(item_id)
            if item is None or not item.saved or item_id in self.retrieves:
                continue
            del self._items[item_id]
            # Seen again after it was forgotten: what was known the first time stands.
            known = self._finished.pop(item_id, None)
            self._finished[item_id] = known if known is not None else self._forwarded_ms(item)
            if len(self._finished) > MAX_FINISHED_ITEMS:
                del self._finished[next(iter(self._finished))]

    def _free_output_audio(self, item: Item) -> None:
        for piece in item.output_audio:
            self.kept_audio.free(piece)
        item.output_audio.clear()
        item.output_open = []
        item.output_open_bytes = 0

    def _seal_output(self, item: Item) -> None:
        """The item's open run becomes one piece of the budget."""
        pieces = item.output_audio
        while pieces and pieces[0].released:  # taken by the budget (or lost by the spool): a shell, not kept
            self.kept_audio.free(pieces.popleft())
            item.output_audio_lost = True
        pieces.append(self.kept_audio.keep(SEPARATOR.join(item.output_open), item.output_open_bytes, self.spool_owner))
        item.output_open = []
        item.output_open_bytes = 0

    def _forget_old_items(self) -> None:
        """Forget the oldest items past `MAX_TRACKED_ITEMS`: first those with no retrieve in flight; past twice
        the bound, any (an upstream that never answers must not make the relay remember every item)."""
        excess = len(self._items) - MAX_TRACKED_ITEMS
        hard = len(self._items) > 2 * MAX_TRACKED_ITEMS
        for item_id in list(self._items)[:-1]:  # never the item being added
            if excess <= 0:
                break
            if not hard and self.retrieves.in_flight(item_id):
                continue
            item = self._items.pop(item_id)
            self._free_output_audio(item)
            self._unsaved_user_starts.pop(item_id, None)
            if self.retrieves.forget(item_id):
                self._disarm.append(item_id)
            excess -= 1
        # Ids asked about that never became items (a client retrieving unknown ids whose errors carry no
        # event_id): the oldest go first.
        self.retrieves.trim(2 * MAX_TRACKED_ITEMS)

    def release_kept_audio(self) -> None:
        """Give every kept piece of audio back (the session is over: nothing more will be saved)."""
        for item in self._items.values():
            self._free_output_audio(item)
        self._release_input()

    def _save_from_stream(self, item: Item) -> None:
        if item.saved or item.format is None:
            return
        if item.role == "user":
            start = item.input_start_ms if item.input_start_ms is not None else 0.0
            pcm = self._input_span(start, item.input_end_ms if item.input_end_ms is not None else self._appended_ms)
        elif item.output_audio_lost or any(piece.released for piece in item.output_audio):
            pcm = None
        else:
            payloads = self.kept_audio.payloads(item.output_audio)
            pcm = None if None in payloads else decode_runs([*payloads, *item.output_open])
        if pcm is None:
            # Part of its audio was given back to the process-wide budget (or lost by the spool): a WAV with holes
            # would mislead.
            self._finish(item)
            self.log_relay(ev.RELAY_RETRIEVE_FAILED, {"item_id": item.item_id, "reason": "audio_released"})
            return
        self._queue_save(item, pcm, "stream")

    def _queue_save(self, item: Item, pcm: bytes, source: str) -> None:
        assert item.format is not None
        self._finish(item)  # the stream copy is no longer needed once the item is saved
        if not safe_item_id(item.item_id):
            return
        self._save.append(AudioToSave(item.item_id, pcm, item.format, source))

    def _save_retrieved(self, item: Item, raw: dict[str, Any], *, fallback: bool = True) -> None:
        pcm = bytearray()
        content = raw.get("content")
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and isinstance(part.get("audio"), str):
                decoded = b64_bytes(part["audio"])
                if decoded:
                    pcm += decoded
        if pcm and item.format is not None:
            self._queue_save(item, bytes(pcm), "retrieved")
        elif fallback:
            self._save_from_stream(item)

    # ---- the input format: the client's session.update takes effect at once (docs/event-log.md, audio_ms) ---
    # The upstream applies events in order, so the appends that follow a client's session.update are in the format
    # it asks for, long before its session.updated comes back. Each forwarded update waits in `updates` for its
    # answer; the answer confirms it, an error naming it undoes it.
    def _session_update_sent(self, event: dict[str, Any], text: str | None) -> None:
        """A `session.update` went upstream (the client's with its `text`, or the relay's pinned one at connect,
        None): it waits in line for its answer like any other."""
        event_id = event.get("event_id")
        session = event.get("session")
        audio = session.get("audio") if isinstance(session, dict) else None
        part = audio.get("input") if isinstance(audio, dict) else None
        asked = None
        if isinstance(part, dict) and "format" in part:
            asked = AudioFormat.from_config(part["format"], self.input_format)
        self.updates.sent(
            WaitingUpdate(
                event_id if isinstance(event_id, str) else None, session if isinstance(session, dict) else {}, asked, text
            )
        )
        if asked is not None:
            self.input_format = asked

    def _input_format_in_effect(self) -> AudioFormat:
        """The newest format a waiting update asks for, else the one the upstream stated last."""
        return self.updates.asked_input_format() or self._stated_input_format

    # ---- what server events tell about items (RelaySession dispatches to these by event type) ----------
    def _on_error(self, event: dict[str, Any]) -> AudioFormat | None:
        """An `error` answering one of the client's session.updates: that update never took effect."""
        error = event.get("error")
        if self.updates.refused(error.get("event_id") if isinstance(error, dict) else None):
            self.input_format = self._input_format_in_effect()
        return None

    def _on_session_config(self, event: dict[str, Any]) -> AudioFormat | None:
        """A forwarded `session.created`/`session.updated`: the oldest unanswered update is answered. A
        `session.updated` repeating the previous one word for word answers nothing new: Yandex has been seen
        answering one update twice, and taking the repeat as the next update's answer would end that update's
        wait before the upstream has read it."""
        if event.get("type") == ev.SESSION_UPDATED:
            self.updates.answered(event.get("session"))
        self._apply_session_config(event)
        return None

    def _apply_session_config(self, event: dict[str, Any]) -> None:
        """The audio formats and turn detection a `session.created`/`session.updated` states."""
        session = event.get("session")
        if isinstance(session, dict):
            audio = session.get("audio")
            if isinstance(audio, dict):
                self._observe_turn_detection(audio.get("input"))
                for direction in ("input", "output"):
                    part = audio.get(direction)
                    if isinstance(part, dict) and "format" in part:
                        if direction == "input":
                            self._stated_input_format = AudioFormat.from_config(part["format"], self._stated_input_format)
                        else:
                            self.output_format = AudioFormat.from_config(part["format"], self.output_format)
        self.input_format = self._input_format_in_effect()

    def _on_output_audio_delta(self, event: dict[str, Any]) -> AudioFormat | None:
        """Assistant audio forwarded: counted for truncate clamping, kept (bounded) for a fallback save."""
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
                    item.output_open.append(delta)
                    item.output_audio_bytes += n
                    item.output_open_bytes += n
                    if item.output_open_bytes >= RUN_BYTES:
                        self._seal_output(item)
            return item.format
        return self.output_format

    def _on_speech_started(self, event: dict[str, Any]) -> AudioFormat | None:
        """Where a user item starts on the appended-audio timeline."""
        start = event.get("audio_start_ms")
        item_id = event.get("item_id")
        if isinstance(item_id, str) and isinstance(start, (int, float)):
            item = self._item(item_id, "user")
            item.input_start_ms = float(start) + self._upstream_audio_origin_ms
            if not item.saved and self.policy.retrieve_after_done:
                self._unsaved_user_starts[item_id] = item.input_start_ms
        return None

    def _on_speech_stopped(self, event: dict[str, Any]) -> AudioFormat | None:
        """Where a user item ends on the appended-audio timeline."""
        end = event.get("audio_end_ms")
        item_id = event.get("item_id")
        if isinstance(item_id, str) and isinstance(end, (int, float)):
            item = self._item(item_id, "user")
            item.input_end_ms = float(end) + self._upstream_audio_origin_ms
        return None

    def _on_committed(self, event: dict[str, Any]) -> AudioFormat | None:
        """The uncommitted buffer became a user item."""
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

    def _on_item_added(self, event: dict[str, Any]) -> AudioFormat | None:
        """An item appeared: its role and whether it carries audio."""
        self._observe_item(event.get("item"))
        return None

    def _on_item_retrieved(self, event: dict[str, Any]) -> AudioFormat | None:
        """A retrieved item, as any other item; its audio is in its own format."""
        raw_item = event.get("item")
        if isinstance(raw_item, dict):
            self._observe_item(raw_item)
            return self._items[raw_item["id"]].format if isinstance(raw_item.get("id"), str) else None
        return None

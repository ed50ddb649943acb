"""The session's per-item and appended-audio bookkeeping: which items exist (role, format, whether they carry
audio), the audio that crossed the relay for each (kept, bounded, as the fallback when a retrieve brings none),
the appended input audio and its trimming, truncate clamping, and saving an item's audio (docs/retrieve-after-done.md,
docs/client-input.md for the bounds). Nothing per item outlives its use: a saved item is forgotten (only its id
and forwarded audio length stay, for the last `MAX_FINISHED_ITEMS`); items never finished are bounded by
`MAX_TRACKED_ITEMS`.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from relay.core import events as ev
from relay.core.formats import DEFAULT_FORMAT, AudioFormat
from relay.core.frames import b64_bytes, b64_decoded_len
from relay.core.keptaudio import KeptAudio, KeptAudioBudget
from relay.core.outbox import AudioToSave, Outbox
from relay.core.policy import SessionPolicy
from relay.core.retrieves import RetrieveLedger

# Items whose bookkeeping (format, forwarded audio for truncate clamping) is remembered per session; older ones
# with no retrieve in flight are forgotten, so a session's state does not grow with its number of turns.
MAX_TRACKED_ITEMS: Final = 256
# Items already saved (or done without audio) are forgotten at once; their ids are remembered, with the audio
# forwarded for them (a barge-in truncate usually comes after the item was saved), for this many items.
MAX_FINISHED_ITEMS: Final = 64
VAD_LAG_MARGIN_MS: Final = 2000.0  # how late a server's speech_started may name an onset, beyond its prefix padding
# Item ids become file names (<data_dir>/sessions/<sid>/<item_id>.wav): anything else is never saved
# (docs/retrieve-after-done.md).
SAFE_ITEM_ID_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")  # fullmatch only: `$` lets "\n" by
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
    # Deltas as received (base64), decoded only if a fallback save needs them: most items never do.
    output_audio: deque[KeptAudio] = field(default_factory=deque)
    output_audio_bytes: int = 0
    # The budget took some of its kept audio (oldest first): the pieces are dropped, this remembers the loss.
    output_audio_lost: bool = False
    output_forwarded_bytes: int = 0
    input_start_ms: float | None = None
    input_end_ms: float | None = None


class InputChunk(NamedTuple):
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


def is_audio_part(part: object) -> bool:
    """A content part that carries audio (input, output, or either as the API spells it)."""
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    return isinstance(kind, str) and kind in _AUDIO_CONTENT_TYPES


class ItemBook(Outbox):
    """Items and appended audio of one session, with the queues their decisions go to (a base of RelaySession)."""

    def __init__(self, policy: SessionPolicy, kept_audio: KeptAudioBudget | None) -> None:
        super().__init__()
        self.policy = policy
        # Shared by every session of a process (the bridge passes one in); a lone core gets its own.
        self.kept_audio = kept_audio if kept_audio is not None else KeptAudioBudget()
        self.input_format = DEFAULT_FORMAT
        self.output_format = DEFAULT_FORMAT
        self._items: dict[str, Item] = {}
        # Forgotten items: id -> ms of audio forwarded for it (None: not an audio item), the newest last.
        self._finished: dict[str, int | None] = {}
        self._settle: list[str] = []  # items that may be finished, looked at once the current frame is handled
        self.retrieves = RetrieveLedger(on_settled=lambda item_id: self._settle.append(item_id))
        self._input_chunks: deque[InputChunk] = deque()
        # Appended audio before this point was taken by the process-wide budget (its chunks are gone).
        self._released_input_until_ms = 0.0
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

    def _observe_turn_detection(self, audio_input: object) -> None:
        if not isinstance(audio_input, dict) or "turn_detection" not in audio_input:
            return
        detection = audio_input["turn_detection"]
        if not isinstance(detection, dict):
            self._vad_prefix_ms = None  # manual turns: the whole uncommitted buffer may become an item
            return
        prefix = detection.get("prefix_padding_ms", 300)
        self._vad_prefix_ms = float(prefix) if isinstance(prefix, (int, float)) and prefix >= 0 else 300.0

    def _note_append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            return
        fmt = self.input_format
        n_bytes = b64_decoded_len(audio)  # exact for valid base64; invalid audio is the upstream's to refuse
        start = self._appended_ms
        self._appended_ms = start + fmt.ms(n_bytes)
        if not self.policy.retrieve_after_done and self.policy.resume is None:
            return  # nothing will be saved or re-sent: keep no stream copy
        kept = self.kept_audio.keep(audio, n_bytes)
        self._input_chunks.append(InputChunk(start, self._appended_ms, kept, fmt.bytes_per_second, fmt.sample_width))
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
        while chunks and chunks[0].audio.released:  # taken by the budget (oldest first): drop the empty shell
            self._released_input_until_ms = max(self._released_input_until_ms, chunks.popleft().end_ms)

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
        self._unsaved_user_starts.pop(item.item_id, None)
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
        while self._input_chunks:
            self.kept_audio.free(self._input_chunks.popleft().audio)

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

    def _save_from_stream(self, item: Item) -> None:
        if item.saved or item.format is None:
            return
        if item.role == "user":
            pcm = self._input_span(item)
        elif item.output_audio_lost or any(piece.released for piece in item.output_audio):
            pcm = None
        else:
            pcm = b"".join(b64_bytes(piece.data) or b"" for piece in item.output_audio)
        if pcm is None:
            # Part of its audio was given back to the process-wide budget: a WAV with holes would mislead.
            self._finish(item)
            self.log_relay(ev.RELAY_RETRIEVE_FAILED, {"item_id": item.item_id, "reason": "audio_released"})
            return
        self._queue_save(item, pcm, "stream")

    def _input_span(self, item: Item) -> bytes | None:
        """The appended audio of a user item, or None when part of it was released for the budget."""
        start = item.input_start_ms if item.input_start_ms is not None else 0.0
        end = item.input_end_ms if item.input_end_ms is not None else self._appended_ms
        if start < self._released_input_until_ms:
            return None
        out = bytearray()
        for chunk in self._input_chunks:
            if chunk.end_ms <= start or chunk.start_ms >= end:
                continue
            if chunk.audio.released:
                return None
            pcm = b64_bytes(chunk.audio.data)
            if pcm is None:
                continue
            lo = chunk.offset(max(0.0, start - chunk.start_ms))
            hi = chunk.offset(end - chunk.start_ms) if end < chunk.end_ms else len(pcm)
            out += pcm[lo:hi]
        return bytes(out)

    def _queue_save(self, item: Item, pcm: bytes, source: str) -> None:
        assert item.format is not None
        self._finish(item)  # the stream copy is no longer needed once the item is saved
        if not SAFE_ITEM_ID_RE.fullmatch(item.item_id):
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

    # ---- what server events tell about items (RelaySession dispatches to these by event type) ----------
    def _on_session_config(self, event: dict[str, Any]) -> AudioFormat | None:
        """The audio formats and turn detection a `session.created`/`session.updated` states."""
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
                    pieces = item.output_audio
                    while pieces and pieces[0].released:  # taken by the budget: an empty shell, not kept
                        pieces.popleft()
                        item.output_audio_lost = True
                    pieces.append(self.kept_audio.keep(delta, n))
                    item.output_audio_bytes += n
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

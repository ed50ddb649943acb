"""The session's appended input audio: its timeline (where each append lies, in ms since the session's first), the
copy kept for fallback saves of user items and for a resume's re-send, and the trimming that bounds that copy
(docs/client-input.md, "Memory"; docs/retrieve-after-done.md for what is saved). A base of `ItemBook`: pure, no I/O.

Appends are kept in runs: each append's base64 text joins the open run (one list append per frame); a run is
sealed into one `KeptAudio` of the process-wide budget once it holds `RUN_BYTES` (or the input format changes),
so the budget, the spool and the trimming work per run, not per frame. The texts of a run are joined with
`SEPARATOR` (never part of valid base64), so each append can be decoded or re-sent as it came.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from relay.core.formats import DEFAULT_FORMAT
from relay.core.frames import b64_bytes, b64_decoded_len
from relay.core.keptaudio import RUN_BYTES, SEPARATOR, KeptAudio, KeptAudioBudget
from relay.core.outbox import Outbox
from relay.core.policy import SessionPolicy

VAD_LAG_MARGIN_MS: Final = 2000.0  # how late a server's speech_started may name an onset, beyond its prefix padding


class InputChunk(NamedTuple):
    """One sealed run of appends, as received."""

    start_ms: float
    end_ms: float
    audio: KeptAudio  # base64 texts joined by SEPARATOR, decoded only if a fallback save needs them
    bytes_per_second: int
    sample_width: int

    def offset(self, ms: float) -> int:
        """Byte offset of `ms` milliseconds into this chunk, on a sample boundary."""
        n = int(ms * self.bytes_per_second / 1000.0)
        return n - n % self.sample_width


def decode_runs(runs: Iterable[str | None]) -> bytes:
    """The audio of kept runs (base64 texts joined by SEPARATOR); invalid texts count as nothing."""
    return b"".join(b64_bytes(text) or b"" for run in runs if run for text in run.split(SEPARATOR))


class AppendedAudio(Outbox):
    """The appended-audio timeline of one session and the kept copy of its recent part."""

    def __init__(self, policy: SessionPolicy, kept_audio: KeptAudioBudget | None) -> None:
        super().__init__()
        self.policy = policy
        # Shared by every session of a process (the bridge passes one in); a lone core gets its own.
        self.kept_audio = kept_audio if kept_audio is not None else KeptAudioBudget()
        # The spool's handle for this session (set by `serve` when the process spools kept audio to disk).
        self.spool_owner: object = None
        self.input_format = DEFAULT_FORMAT
        self._input_chunks: deque[InputChunk] = deque()
        # The open run: appends not sealed yet (newest last), where it starts, its format and decoded size.
        self._open_texts: list[str] = []
        self._open_start_ms = 0.0
        self._open_format = DEFAULT_FORMAT
        self._open_bytes = 0
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
        if not self.policy.retrieve_after_done and self.policy.resume is None:
            self._appended_ms += fmt.ms(n_bytes)
            return  # nothing will be saved or re-sent: keep no stream copy
        texts = self._open_texts
        if not texts:
            self._open_start_ms = self._appended_ms
            self._open_format = fmt
        elif fmt is not self._open_format:
            self._seal_input()
            self._open_start_ms = self._appended_ms
            self._open_format = fmt
            texts = self._open_texts
        self._appended_ms += fmt.ms(n_bytes)
        texts.append(audio)
        self._open_bytes += n_bytes
        if self._open_bytes >= RUN_BYTES:
            self._seal_input()

    def _seal_input(self) -> None:
        """The open run becomes one kept chunk (ending where the timeline is now); then trim."""
        texts = self._open_texts
        if texts:
            fmt = self._open_format
            kept = self.kept_audio.keep(SEPARATOR.join(texts), self._open_bytes, self.spool_owner)
            chunk = InputChunk(self._open_start_ms, self._appended_ms, kept, fmt.bytes_per_second, fmt.sample_width)
            self._input_chunks.append(chunk)
            self._open_texts = []
            self._open_bytes = 0
        self._trim_input()

    def _open_chunk(self) -> InputChunk | None:
        """The open run as a chunk (not in the budget), for reading."""
        if not self._open_texts:
            return None
        fmt = self._open_format
        audio = KeptAudio(SEPARATOR.join(self._open_texts), self._open_bytes)
        return InputChunk(self._open_start_ms, self._appended_ms, audio, fmt.bytes_per_second, fmt.sample_width)

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
            shell = chunks.popleft()
            self.kept_audio.free(shell.audio)  # (a no-op unless the spool lost it: then it still counts)
            self._released_input_until_ms = max(self._released_input_until_ms, shell.end_ms)

    def _release_input(self) -> None:
        while self._input_chunks:
            self.kept_audio.free(self._input_chunks.popleft().audio)
        self._open_texts = []
        self._open_bytes = 0

    def uncommitted_audio(self, max_ms: float) -> list[tuple[str, float]]:
        """The appended audio no commit has taken yet, at most the last `max_ms` of it (whole appends), as
        (base64 audio, ms), oldest first. With server VAD only what a speech onset can still reach back to is
        kept at all (`_trim_input`), so an idle stream costs nothing more than it does for saving."""
        open_chunk = self._open_chunk()
        chunks: list[InputChunk] = []  # newest first, enough to cover `max_ms`
        covered = 0.0
        for chunk in reversed([*self._input_chunks, *([open_chunk] if open_chunk else [])]):
            if chunk.end_ms <= self._uncommitted_start_ms or covered >= max_ms or chunk.audio.released:
                break  # (released for the process-wide budget: the re-sent audio stays one contiguous tail)
            chunks.append(chunk)
            covered += chunk.end_ms - chunk.start_ms
        out: list[tuple[str, float]] = []
        total = 0.0
        for chunk, data in zip(chunks, self.kept_audio.payloads([c.audio for c in chunks]), strict=True):
            if data is None:  # released meanwhile, or unreadable
                break
            end = chunk.end_ms
            for text in reversed(data.split(SEPARATOR)):
                ms = b64_decoded_len(text) * 1000.0 / chunk.bytes_per_second if chunk.bytes_per_second else 0.0
                if end <= self._uncommitted_start_ms or total + ms > max_ms:
                    out.reverse()
                    return out
                out.append((text, ms))
                total += ms
                end -= ms
        out.reverse()
        return out

    def _input_span(self, start: float, end: float) -> bytes | None:
        """The appended audio from `start` to `end` ms, or None when part of it was released for the budget."""
        if start < self._released_input_until_ms:
            return None
        open_chunk = self._open_chunk()
        span = [c for c in (*self._input_chunks, *([open_chunk] if open_chunk else [])) if c.end_ms > start and c.start_ms < end]
        if any(chunk.audio.released for chunk in span):
            return None
        payloads = self.kept_audio.payloads([chunk.audio for chunk in span])
        if None in payloads:
            return None
        out = bytearray()
        for chunk, data in zip(span, payloads, strict=True):
            pcm = decode_runs([data])
            lo = chunk.offset(max(0.0, start - chunk.start_ms))
            hi = chunk.offset(end - chunk.start_ms) if end < chunk.end_ms else len(pcm)
            out += pcm[lo:hi]
        return bytes(out)

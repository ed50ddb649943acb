"""One session's recording: observes the audio crossing the relay and writes `recording.wav` as the session runs.

`SessionRecorder` is fed either the log entries the bridge carries out (`observe`: the user's appends as they went
upstream, the assistant's audio deltas as they went to the client, the client's truncates), or, in `mic` mode, the
device audio (`user_samples`: what the microphone captured; `played_samples`: what the speaker played). A forwarded
frame is noted with the time it crossed and placed at the next commit (one pass over what waits); each chunk is
placed on the session's timeline by `relay.recording.timeline` and, if any of it is kept there, decoded (G.711
too) and resampled to the recording rate with a streaming resampler per lane. Placed audio waits in memory until the
wall clock has passed it (`relay.recording.mixdown`; bounded by the lead limit, so memory does not grow with the
session), then at the loop's `CommitClock` turn it is rendered, with silence between, into stereo frames (left:
user, right: assistant) that one process-wide writer thread appends to the file (`GrowingWav`), every half second.

Trouble never reaches the session: a failed write stops the recording and is reported once
(`relay.recording_stopped`, reason `write_failed`), and so is reaching `recording_max_seconds` and a relay bug
while rendering (`internal_error`).
`finish()` writes what is left, closes the file and returns the `relay.recording_saved` record.

I/O: none on the loop; file writes go to the writer thread (`writer_executor`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from audio import pcm as pcmlib
from relay.core import events as ev
from relay.core.formats import DEFAULT_FORMAT, AudioFormat
from relay.core.frames import b64_decoded_len
from relay.core.outbox import LogEntry
from relay.recording.clock import CommitClock, write_blocks, writer_executor
from relay.recording.decoding import Int16Array, WireDecoder, b64_audio
from relay.recording.mixdown import Mixdown, Segment
from relay.recording.timeline import ArrivalLane, ItemLane, Placement, clip, ms_to_frames
from relay.recording.wavfile import GrowingWav

RECORDING_SAVED: Final = ev.RELAY_RECORDING_SAVED
RECORDING_STOPPED: Final = ev.RELAY_RECORDING_STOPPED
RECORDING_FILE: Final = "recording.wav"
ASSISTANT_AUDIO_DELTAS: Final = frozenset({ev.RESPONSE_OUTPUT_AUDIO_DELTA, "response.audio.delta"})

# Unwritten margin behind the clock: a user chunk may continue a run that ended up to 100 ms before its arrival.
COMMIT_LAG_MS: Final = 250
LEFT, RIGHT = 0, 1
TRUNCATE: Final = 2
# Frames crossing the relay are noted as they cross and placed in one pass per commit (the recorder's state is
# then touched once per half second, not per frame); a flood places them early, after this many.
MAX_WAITING_ARRIVALS: Final = 64
FINISH_TIMEOUT_S: Final = 10.0  # the longest a session's end waits for its recording to reach the file

_NO_SAMPLES: Final[Int16Array] = np.zeros(0, dtype="<i2")


@dataclass(frozen=True)
class RecordingOptions:
    rate: int = 24000
    max_lead_seconds: float = 5.0
    max_seconds: float = 4 * 3600.0
    # True: record the frames the relay forwards (`serve`); False: the caller feeds device audio (`mic`).
    from_frames: bool = True


@dataclass(slots=True)
class _PendingRun:
    """Contiguous chunks kept on one channel and not decoded yet: their base64 texts join into one (each is whole
    3-byte groups of whole samples), decoded once when the run ends or before anything reads the channel."""

    start: int
    item_id: str | None
    texts: list[str]
    frames: int


# A chunk of wire audio (or a truncate) as it crossed the relay, waiting to be placed: (when it crossed, by
# time.monotonic; channel LEFT, RIGHT or TRUNCATE; the base64 text, empty for a truncate; its format; the item id;
# a truncate's audio_end_ms). A plain tuple: a NamedTuple costs ~200 ns more to make, twice per round trip.
_Arrival = tuple[float, int, str, AudioFormat, object, float]


class SessionRecorder:
    """The recording of one session. Every method runs on the event loop."""

    def __init__(
        self,
        path: Path,
        url: str,
        options: RecordingOptions,
        *,
        started_mono: float,
        report: Callable[[str, dict[str, Any]], None],
        output_format: Callable[[], AudioFormat] = lambda: DEFAULT_FORMAT,
    ) -> None:
        self.path = path
        self.url = url
        self.options = options
        self.rate = options.rate
        self._started_mono = started_mono
        self._report = report
        self._output_format = output_format
        self._lead = ms_to_frames(options.max_lead_seconds * 1000.0, self.rate)
        self._lag = ms_to_frames(COMMIT_LAG_MS, self.rate)
        self._max_frames = ms_to_frames(options.max_seconds * 1000.0, self.rate)
        self._user = ArrivalLane(self.rate)
        self._assistant = ItemLane(self.rate)
        self._played = ArrivalLane(self.rate)  # mic: what the speaker played
        self._decoders = (WireDecoder(self.rate), WireDecoder(self.rate))
        # Per channel: where the timeline expects the current run to go on, and where its output has reached
        # (they differ by a resampler's filter delay).
        self._expected_end = [-1, -1]
        self._produced_end = [0, 0]
        self._assistant_item: str | None = None
        self._mix = Mixdown(self.rate)  # placed audio waiting to be written
        # Per channel: the run of plain PCM chunks at the recording rate placed since the last look (decoded in
        # one go: per chunk, decoding and queueing cost more than the audio's placement).
        self._runs: list[_PendingRun | None] = [None, None]
        self._arrivals: list[_Arrival] = []  # noted by `observe`, not placed yet
        self._written = 0  # frames handed to the writer
        self._dropped = 0  # frames not recorded: ahead of the lead limit, or behind what was written
        # Why the recording stopped early (max_seconds, write_failed, write_timeout, internal_error).
        self._stopped: str | None = None
        self._wav = GrowingWav(path, self.rate)
        self._clock: CommitClock | None = None
        self._finished = False

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._submit(self._wav.open)
        self._clock = CommitClock.of_running_loop()
        self._clock.join(self)

    def _now(self) -> int:
        return ms_to_frames((time.monotonic() - self._started_mono) * 1000.0, self.rate)

    def stop_on_error(self, exc: Exception) -> None:
        """A relay bug while committing: the recording stops here (`internal_error`), the session goes on."""
        if self._stopped is None:
            self._stop("internal_error", error=f"{exc.__class__.__name__}: {exc}")

    def commit_due(self, blocks: list[tuple[GrowingWav, bytes]]) -> None:
        """The clock's turn: render what the wall clock has passed into `blocks` (the clock hands them over)."""
        self._check_writer()
        self._place_arrivals()
        self._commit(self._now() - self._lag, blocks)

    async def finish(self) -> dict[str, Any]:
        """Write everything placed (the file ends at the session's end, or where placed audio ends if later),
        close the file and return the `relay.recording_saved` record."""
        self._place_waiting_safely()
        self._finished = True
        if self._clock is not None:
            self._clock.leave(self)
            self._clock = None
        self._check_writer()
        self._decode_run(LEFT)
        self._decode_run(RIGHT)
        end = max(self._now(), self._mix.end())
        blocks: list[tuple[GrowingWav, bytes]] = []
        self._commit(end, blocks)
        if blocks:
            self._submit(write_blocks, blocks)
        closed = self._submit(self._wav.close)
        try:
            await asyncio.wait_for(asyncio.wrap_future(closed), FINISH_TIMEOUT_S)
        except TimeoutError:  # a hung disk must not keep the session from ending
            if self._stopped is None:
                self._stop("write_timeout")
        self._check_writer()
        created = self._wav.created  # no file at all (its folder could not be made): nothing to point at
        return {
            "path": str(self.path) if created else None,
            "url": self.url if created else None,
            "duration_ms": round(self._wav.frames * 1000.0 / self.rate, 3),
            "bytes": self._wav.size,
            "dropped_ms": round(self._dropped * 1000.0 / self.rate, 3),
            "rate": self.rate,
            "stopped": self._stopped,
        }

    def _submit(self, fn: Callable[..., None], *args: Any) -> concurrent.futures.Future[None]:
        return writer_executor().submit(fn, *args)

    def _check_writer(self) -> None:
        error = self._wav.error
        if error is not None and self._stopped is None:
            self._stop("write_failed", error=error)

    def _stop(self, reason: str, **details: Any) -> None:
        self._stopped = reason
        self._runs = [None, None]
        self._arrivals.clear()
        self._mix.clear()
        at_ms = round(self._written * 1000.0 / self.rate, 3) if reason == "max_seconds" else None
        if reason == "write_failed":
            at_ms = round(self._wav.frames * 1000.0 / self.rate, 3)
        self._report(RECORDING_STOPPED, {"reason": reason, "at_ms": at_ms, "path": str(self.path), **details})

    # ---- what the bridge forwards (serve) ------------------------------------------------------------------
    def observe(self, entry: LogEntry) -> None:
        """One log entry the bridge has just carried out; only audio and truncates matter. Noted with the time it
        crossed; placed on the timeline at the next commit (or once MAX_WAITING_ARRIVALS are waiting)."""
        kind = entry.type
        if kind is None or not self.options.from_frames or self._stopped is not None:
            return
        event = entry.event
        if kind == ev.INPUT_AUDIO_BUFFER_APPEND:
            if entry.dir == "client" and isinstance(event, dict):
                audio = event.get("audio")
                if isinstance(audio, str) and audio:
                    self._arrive((time.monotonic(), LEFT, audio, entry.audio_format or DEFAULT_FORMAT, None, 0.0))
        elif kind in ASSISTANT_AUDIO_DELTAS:
            if entry.dir == "server" and isinstance(event, dict):
                delta = event.get("delta")
                if isinstance(delta, str) and delta:
                    fmt = entry.audio_format or self._output_format()  # the format in effect as it crossed
                    self._arrive((time.monotonic(), RIGHT, delta, fmt, event.get("item_id"), 0.0))
        elif kind == ev.CONVERSATION_ITEM_TRUNCATE and entry.dir == "client" and isinstance(event, dict):
            item_id, end = event.get("item_id"), event.get("audio_end_ms")
            if isinstance(item_id, str) and isinstance(end, (int, float)) and not isinstance(end, bool):
                self._arrive((time.monotonic(), TRUNCATE, "", DEFAULT_FORMAT, item_id, float(end)))

    def _arrive(self, arrival: _Arrival) -> None:
        arrivals = self._arrivals
        arrivals.append(arrival)
        if len(arrivals) >= MAX_WAITING_ARRIVALS:
            self._place_waiting_safely()

    def _place_waiting_safely(self) -> None:
        """Place what waits outside the clock's turn (a flood, the session's end): a relay bug there stops the
        recording, never the session's forwarding or its end (the clock's turn is guarded by the clock)."""
        if self._stopped is not None:
            return
        try:
            self._place_arrivals()
        except Exception as exc:
            self.stop_on_error(exc)

    def _place_arrivals(self) -> None:
        """Place what crossed since the last look, in the order it crossed, each at the time it crossed."""
        arrivals, self._arrivals = self._arrivals, []
        started, rate = self._started_mono, self.rate
        for mono, channel, text, fmt, item_id, end_ms in arrivals:
            now = ms_to_frames((mono - started) * 1000.0, rate)  # as `_now` does, for the moment it crossed
            if channel == LEFT:
                self._add_user(text, fmt, now)
            elif channel == RIGHT:
                self._add_assistant(text, fmt, item_id, now)
            elif isinstance(item_id, str):
                self._truncate(item_id, end_ms)

    # Wire audio is placed on the timeline first (its frame count follows from the base64 length) and decoded
    # only when some of it is kept: audio beyond the lead limit costs no decode.
    def _plain(self, audio: str, fmt: AudioFormat) -> bool:
        """PCM at the recording rate in whole samples and whole 3-byte groups (no padding): its frame count is
        `len(audio) * 3 // 8`, and its text joins a run's."""
        return fmt.rate == self.rate and fmt.type == "audio/pcm" and len(audio) % 8 == 0 and audio[-1:] != "="

    def _add_user(self, audio: str, fmt: AudioFormat, now: int) -> None:
        if self._finished:
            return
        plain = self._plain(audio, fmt)
        frames = len(audio) * 3 // 8 if plain else self._decoders[LEFT].frames_for(b64_decoded_len(audio), fmt)
        if frames <= 0:
            return
        limit = min(now + self._lead, self._max_frames)
        # The common case, a real-time stream continuing its run, takes the lanes' cheap path.
        start = self._user.extend(now, frames, self._written, limit) if plain else None
        if start is not None:
            if self._keep_whole(LEFT, None, audio, start, frames):
                return
            placed = Placement(start, 0, frames, 0)
        else:
            ahead = self._user.ahead(now, frames, now + self._lead)
            if ahead is not None:  # a flood at the lead limit
                self._drop_whole(LEFT, ahead, frames)
                return
            placed = self._user.place(now, frames, self._written, now + self._lead, self._max_frames)
        self._decode_and_keep(placed, LEFT, None, audio, fmt, limit, plain)

    def _add_assistant(self, delta: str, fmt: AudioFormat, item_id: object, now: int) -> None:
        key = item_id if isinstance(item_id, str) else ""
        decoder = self._decoders[RIGHT]
        if key != self._assistant_item:
            decoder.restart()
            self._assistant_item = key
            self._expected_end[RIGHT] = -1  # a new stream: its output starts where the item does
        if self._finished:
            return
        plain = self._plain(delta, fmt)
        frames = len(delta) * 3 // 8 if plain else decoder.frames_for(b64_decoded_len(delta), fmt)
        if frames <= 0:
            return
        limit = min(now + self._lead, self._max_frames)
        start = self._assistant.extend(key, now, frames, self._written, limit) if plain else None
        if start is not None:
            if self._keep_whole(RIGHT, key, delta, start, frames):
                return
            placed = Placement(start, 0, frames, 0)
        else:
            ahead = self._assistant.ahead(key, now, frames, now + self._lead)
            if ahead is not None:  # a flood at the lead limit
                self._drop_whole(RIGHT, ahead, frames)
                return
            placed = self._assistant.place(key, now, frames, self._written, now + self._lead, self._max_frames)
        self._decode_and_keep(placed, RIGHT, key, delta, fmt, limit, plain)

    def _decode_and_keep(
        self, placed: Placement, channel: int, item_id: str | None, audio: str, fmt: AudioFormat, limit: int, plain: bool
    ) -> None:
        """Keep what `placed` says of one wire chunk; `plain`: `_plain(audio, fmt)`, as the caller found it."""
        decoder = self._decoders[channel]
        if not placed.keep:
            # Nothing of it is kept: not decoded. A resampled stream restarts at the next kept chunk (its filter
            # must not run across the hole), which `_keep` lines up as a new run.
            decoder.restart()
            self._expected_end[channel] = -1
            self._count_dropped(placed)
            return
        whole = plain and not placed.skip and not placed.dropped
        if whole and self._keep_whole(channel, item_id, audio, placed.start, placed.keep):
            return
        self._decode_run(channel)
        data = b64_audio(audio)
        try:
            samples = decoder.wire(data, fmt)[0] if data else _NO_SAMPLES  # not base64: silence where it was placed
        except ValueError:  # a rate no resampler takes: the upstream will refuse that audio too
            return
        self._keep(placed, channel, item_id, samples, placed.keep + placed.dropped, limit)

    def _drop_whole(self, channel: int, start: int, frames: int) -> None:
        """A chunk the lane dropped whole, ahead of the clock (a flood at the lead limit): not decoded, counted as
        dropped (audio past the file's cap is not: the cap is reported once, by itself)."""
        self._decoders[channel].restart()  # its filter must not run across the hole
        self._expected_end[channel] = -1
        if start < self._max_frames:
            self._dropped += frames

    def _keep_whole(self, channel: int, item_id: str | None, audio: str, origin: int, frames: int) -> bool:
        """A plain chunk placed whole at `origin`: joins the channel's pending run (or starts one), undecoded. False
        when its output would not line up with the timeline (a resampler's delay is pending): the caller decodes."""
        if origin == self._expected_end[channel] and self._produced_end[channel] != origin:
            return False
        self._expected_end[channel] = self._produced_end[channel] = origin + frames
        run = self._runs[channel]
        if run is not None and run.item_id == item_id and run.start + run.frames == origin:
            run.texts.append(audio)
            run.frames += frames
        else:
            self._decode_run(channel)
            self._runs[channel] = _PendingRun(origin, item_id, [audio], frames)
        return True

    def _decode_run(self, channel: int) -> None:
        """Decode the channel's pending run into one queued segment (a chunk that is not base64 is silence)."""
        run = self._runs[channel]
        if run is None:
            return
        self._runs[channel] = None
        data = b64_audio(run.texts[0] if len(run.texts) == 1 else "".join(run.texts))
        if data is None:  # one bad chunk among them: decoded one by one
            data = b"".join(b64_audio(text) or bytes(len(text) * 3 // 4) for text in run.texts)
        self._mix.queue(channel, Segment(run.start, run.item_id, np.frombuffer(data, dtype="<i2")))

    def _truncate(self, item_id: str, audio_end_ms: float) -> None:
        span = self._assistant.truncate(item_id, audio_end_ms)
        if span is None:
            return
        self._decode_run(RIGHT)
        cut, end = span
        self._mix.cut(RIGHT, item_id, cut)
        if cut < self._written:  # part of it is already in the file: silence it there
            self._submit(self._wav.erase_right, cut, min(end, self._written))

    # ---- device audio (mic) ----------------------------------------------------------------------------------
    def user_samples(self, samples: npt.ArrayLike, rate: int) -> None:
        """A block the microphone captured, just handed to the loop."""
        if self._stopped is None:
            data = pcmlib.float_to_pcm16(samples)
            self._place(self._user, LEFT, *self._decoders[LEFT].pcm16(data, rate))

    def played_samples(self, samples: npt.ArrayLike, rate: int, at_mono: float | None = None) -> None:
        """A block the speaker's callback played at monotonic time `at_mono` (default: now)."""
        if self._stopped is not None:
            return
        data = pcmlib.float_to_pcm16(samples)
        at = None if at_mono is None else ms_to_frames((at_mono - self._started_mono) * 1000.0, self.rate)
        self._place(self._played, RIGHT, *self._decoders[RIGHT].pcm16(data, rate), at)

    # ---- placing and writing -----------------------------------------------------------------------------
    def _place(self, lane: ArrivalLane, channel: int, samples: Int16Array, expected: int, at: int | None = None) -> None:
        if expected <= 0 or self._finished:
            return
        now = self._now()
        placed = lane.place(now if at is None else at, expected, self._written, now + self._lead, self._max_frames)
        self._keep(placed, channel, None, samples, expected, min(now + self._lead, self._max_frames))

    def _keep(
        self, placed: Placement, channel: int, item_id: str | None, samples: Int16Array, expected: int, limit: int
    ) -> None:
        """Queue a chunk's output where its run's output has reached (the timeline placed `expected` frames)."""
        origin = placed.start - placed.skip
        lined_up = origin != self._expected_end[channel] or self._produced_end[channel] == origin
        if lined_up and not placed.skip and not placed.dropped and len(samples) == expected:
            # The common case (same rate, nothing clipped): output and timeline line up.
            self._expected_end[channel] = self._produced_end[channel] = origin + expected
            self._mix.queue(channel, Segment(origin, item_id, samples))
            return
        if origin != self._expected_end[channel]:  # a new run: its output starts where it does
            self._produced_end[channel] = origin
        self._expected_end[channel] = origin + expected
        at = self._produced_end[channel]
        self._produced_end[channel] = at + len(samples)
        out = clip(at, len(samples), self._written, limit)
        if out.keep:
            piece = samples[out.skip : out.skip + out.keep]
            # A part of a chunk is copied: a view would keep the whole chunk (and the buffer under it) in memory
            # until that part is written, however few frames of it are queued.
            self._mix.queue(channel, Segment(out.start, item_id, piece if out.keep == len(samples) else piece.copy()))
        self._count_dropped(placed)

    def _count_dropped(self, placed: Placement) -> None:
        if placed.dropped:
            end = placed.start + placed.keep
            # Audio past the file's cap is not "dropped" audio: the cap is reported once, by itself.
            over_cap = max(0, end + placed.dropped - self._max_frames) if end >= self._max_frames else 0
            self._dropped += placed.dropped - min(over_cap, placed.dropped)

    def _commit(self, upto: int, blocks: list[tuple[GrowingWav, bytes]]) -> None:
        """Render [written, upto) as stereo frames into `blocks`, for the writer."""
        if self._stopped is not None:
            return
        self._decode_run(LEFT)
        self._decode_run(RIGHT)
        upto = min(upto, self._max_frames)
        start = self._written
        if upto > start:
            blocks.append((self._wav, self._mix.render(start, upto)))
            self._written = upto
        if self._written >= self._max_frames and self._stopped is None:
            self._stop("max_seconds")

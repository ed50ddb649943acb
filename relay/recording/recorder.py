"""One session's recording: observes the audio crossing the relay and writes `recording.wav` as the session runs.

`SessionRecorder` is fed either the log entries the bridge carries out (`observe`: the user's appends as they went
upstream, the assistant's audio deltas as they went to the client, the client's truncates), or, in `mic` mode, the
device audio (`user_samples`: what the microphone captured; `played_samples`: what the speaker played). A forwarded
frame is noted with the time it crossed and placed at the next commit (one pass over what waits). Two shortcuts place
it as it crosses, with no Python per chunk (`relay.recording.intake`): in real time, a chunk that continues its
channel's run is taken by the run extender armed at each commit; in a flood (audio far faster than real time, past the
lead limit), a chunk its lane is known to be too far ahead for is dropped by the flood gate. Each chunk is placed on
the session's timeline by `relay.recording.timeline` and, if any of it is kept there, decoded (G.711 too) and
resampled to the recording rate with a streaming resampler per lane (`relay.recording.lineup`). Placed audio waits in
memory until the wall clock has passed it (`relay.recording.mixdown`; bounded by the lead limit, so memory does not
grow with the session), then at the loop's `CommitClock` turn it is rendered, with silence between, into stereo frames
(left: user, right: assistant) that one process-wide writer thread appends to the file (`GrowingWav`), every half
second.

Trouble never reaches the session: a failed write stops the recording and is reported once (`relay.recording_stopped`,
reason `write_failed`), and so is reaching `recording_max_seconds` and a relay bug while rendering (`internal_error`).
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

import numpy.typing as npt

from audio import pcm as pcmlib
from relay.core import events as ev
from relay.core.formats import DEFAULT_FORMAT, AudioFormat
from relay.core.frames import b64_decoded_len
from relay.core.outbox import LogEntry
from relay.recording.clock import CommitClock, write_blocks, writer_executor
from relay.recording.decoding import Int16Array
from relay.recording.intake import LEFT, RIGHT, TRUNCATE, RunExtender, pass_over, read_chunk
from relay.recording.lineup import ChannelOutput
from relay.recording.mixdown import Mixdown
from relay.recording.timeline import ArrivalLane, ItemLane, Placement, ms_to_frames
from relay.recording.wavfile import GrowingWav

RECORDING_SAVED: Final = ev.RELAY_RECORDING_SAVED
RECORDING_STOPPED: Final = ev.RELAY_RECORDING_STOPPED
RECORDING_FILE: Final = "recording.wav"

# Unwritten margin behind the clock: a user chunk may continue a run that ended up to 100 ms before its arrival.
COMMIT_LAG_MS: Final = 250
# Frames crossing the relay are noted as they cross and placed in one pass per commit (the recorder's state is
# then touched once per half second, not per frame); a flood places them early, after this many.
MAX_WAITING_ARRIVALS: Final = 64
GATE_MARGIN_S: Final = 0.001  # the flood gate closes this much early: the clock's rounding to frames moves less
FINISH_TIMEOUT_S: Final = 10.0  # the longest a session's end waits for its recording to reach the file


@dataclass(frozen=True)
class RecordingOptions:
    rate: int = 24000
    max_lead_seconds: float = 5.0
    max_seconds: float = 4 * 3600.0
    # True: record the frames the relay forwards (`serve`); False: the caller feeds device audio (`mic`).
    from_frames: bool = True


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
        self._from_frames = options.from_frames
        self._started_mono = started_mono
        self._report = report
        self._output_format = output_format
        self._lead = ms_to_frames(options.max_lead_seconds * 1000.0, self.rate)
        self._lag = ms_to_frames(COMMIT_LAG_MS, self.rate)
        self._max_frames = ms_to_frames(options.max_seconds * 1000.0, self.rate)
        self._user = ArrivalLane(self.rate)
        self._assistant = ItemLane(self.rate)
        self._played = ArrivalLane(self.rate)  # mic: what the speaker played
        self._assistant_item: str | None = None
        self._mix = Mixdown(self.rate)  # placed audio waiting to be written
        self._out = (ChannelOutput(LEFT, self._mix, self.rate), ChannelOutput(RIGHT, self._mix, self.rate))
        self._arrivals: list[_Arrival] = []  # noted by `observe`, not placed yet
        self._flooding = [False, False]  # per channel: its last chunk was dropped ahead of the clock
        # The flood gate per channel (relay.recording.intake), while open: (until when a chunk like the one that
        # opened it is dropped, its format, item, base64 length, frames, frames counted as dropped).
        self._gates: list[tuple[float, AudioFormat, str | None, int, int, int] | None] = [None, None]
        self._gate_frames = 0  # assistant frames the gate dropped, not told to the lane yet
        # In real time, between commits, the chunks that continue their channel's run are taken by the extender
        # (relay.recording.intake) while `_extending`: nothing waits then and no gate is open.
        self._extender = RunExtender(self.rate, self._user.continue_within, self._lead, self._max_frames, started_mono)
        self._extending = False
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
        self._release_runs()
        self._check_writer()
        self._place_arrivals()
        self._commit(self._now() - self._lag, blocks)
        self._arm_runs()

    async def finish(self) -> dict[str, Any]:
        """Write everything placed (the file ends at the session's end, or where placed audio ends if later),
        close the file and return the `relay.recording_saved` record."""
        self._release_runs()
        self._place_waiting_safely()
        self._close_gate(LEFT)
        self._close_gate(RIGHT)
        self._finished = True
        if self._clock is not None:
            self._clock.leave(self)
            self._clock = None
        self._check_writer()
        self._out[LEFT].decode_run()
        self._out[RIGHT].decode_run()
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
        if self._clock is not None:
            self._clock.hand_over()  # the blocks already rendered reach the file first
        return writer_executor().submit(fn, *args)

    def _check_writer(self) -> None:
        error = self._wav.error
        if error is not None and self._stopped is None:
            self._stop("write_failed", error=error)

    def _stop(self, reason: str, **details: Any) -> None:
        self._stopped = reason
        self._extending = False
        for channel, out in enumerate(self._out):
            self._extender.disarm(channel)
            out.forget()
        self._arrivals.clear()
        self._mix.clear()
        at_ms = round(self._written * 1000.0 / self.rate, 3) if reason == "max_seconds" else None
        if reason == "write_failed":
            at_ms = round(self._wav.frames * 1000.0 / self.rate, 3)
        self._report(RECORDING_STOPPED, {"reason": reason, "at_ms": at_ms, "path": str(self.path), **details})

    # ---- what the bridge forwards (serve) ------------------------------------------------------------------
    def observe(self, entries: list[LogEntry]) -> None:
        """The log entries one bridge flush carried out, in order; only audio and truncates matter. Each chunk is noted
        with the time it crossed; placed on the timeline at the next commit (or once MAX_WAITING_ARRIVALS wait)."""
        if not self._from_frames or self._stopped is not None:
            return
        mono = time.monotonic()  # the flush's frames crossed together (the event log stamps them so too)
        index, count = 0, len(entries)
        while index < count:
            # One call passes over what is not audio and takes what needs no Python per chunk: in a flood (a gate
            # open, nothing waiting) what the gates drop, in real time what continues the armed runs.
            left, right = self._gates
            if (left is not None or right is not None) and not self._arrivals:
                index, dropped, skipped = pass_over(entries, index, mono, left, right, DEFAULT_FORMAT, self._output_format)
                self._dropped += dropped
                self._gate_frames += skipped
            else:
                index = self._extender.take(entries, index, mono, DEFAULT_FORMAT, self._output_format)
            if index == count:
                return
            self._release_runs()  # the entry it stopped at is taken up here
            entry = entries[index]
            index += 1
            chunk = read_chunk(entry, DEFAULT_FORMAT, self._output_format)
            if chunk == TRUNCATE:
                item_id, end = entry.event.get("item_id"), entry.event.get("audio_end_ms")
                if isinstance(item_id, str) and isinstance(end, (int, float)) and not isinstance(end, bool):
                    self._arrive((mono, TRUNCATE, "", DEFAULT_FORMAT, item_id, float(end)))
            elif isinstance(chunk, tuple):
                channel, audio, item_id, fmt = chunk
                self._note(channel, item_id, audio, fmt, mono)
            if self._stopped is not None:
                return

    def _arm_runs(self) -> None:
        """After a commit, with nothing waiting and no gate open: each channel whose next chunk the lane would place
        at the end of its run (the assistant's: of its current item), and its output keep undecoded, is armed there."""
        if self._stopped is not None or self._finished or self._arrivals or self._gates != [None, None]:
            return
        user_end, item = self._user.end, self._assistant_item
        for channel, end in ((LEFT, user_end), (RIGHT, self._assistant.run_end(item) if item else None)):
            if end is not None and end >= self._written and not self._flooding[channel] and self._out[channel].lines_up(end):
                self._extender.arm(channel, end, item if channel == RIGHT else None)
                self._extending = True

    def _release_runs(self) -> None:
        """The lanes and outputs hear of the chunks the extender took (as if placed one by one), before anything
        else reads or moves them."""
        if not self._extending:
            return
        self._extending = False
        for channel in (LEFT, RIGHT):
            taken = self._extender.disarm(channel)
            if taken is None or not taken[1]:
                continue
            origin, frames, texts = taken
            if channel == LEFT:
                self._user.extended_by(frames)
                self._out[LEFT].keep_texts(None, texts, origin, frames)
            else:
                item = self._assistant_item
                assert item is not None  # the run was armed with it
                self._assistant.extended_by(item, frames)
                self._out[RIGHT].keep_texts(item, texts, origin, frames)

    def _note(self, channel: int, item_id: object, audio: str, fmt: AudioFormat, mono: float) -> None:
        """A chunk that crossed, not dropped by the flood gate: with nothing waiting before it (for the assistant: of
        the current item), `_placed_now` may place it now; else it is noted, to be placed in its turn."""
        try:
            if not self._arrivals and (channel == LEFT or item_id == self._assistant_item):
                item = self._assistant_item if channel == RIGHT else None
                if self._placed_now(channel, item, audio, fmt, mono):
                    return
        except Exception as exc:  # on the forwarding path: a relay bug stops the recording, never the session
            self.stop_on_error(exc)
            return
        self._arrive((mono, channel, audio, fmt, item_id, 0.0))

    def _close_gate(self, channel: int) -> None:
        """The lane is about to move or be read: the gate's skipped assistant frames are told to it first."""
        gate = self._gates[channel]
        if gate is None:
            return
        self._gates[channel] = None
        if channel == RIGHT and self._gate_frames:
            self._assistant.skip(gate[2], self._gate_frames)
            self._gate_frames = 0

    def _placed_now(self, channel: int, item_id: str | None, audio: str, fmt: AudioFormat, mono: float) -> bool:
        """A flood, placed as it crosses (nothing waits before it): a chunk its lane runs too far ahead for is dropped
        whole, as placing it later would (the lanes' `ahead`), and the chunk after such a drop is placed at once (the
        next ones are likely dropped against it). False: noted to be placed later, as real-time audio is."""
        self._close_gate(channel)
        if self._finished:
            return False
        now = ms_to_frames((mono - self._started_mono) * 1000.0, self.rate)
        plain = self._plain(audio, fmt)
        frames = len(audio) * 3 // 8 if plain else self._out[channel].decoder.frames_for(b64_decoded_len(audio), fmt)
        if frames > 0:
            limit = now + self._lead
            if channel == LEFT:
                start = self._user.ahead(now, frames, limit)
            else:
                start = self._assistant.ahead(item_id, now, frames, limit) if item_id is not None else None
            if start is not None:
                self._drop_whole(channel, start, frames, fmt if plain else None, item_id if channel == RIGHT else None)
                return True
        if not self._flooding[channel]:
            return False
        self._flooding[channel] = False
        self._add(channel, audio, fmt, item_id, now)
        return True

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
            if channel != TRUNCATE:
                self._add(channel, text, fmt, item_id, now)
            elif isinstance(item_id, str):
                self._truncate(item_id, end_ms)

    # Wire audio is placed on the timeline first (its frame count follows from the base64 length) and decoded
    # only when some of it is kept: audio beyond the lead limit costs no decode.
    def _plain(self, audio: str, fmt: AudioFormat) -> bool:
        """PCM at the recording rate in whole samples and whole 3-byte groups (no padding): its frame count is
        `len(audio) * 3 // 8`, and its text joins a run's."""
        return fmt.rate == self.rate and fmt.type == "audio/pcm" and len(audio) % 8 == 0 and audio[-1:] != "="

    def _add(self, channel: int, audio: str, fmt: AudioFormat, item_id: object, now: int) -> None:
        """Place a wire chunk that crossed at frame `now` on its channel's lane (the assistant's: as its item's
        audio) and keep what of it is placed."""
        self._close_gate(channel)
        out, key = self._out[channel], None
        if channel == RIGHT:
            key = item_id if isinstance(item_id, str) else ""
            if key != self._assistant_item:
                out.restart()  # a new stream: its output starts where the item does
                self._assistant_item = key
        if self._finished:
            return
        plain = self._plain(audio, fmt)
        frames = len(audio) * 3 // 8 if plain else out.decoder.frames_for(b64_decoded_len(audio), fmt)
        if frames <= 0:
            return
        limit = now + self._lead
        ahead = self._user.ahead(now, frames, limit) if key is None else self._assistant.ahead(key, now, frames, limit)
        if ahead is not None:  # a flood at the lead limit
            self._drop_whole(channel, ahead, frames, fmt if plain else None, key)
            return
        if key is None:
            placed = self._user.place(now, frames, self._written, limit, self._max_frames)
        else:
            placed = self._assistant.place(key, now, frames, self._written, limit, self._max_frames)
        if out.keep_wire(placed, key, audio, fmt, plain, self._written, min(limit, self._max_frames)):
            self._count_dropped(placed)

    def _drop_whole(self, channel: int, start: int, frames: int, plain: AudioFormat | None, item_id: str | None) -> None:
        """A chunk the lane dropped whole, ahead of the clock (a flood at the lead limit): not decoded, counted as
        dropped (audio past the file's cap is not: the cap is reported once, by itself). Its callers have closed the
        channel's gate. The lane stays where it was, so for a plain chunk (`plain`: its format) the flood gate opens:
        a chunk like it is dropped as long as the clock is before both `start` and `start + frames - lead` (what
        `ahead` checks), less a millisecond (far more than the clock's rounding to frames can move)."""
        self._out[channel].restart()  # its filter must not run across the hole
        self._flooding[channel] = True
        counted = frames if start < self._max_frames else 0
        if plain is not None:
            until = self._started_mono + min(start, start + frames - self._lead) / self.rate - GATE_MARGIN_S
            self._gates[channel] = (until, plain, item_id, frames * 8 // 3, frames, counted)
        self._dropped += counted

    def _truncate(self, item_id: str, audio_end_ms: float) -> None:
        self._close_gate(RIGHT)
        span = self._assistant.truncate(item_id, audio_end_ms)
        if span is None:
            return
        self._out[RIGHT].decode_run()
        cut, end = span
        self._mix.cut(RIGHT, item_id, cut)
        if cut < self._written:  # part of it is already in the file: silence it there
            self._submit(self._wav.erase_right, cut, min(end, self._written))

    # ---- device audio (mic) ----------------------------------------------------------------------------------
    def user_samples(self, samples: npt.ArrayLike, rate: int) -> None:
        """A block the microphone captured, just handed to the loop."""
        if self._stopped is None:
            data = pcmlib.float_to_pcm16(samples)
            self._place(self._user, LEFT, *self._out[LEFT].decoder.pcm16(data, rate))

    def played_samples(self, samples: npt.ArrayLike, rate: int, at_mono: float | None = None) -> None:
        """A block the speaker's callback played at monotonic time `at_mono` (default: now)."""
        if self._stopped is not None:
            return
        data = pcmlib.float_to_pcm16(samples)
        at = None if at_mono is None else ms_to_frames((at_mono - self._started_mono) * 1000.0, self.rate)
        self._place(self._played, RIGHT, *self._out[RIGHT].decoder.pcm16(data, rate), at)

    # ---- placing and writing -----------------------------------------------------------------------------
    def _place(self, lane: ArrivalLane, channel: int, samples: Int16Array, expected: int, at: int | None = None) -> None:
        if expected <= 0 or self._finished:
            return
        now = self._now()
        placed = lane.place(now if at is None else at, expected, self._written, now + self._lead, self._max_frames)
        self._out[channel].keep(placed, None, samples, expected, self._written, min(now + self._lead, self._max_frames))
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
        self._out[LEFT].decode_run()
        self._out[RIGHT].decode_run()
        upto = min(upto, self._max_frames)
        start = self._written
        if upto > start:
            blocks.append((self._wav, self._mix.render(start, upto)))
            self._written = upto
        if self._written >= self._max_frames and self._stopped is None:
            self._stop("max_seconds")

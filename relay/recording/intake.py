"""What the recorder takes in from a bridge flush without its own Python per entry: pure, no I/O.

Two passes over `entries[start:]`, each returning the index of the first entry the recorder must take up itself
(`len(entries)` when none is left). Both pass over an entry that is neither audio nor a client's truncate, and audio
whose text is not a non-empty string; both stop at a client's truncate. An entry's audio is the user's (a client's
`input_audio_buffer.append`, its `audio`) or the assistant's (a server's audio delta, its `delta` and `item_id`), in
the entry's format, else `default_format` for the user's and `output_format()` for the assistant's (the format in
effect as it crossed, asked only for such an entry).

- `pass_over(entries, start, mono, left_gate, right_gate, default_format, output_format) -> (index, dropped,
  skipped)`, in a flood: a chunk like the one that opened its channel's flood gate is dropped while that gate is
  open (`relay.recording.recorder`, `_drop_whole`: same format, same item, same base64 length, unpadded, before the
  gate's time). A gate is the tuple `(until, format, item_id, base64 length, frames, frames counted as dropped)`;
  None is a closed gate. `dropped` is the frames the gates dropped (each gate's last field per chunk), `skipped`
  the frames of the assistant's chunks among them (its lane must hear of those).
- `RunExtender`, in real time: for each channel the recorder armed (`arm(channel, end, item_id)`: its run of plain
  chunks ends at timeline frame `end`; the assistant's is of item `item_id`), `take(entries, start, mono,
  default_format, output_format) -> index` takes every chunk that continues that run as the lanes' `place` and
  the output's `keep_whole` would place it: PCM at the recording rate, whole 3-byte groups, unpadded, of the armed
  item, arriving (at `mono`) within `continue_within` frames of the run's end and ending before both the clock plus
  `lead` and `max_frames`. `disarm(channel)` returns what was taken since `arm` as `(origin, frames, texts)` (None
  when the channel was not armed), for the recorder to hand to its lane and output in one step.

In a flood nearly every entry is dropped at a gate, in real time nearly every chunk continues its run; so both run
in native code when it was built (`_intake.c`, the same answers; docs/performance.md, "The thirteenth round" and
"The fourteenth round"), else in Python here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol

from relay.core import events as ev
from relay.core.formats import AudioFormat
from relay.core.outbox import LogEntry
from relay.recording.timeline import ms_to_frames

ASSISTANT_AUDIO_DELTAS: Final = frozenset({ev.RESPONSE_OUTPUT_AUDIO_DELTA, "response.audio.delta"})
LEFT, RIGHT = 0, 1
TRUNCATE: Final = 2
Gate = tuple[float, AudioFormat, Any, int, int, int]
PassOver = Callable[
    [list[LogEntry], int, float, "Gate | None", "Gate | None", AudioFormat, Callable[[], AudioFormat]],
    tuple[int, int, int],
]
# A chunk as both passes (and the recorder) read an entry: (channel, its base64 text, its item id, its format).
Chunk = tuple[int, str, Any, AudioFormat]


class Extender(Protocol):
    """What `RunExtender` is, natively or in Python."""

    def __init__(self, rate: int, continue_within: int, lead: int, max_frames: int, started_mono: float) -> None: ...
    def arm(self, channel: int, end: int, item_id: str | None, /) -> None: ...
    def take(
        self, entries: list[LogEntry], start: int, mono: float, default_format: AudioFormat,
        output_format: Callable[[], AudioFormat], /,
    ) -> int: ...  # fmt: skip
    def disarm(self, channel: int, /) -> tuple[int, int, list[str]] | None: ...


# The event types the native version tells apart, in the order it takes them (passed once, at import).
KINDS: Final = (ev.INPUT_AUDIO_BUFFER_APPEND, ASSISTANT_AUDIO_DELTAS, ev.CONVERSATION_ITEM_TRUNCATE)


def read_chunk(entry: LogEntry, default_format: AudioFormat, output_format: Callable[[], AudioFormat]) -> Chunk | int | None:
    """The entry as audio of a channel, TRUNCATE (a client's truncate), or None (passed over)."""
    kind, event = entry.type, entry.event
    if kind == ev.INPUT_AUDIO_BUFFER_APPEND:
        if entry.dir != "client" or type(event) is not dict:
            return None
        channel, audio, item_id = LEFT, event.get("audio"), None
        fmt = entry.audio_format or default_format
    elif kind in ASSISTANT_AUDIO_DELTAS:
        if entry.dir != "server" or type(event) is not dict:
            return None
        channel, audio, item_id = RIGHT, event.get("delta"), event.get("item_id")
        fmt = entry.audio_format or output_format()
    else:
        if kind == ev.CONVERSATION_ITEM_TRUNCATE and entry.dir == "client" and type(event) is dict:
            return TRUNCATE
        return None
    if not isinstance(audio, str) or not audio:
        return None
    return channel, audio, item_id, fmt


def _walk(
    entries: list[LogEntry], start: int, default_format: AudioFormat, output_format: Callable[[], AudioFormat]
) -> Iterator[tuple[int, Chunk | None]]:
    """Both passes' walk over `entries[start:]`: each chunk with its index (what is not audio is passed over), then
    `(index, None)` with the index of a client's truncate, or `max(start, len(entries))` when none is left."""
    index = start
    while index < len(entries):
        chunk = read_chunk(entries[index], default_format, output_format)
        if chunk == TRUNCATE:
            break
        if isinstance(chunk, tuple):
            yield index, chunk
        index += 1
    yield index, None


def pass_over_python(
    entries: list[LogEntry],
    start: int,
    mono: float,
    left_gate: Gate | None,
    right_gate: Gate | None,
    default_format: AudioFormat,
    output_format: Callable[[], AudioFormat],
) -> tuple[int, int, int]:
    """`pass_over` without native code: the definition the native version is held to."""
    dropped = skipped = 0
    for index, chunk in _walk(entries, start, default_format, output_format):  # noqa: B007 (returned: where it stopped)
        if chunk is None:
            break
        channel, audio, item_id, fmt = chunk
        gate = right_gate if channel == RIGHT else left_gate
        if (
            gate is None
            or not mono < gate[0]
            or fmt is not gate[1]
            or item_id != gate[2]
            or len(audio) != gate[3]
            or audio[-1] == "="
        ):
            break
        dropped += gate[5]
        if channel == RIGHT:
            skipped += gate[4]
    return index, dropped, skipped


class PythonRunExtender:
    """`RunExtender` without native code: the definition the native version is held to."""

    def __init__(self, rate: int, continue_within: int, lead: int, max_frames: int, started_mono: float) -> None:
        self.rate, self.continue_within, self.lead, self.max_frames = rate, continue_within, lead, max_frames
        self.started_mono = started_mono
        # Per channel, while armed: [origin, end, item_id, texts taken].
        self._runs: list[list[Any] | None] = [None, None]

    def arm(self, channel: int, end: int, item_id: str | None, /) -> None:
        if channel not in (LEFT, RIGHT):
            raise ValueError("channel must be 0 (left) or 1 (right)")
        if channel == RIGHT and type(item_id) is not str:
            raise TypeError("the assistant's run is armed with its item id")
        self._runs[channel] = [end, end, item_id if channel == RIGHT else None, []]

    def disarm(self, channel: int, /) -> tuple[int, int, list[str]] | None:
        if channel not in (LEFT, RIGHT):
            raise ValueError("channel must be 0 (left) or 1 (right)")
        run, self._runs[channel] = self._runs[channel], None
        return None if run is None else (run[0], run[1] - run[0], run[3])

    def take(
        self,
        entries: list[LogEntry],
        start: int,
        mono: float,
        default_format: AudioFormat,
        output_format: Callable[[], AudioFormat],
        /,
    ) -> int:
        if start < 0:
            raise ValueError("start must not be negative")
        for index, chunk in _walk(entries, start, default_format, output_format):  # noqa: B007 (returned: where it stopped)
            if chunk is None:
                break
            channel, audio, item_id, fmt = chunk
            run = self._runs[channel]
            if run is None or (channel == RIGHT and (type(item_id) is not str or item_id != run[2])):
                break
            length = len(audio)
            if length % 8 or audio[-1] == "=" or not (fmt.rate == self.rate and fmt.type == "audio/pcm"):
                break
            now = ms_to_frames((mono - self.started_mono) * 1000.0, self.rate)
            end, frames = run[1], length * 3 // 8
            if now > end + self.continue_within or end + frames > min(now + self.lead, self.max_frames):
                break
            run[1] = end + frames
            run[3].append(audio)
        return index


native_pass_over: PassOver | None
NativeRunExtender: type[Extender] | None
try:
    from relay.recording import _intake
except ImportError:
    native_pass_over = NativeRunExtender = None
else:
    _intake.set_kinds(*KINDS)
    native_pass_over = _intake.pass_over
    NativeRunExtender = _intake.RunExtender

pass_over: PassOver = native_pass_over if native_pass_over is not None else pass_over_python
RunExtender: type[Extender] = NativeRunExtender if NativeRunExtender is not None else PythonRunExtender

"""The entries of a bridge flush the recorder passes over: pure, no state of its own, no I/O.

`pass_over(entries, start, mono, left_gate, right_gate, default_format, output_format)` reads `entries[start:]` and
returns `(index, dropped, skipped)`: `index` is the first entry the recorder must take up itself (an audio chunk
that gets past its channel's flood gate, or a client's truncate), `len(entries)` when no entry is left; `dropped` is
the frames of the chunks the gates dropped on the way (what each gate counts, its last field), `skipped` the frames
of the assistant's chunks among them (its lane must hear of those).

Passed over: an entry that is neither audio nor a client's truncate, audio whose text is not a non-empty string,
and a chunk like the one that opened its channel's gate while that gate is open (`relay.recording.recorder`,
`_drop_whole`: same format, same item, same base64 length, unpadded, before the gate's time). A gate is the tuple
`(until, format, item_id, base64 length, frames, frames counted as dropped)`; None is a closed gate. The audio's
format is the entry's, else `default_format` for the user's and `output_format()` for the assistant's (the format in
effect as it crossed, asked only when needed).

In a flood nearly every entry is passed over, so this runs in native code when it was built (`_floodgate.c`, the
same answers; docs/performance.md, "The thirteenth round"), else in Python here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from relay.core import events as ev
from relay.core.formats import AudioFormat
from relay.core.outbox import LogEntry

ASSISTANT_AUDIO_DELTAS: Final = frozenset({ev.RESPONSE_OUTPUT_AUDIO_DELTA, "response.audio.delta"})
Gate = tuple[float, AudioFormat, Any, int, int, int]
PassOver = Callable[
    [list[LogEntry], int, float, "Gate | None", "Gate | None", AudioFormat, Callable[[], AudioFormat]],
    tuple[int, int, int],
]

# The event types the native version tells apart, in the order it takes them (passed once, at import).
KINDS: Final = (ev.INPUT_AUDIO_BUFFER_APPEND, ASSISTANT_AUDIO_DELTAS, ev.CONVERSATION_ITEM_TRUNCATE)

native_pass_over: PassOver | None
try:
    from relay.recording import _floodgate
except ImportError:
    native_pass_over = None
else:
    _floodgate.set_kinds(*KINDS)
    native_pass_over = _floodgate.pass_over


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
    index, count = start, len(entries)
    while index < count:
        entry = entries[index]
        kind, event = entry.type, entry.event
        if kind == ev.INPUT_AUDIO_BUFFER_APPEND:
            if entry.dir != "client" or type(event) is not dict:
                index += 1
                continue
            assistant, gate, audio, item_id = False, left_gate, event.get("audio"), None
            fmt = entry.audio_format or default_format
        elif kind in ASSISTANT_AUDIO_DELTAS:
            if entry.dir != "server" or type(event) is not dict:
                index += 1
                continue
            assistant, gate, audio, item_id = True, right_gate, event.get("delta"), event.get("item_id")
            fmt = entry.audio_format or output_format()
        else:
            if kind == ev.CONVERSATION_ITEM_TRUNCATE and entry.dir == "client" and type(event) is dict:
                break
            index += 1
            continue
        if not isinstance(audio, str) or not audio:
            index += 1
            continue
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
        if assistant:
            skipped += gate[4]
        index += 1
    return index, dropped, skipped


pass_over: PassOver = native_pass_over if native_pass_over is not None else pass_over_python

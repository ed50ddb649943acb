"""Types of the recorder's native intake (relay/recording/_intake.c); relay/recording/intake.py says what it does."""

from collections.abc import Callable
from typing import Any

from relay.core.formats import AudioFormat
from relay.core.outbox import LogEntry

def set_kinds(append: str, deltas: frozenset[str], truncate: str, /) -> None: ...
def pass_over(
    entries: list[LogEntry],
    start: int,
    mono: float,
    left_gate: tuple[float, AudioFormat, Any, int, int, int] | None,
    right_gate: tuple[float, AudioFormat, Any, int, int, int] | None,
    default_format: AudioFormat,
    output_format: Callable[[], AudioFormat],
    /,
) -> tuple[int, int, int]: ...

class RunExtender:
    def __init__(self, rate: int, continue_within: int, lead: int, max_frames: int, started_mono: float) -> None: ...
    def arm(self, channel: int, end: int, item_id: str | None, /) -> None: ...
    def take(
        self,
        entries: list[LogEntry],
        start: int,
        mono: float,
        default_format: AudioFormat,
        output_format: Callable[[], AudioFormat],
        /,
    ) -> int: ...
    def disarm(self, channel: int, /) -> tuple[int, int, list[str]] | None: ...

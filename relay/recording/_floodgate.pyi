"""Types of the native flood gate (relay/recording/_floodgate.c); relay/recording/floodgate.py says what it does."""

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

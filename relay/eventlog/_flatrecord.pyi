"""Types of the native flat audio record writer (relay/eventlog/_flatrecord.c)."""

from typing import Any

def audio_record(
    session_id: str,
    seq: int,
    wall: float,
    t_ms: float,
    dir: str,
    type: str,
    event: dict[str, object],
    field: str,
    frame_bytes: int | None,
    bytes_per_second: int,
    /,
) -> bytes | None: ...

def audio_records(
    session_id: str,
    first_seq: int,
    wall: float,
    t_ms: float,
    entries: list[Any],
    start: int,
    fields: dict[str, str],
    /,
) -> tuple[bytes, int]: ...

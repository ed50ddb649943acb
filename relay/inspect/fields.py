"""Lenient readers of the JSON values inside records, and the rounding and percentiles of the summary.

Boundary: pure functions of values; every field a record carries may hold any JSON value, so each reader
returns None (or 0) for the wrong type instead of raising. Shared by the summary's folding modules
(`relay.inspect.turns`, `relay.inspect.ledger`, `relay.inspect.summary`).
"""

from __future__ import annotations

import math
from typing import Any

# Transcripts and assistant text are kept for the summary up to this many characters per turn.
TEXT_KEEP_CHARS = 300


def percentiles(samples: list[float]) -> dict[str, Any]:
    """count, p50, p95, max by nearest rank (p50 of [1, 2, 3, 4] is 2); None values when there are no samples."""
    if not samples:
        return {"count": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return round_ms(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)])

    return {"count": len(ordered), "p50": rank(50), "p95": rank(95), "max": round_ms(ordered[-1])}


def round_ms(value: float) -> float:
    # t_ms differences carry float noise (1500.2 - 1000.1); microseconds are the log's own resolution.
    return round(value, 3)


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def as_num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def error_code(error: dict[str, Any]) -> str | None:
    return as_str(error.get("code")) or as_str(error.get("type"))


def audio_ms(payload: object) -> float:
    """audio_ms of a logged audio summary ({"audio_bytes", "audio_ms", "sha256"}, docs/event-log.md), 0 when absent."""
    if isinstance(payload, dict):
        return as_num(payload.get("audio_ms")) or 0.0
    return 0.0

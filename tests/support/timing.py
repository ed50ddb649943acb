"""One knob for every integration-test timeout: RELAY_TEST_TIMEOUT_FACTOR scales them on slow machines."""

from __future__ import annotations

import os

TIMEOUT_FACTOR = float(os.environ.get("RELAY_TEST_TIMEOUT_FACTOR", "1") or 1)


def seconds(value: float) -> float:
    """A timeout of `value` seconds, scaled by the factor."""
    return value * TIMEOUT_FACTOR

"""Test tiers that need system parts (PulseAudio, Chromium, nginx...): skip with one line, or fail when all
tiers are required (RELAY_REQUIRE_ALL_TIERS=1, set by .ci/run; README.md)."""

from __future__ import annotations

import os
import shutil

import pytest


def all_tiers_required() -> bool:
    return os.environ.get("RELAY_REQUIRE_ALL_TIERS", "") not in ("", "0", "false")


def missing(reason: str) -> None:
    """Skip the calling test with `reason`, or fail it when every tier must run."""
    if all_tiers_required():
        pytest.fail(f"required tier unavailable: {reason} (RELAY_REQUIRE_ALL_TIERS=1)", pytrace=False)
    pytest.skip(reason)


def require(tool: str, reason: str | None = None) -> str:
    """The path of `tool` on PATH (or an absolute path that exists), else skip/fail with a one-line reason."""
    path = tool if os.path.isabs(tool) and os.access(tool, os.X_OK) else shutil.which(tool)
    if path is None:
        missing(reason or f"{tool} is not installed (make system-deps)")
        raise AssertionError("unreachable")
    return path

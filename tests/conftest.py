"""Shared pytest configuration: the tier policy (a skip fails the run when RELAY_REQUIRE_ALL_TIERS=1)."""

from __future__ import annotations

import pytest

from tests.support.tiers import all_tiers_required


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under RELAY_REQUIRE_ALL_TIERS=1 any skip is a failure, except tests marked `not_here` (README.md)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and all_tiers_required() and item.get_closest_marker("not_here") is None:
        if hasattr(report, "wasxfail"):
            return
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped, but RELAY_REQUIRE_ALL_TIERS=1 requires every tier: {reason}"

pytest_plugins = ("pytester",)

"""The tier policy (README.md): a missing system part skips with one line, or fails when all tiers are required."""

from __future__ import annotations

import pytest

SKIPPING_SUITE = """
import pytest
from tests.support.tiers import require

def test_needs_a_tool_that_is_not_there():
    require("no-such-tool-xyz", "no-such-tool-xyz is not installed")

@pytest.mark.not_here
def test_needs_a_docker_daemon():
    pytest.skip("no Docker daemon on these machines")

def test_plain():
    assert True
"""


def run_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, required: bool) -> pytest.RunResult:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.syspath_prepend(str(repo))
    pytester.makeconftest(
        "from tests.conftest import *  # noqa: F403\nfrom tests.conftest import pytest_runtest_makereport  # noqa: F401\n"
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_suite=SKIPPING_SUITE)
    if required:
        monkeypatch.setenv("RELAY_REQUIRE_ALL_TIERS", "1")
    else:
        monkeypatch.delenv("RELAY_REQUIRE_ALL_TIERS", raising=False)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider")


def test_a_missing_tier_skips_with_its_reason(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_suite(pytester, monkeypatch, required=False)
    result.assert_outcomes(passed=1, skipped=2)


def test_a_missing_tier_fails_when_all_tiers_are_required(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_suite(pytester, monkeypatch, required=True)
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*RELAY_REQUIRE_ALL_TIERS=1*"])

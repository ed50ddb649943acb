"""`realtime-relay mic` and `devices` argument handling: bad input is a usage/config error (exit 2) that names
the problem, decided before any device or socket is opened."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from relay.cli.main import main


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() points the root log handler at this test's captured stdout; later tests must not write there."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["mic", "--chunk-ms", "0"], "chunk_ms"),
        (["mic", "--chunk-ms", "100000"], "chunk_ms"),
        (["mic", "--chunk-ms", "twenty"], "--chunk-ms"),
        (["mic", "--playback-buffer-ms", "-5"], "playback_buffer_ms"),
        (["mic", "--duplex", "sideways"], "--duplex"),
        (["mic", "--duration", "-1"], "--duration"),
        (["mic", "--duration", "0"], "--duration"),
        (["mic", "--duration", "nan"], "--duration"),
        (["devices", "--bogus"], "--bogus"),
    ],
)
def test_bad_mic_arguments_exit_2_naming_the_problem(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert named in capsys.readouterr().err


def test_bad_duplex_from_the_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RELAY_DUPLEX", "both")
    assert main(["mic"]) == 2
    assert "duplex" in capsys.readouterr().err


def test_mic_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mic", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--input-device", "--output-device", "--duplex", "--chunk-ms", "--playback-buffer-ms"):
        assert option in out

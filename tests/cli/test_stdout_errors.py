"""A standard output that cannot be written: one line on stderr and exit 1 (a full disk), or a quiet exit 0 when the
reader went away (`| head`); never a traceback. Any other OSError a command lets out is still a failure of its own."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import relay.cli.logs
from relay.cli.main import main
from tests.support.conversations_fixtures import UPSTREAM_KEY, RestSim, ThreadedRestSim
from tests.support.logs_fixtures import two_turn_session
from tests.support.timing import seconds


class FailingStdout(io.StringIO):
    """A stdout whose writes fail as a full disk's or a closed pipe's do."""

    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise self.error


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return two_turn_session("sess_out").write(tmp_path / "logs")


@pytest.fixture
def rest_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[RestSim]:
    for name in list(os.environ):
        if name.startswith(("RELAY_", "YANDEX_")):
            monkeypatch.delenv(name)
    with ThreadedRestSim() as sim:
        yield sim


@pytest.mark.parametrize("json_lines", [False, True])
def test_logs_to_a_full_device_exits_1_with_one_line(log_file: Path, json_lines: bool) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "relay", "logs", str(log_file), *(["--json"] if json_lines else [])],
            stdout=full, stderr=subprocess.PIPE, text=True, env=clean_env(), timeout=seconds(60),
        )
    assert result.returncode == 1
    assert result.stderr == "realtime-relay logs: cannot write to standard output: No space left on device\n"


def test_history_to_a_full_device_exits_1_with_one_line(rest_sim: RestSim) -> None:
    conversation_id, _ = rest_sim.conversation_with_items(3)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "relay", "history", "--rest-base", rest_sim.base_url, conversation_id],
            stdout=full, stderr=subprocess.PIPE, text=True, env=clean_env() | {"YANDEX_API_KEY": UPSTREAM_KEY},
            timeout=seconds(60),
        )
    assert result.returncode == 1
    assert result.stderr == "realtime-relay history: cannot write to standard output: No space left on device\n"


def test_history_into_a_reader_that_stops_early_exits_0_quietly(rest_sim: RestSim) -> None:
    conversation_id, ids = rest_sim.conversation_with_items(250)
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "history", "--rest-base", rest_sim.base_url, "--all", "--order", "asc",
         "--limit", "100", conversation_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env() | {"YANDEX_API_KEY": UPSTREAM_KEY},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(ids[0].encode())
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=seconds(60)) == 0
    assert err == ""


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 1, "cannot write to standard output: No space left on device"),
        (OSError(errno.EIO, os.strerror(errno.EIO)), 1, "cannot write to standard output: Input/output error"),
        (BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)), 0, None),
    ],
)
def test_a_stdout_write_failure_is_one_line_without_a_traceback(
    log_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    error: OSError, code: int, message: str | None,
) -> None:
    failing = FailingStdout(error)
    monkeypatch.setattr(sys, "stdout", failing)
    assert main(["logs", str(log_file), "--json"]) == code
    assert sys.stdout is failing  # put back as it was
    err = capsys.readouterr().err
    assert err == ("" if message is None else f"realtime-relay logs: {message}\n")


def test_an_oserror_that_is_not_stdouts_is_still_a_failure_of_the_command(
    log_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(*_: object) -> int:
        raise OSError(errno.ENOSPC, "disk full while writing a page")

    monkeypatch.setattr(relay.cli.logs, "run", run)
    assert main(["logs", str(log_file), "--log-format", "json"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "realtime-relay logs: OSError: [Errno 28] disk full while writing a page"
    assert "standard output" not in err


def _without_stdin_and_stdout() -> None:
    os.close(0)
    os.close(1)


def test_serve_started_without_stdin_and_stdout_serves_and_stops_cleanly(tmp_path: Path) -> None:
    """`serve >&- <&-`: the numbers 0 and 1 must not go to the relay's sockets (a log line would reach a client,
    and uvloop aborts when it closes a socket numbered 0-2)."""
    import json
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(  # in tmp_path: its logs and recordings go there
        [sys.executable, "-m", "relay", "serve", "--port", str(port)],
        stderr=subprocess.PIPE, env=clean_env(), cwd=tmp_path, preexec_fn=_without_stdin_and_stdout, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + seconds(30)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    assert json.loads(answer.read())["status"] == "ready"
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
            assert answer.status == 200 and b"<html" in answer.read().lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=seconds(30))
    assert proc.returncode == 0, err[-2000:]
    assert "Assertion" not in err and "Traceback" not in err
    assert '"msg": "relay.stopped"' in err  # the daemon log, with no stdout, on stderr

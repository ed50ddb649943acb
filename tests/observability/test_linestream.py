"""relay.linestream and the daemon's log handler on it: a reader that stalls never blocks a caller, lines past the
bound are refused (and the handler declares them), and lines from different threads never splice."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import select
import threading
import time
from collections.abc import Iterator

import pytest
import structlog

from relay.linestream import LineStream
from relay.logconfig import LineHandler, configure_logging

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, F_SETPIPE_SZ, 4096)  # a small pipe fills at once
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def read_all(read_fd: int, expected: int = 0, until: bytes = b"") -> bytes:
    """Read until `expected` bytes, or until `until` has been read (10 s at most)."""
    out = bytearray()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (expected and len(out) >= expected) and not (until and until in out):
        if select.select([read_fd], [], [], 0.05)[0]:
            out += os.read(read_fd, 1 << 16)
    return bytes(out)


def test_put_never_waits_for_a_reader_that_stalls_and_refuses_lines_past_its_bound(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    stream = LineStream(write_fd, max_bytes=64 * 1024)
    line = b"x" * 1023 + b"\n"
    accepted = sum(stream.put(line) for _ in range(1000))  # nobody reads: the pipe fills after four lines
    assert 60 <= accepted < 1000
    assert not stream.flush(0.2)  # still waiting for the reader
    data = read_all(read_fd, accepted * len(line))
    assert data == line * accepted
    assert stream.flush(5)


def test_lines_from_the_writer_thread_and_from_write_now_never_splice(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    stream = LineStream(write_fd, max_bytes=1 << 30)
    lines = [json.dumps({"n": n, "pad": "y" * (5000 + n)}).encode() + b"\n" for n in range(200)]
    direct = threading.Thread(target=lambda: [stream.write_now(b"".join(lines[n : n + 4])) for n in range(0, 100, 4)])
    direct.start()
    for line in lines[100:]:
        assert stream.put(line)
    data = read_all(read_fd, sum(map(len, lines)))
    direct.join()
    got = data.split(b"\n")[:-1]
    assert sorted(json.loads(line)["n"] for line in got) == list(range(200))  # each line whole, none lost


def test_the_log_handler_declares_lines_a_stalled_reader_cost(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    stream = LineStream(write_fd, max_bytes=16 * 1024)
    configure_logging("json", "info", io.StringIO())
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = LineHandler(stream)
    handler.setFormatter(saved[0].formatter)
    root.handlers[:] = [handler]
    try:
        log = structlog.get_logger("test")
        for n in range(200):  # nobody reads
            log.info("relay.test_line", n=n, pad="z" * 400)
        assert handler.dropped > 0
        data = bytearray()
        reader = threading.Thread(target=lambda: data.extend(read_all(read_fd, until=b'"n": 200')))
        reader.start()  # the reader is back
        assert stream.flush(5)
        log.info("relay.test_line", n=200)
        assert stream.flush(5)
        reader.join()
        if b"relay.log_lines_dropped" not in data.rsplit(b'"n": 200', 1)[-1]:
            data += read_all(read_fd, until=b"relay.log_lines_dropped")  # the note the last line brought
    finally:
        root.handlers[:] = saved
    records = [json.loads(line) for line in bytes(data).splitlines()]
    lines = [r["n"] for r in records if r["msg"] == "relay.test_line"]
    notes = [r for r in records if r["msg"] == "relay.log_lines_dropped"]
    assert notes and all(note["level"] == "warning" for note in notes)
    assert len(lines) + sum(note["dropped"] for note in notes) == 201  # every line written or counted as dropped
    assert lines == sorted(lines) and lines[-1] == 200
    assert records[-1]["msg"] == "relay.log_lines_dropped"  # the first line through after a drop says so

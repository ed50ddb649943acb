"""The per-session JSONL event log: record shape, audio summaries, seq without silent gaps, failing disks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from relay import linestream
from relay.core.formats import AudioFormat
from relay.core.outbox import LogEntry
from relay.eventlog.files import JsonlFile
from relay.eventlog.records import summarize_event
from relay.eventlog.writer import EventLog


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def only_file(root: Path) -> Path:
    (path,) = list(root.rglob("*.jsonl"))
    return path


def test_records_carry_every_contract_field_in_order(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    session = log.open_session("sess_a")
    session.append(LogEntry("client", "response.create", {"type": "response.create", "event_id": "c1"}, bytes=40))
    session.append(
        LogEntry("server", "response.done", {"type": "response.done", "event_id": "s1", "response": {"id": "resp_1"}}, bytes=70)
    )
    session.close().result(5)
    log.close()
    path = only_file(tmp_path)
    assert path.parent.parent == tmp_path and path.name == "sess_a.jsonl"
    first, second = read_records(path)
    assert list(first) == [
        "v",
        "ts",
        "level",
        "t_ms",
        "session_id",
        "seq",
        "dir",
        "type",
        "event_id",
        "bytes",
        "event",
    ]
    assert first["level"] == "info" and "item_id" not in first and "response_id" not in first
    assert (first["v"], first["seq"], first["dir"], first["event_id"], first["bytes"]) == (1, 1, "client", "c1", 40)
    assert first["ts"].endswith("Z") and len(first["ts"].split(".")[1]) == 7  # microseconds + Z
    assert (second["seq"], second["response_id"]) == (2, "resp_1")
    assert second["t_ms"] >= first["t_ms"] >= 0


def test_audio_is_replaced_by_a_summary() -> None:
    audio = bytes(range(256)) * 4  # 1024 bytes = 512 samples
    encoded = base64.b64encode(audio).decode()
    event = {"type": "input_audio_buffer.append", "audio": encoded}
    summary = summarize_event(event, "input_audio_buffer.append", AudioFormat("audio/pcm", 16000), keep_text=True)
    assert summary["audio"] == {"audio_bytes": 1024, "audio_ms": 32.0}  # no hash unless log_audio_hash
    assert event["audio"] == encoded  # the original event is not mutated


def test_with_log_audio_hash_the_summary_carries_the_sha256_of_the_base64_payload() -> None:
    encoded = base64.b64encode(bytes(range(256)) * 4).decode()
    for record_type, event in (
        ("input_audio_buffer.append", {"type": "input_audio_buffer.append", "audio": encoded}),
        ("response.output_audio.delta", {"type": "response.output_audio.delta", "delta": encoded}),
    ):
        summary = summarize_event(event, record_type, AudioFormat("audio/pcm", 16000), True, audio_hash=True)
        field = "audio" if "audio" in event else "delta"
        assert summary[field] == {
            "audio_bytes": 1024,
            "audio_ms": 32.0,
            "sha256": hashlib.sha256(encoded.encode()).hexdigest()[:16],
        }


@pytest.mark.parametrize(
    ("record_type", "event", "expected"),
    [
        pytest.param(
            "input_audio_buffer.append",
            {"type": "input_audio_buffer.append", "event_id": "e1", "audio": "AAAA"},
            {"type": "input_audio_buffer.append", "event_id": "e1", "audio": {"audio_bytes": 3, "audio_ms": 0.063}},
            id="a flat append",
        ),
        pytest.param(
            "response.output_audio.delta",
            {"type": "response.output_audio.delta", "delta": "AAAA", "audio": "BBBB", "item_id": "i"},
            {
                "type": "response.output_audio.delta",
                "delta": {"audio_bytes": 3, "audio_ms": 0.063},
                "audio": {"audio_bytes": 3, "audio_ms": 0.063},
                "item_id": "i",
            },
            id="a delta that also carries an audio key",
        ),
        pytest.param(
            "input_audio_buffer.append",
            {"type": "input_audio_buffer.append", "audio": "AAAA", "extra": {"audio": "BBBB", "n": [1, {"audio": "CC"}]}},
            {
                "type": "input_audio_buffer.append",
                "audio": {"audio_bytes": 3, "audio_ms": 0.063},
                "extra": {
                    "audio": {"audio_bytes": 3, "audio_ms": 0.063},
                    "n": [1, {"audio": {"audio_bytes": 1, "audio_ms": 0.021}}],
                },
            },
            id="nested audio next to the top-level one",
        ),
        pytest.param(
            "input_audio_buffer.append",
            {"type": "input_audio_buffer.append", "audio": 12, "x": None},
            {"type": "input_audio_buffer.append", "audio": 12, "x": None},
            id="audio that is not a string stays",
        ),
        pytest.param(
            "response.output_audio.delta",
            {"type": "response.output_audio.delta", "delta": ["AAAA"], "audio": "\x00\xff"},
            {"type": "response.output_audio.delta", "delta": ["AAAA"], "audio": {"audio_bytes": 1, "audio_ms": 0.021}},
            id="garbage shapes",
        ),
    ],
)
def test_audio_frames_are_summarized_the_same_whatever_else_they_carry(
    record_type: str, event: dict[str, Any], expected: dict[str, Any]
) -> None:
    before = json.dumps(event)
    assert summarize_event(event, record_type, AudioFormat(), keep_text=True) == expected
    assert json.dumps(event) == before  # never mutated


def test_retrieved_item_audio_is_summarized_and_text_kept() -> None:
    item = {
        "id": "i",
        "content": [{"type": "output_audio", "audio": base64.b64encode(b"\0" * 48).decode(), "transcript": "hello"}],
    }
    summary = summarize_event(
        {"type": "conversation.item.retrieved", "item": item}, "conversation.item.retrieved", AudioFormat(), True
    )
    part = summary["item"]["content"][0]
    assert part["audio"]["audio_bytes"] == 48 and part["transcript"] == "hello"


def test_log_content_off_keeps_only_the_length_of_text() -> None:
    event = {"type": "response.output_text.delta", "delta": "secret words"}
    assert summarize_event(event, "response.output_text.delta", None, keep_text=False)["delta"] == 12
    update = {"type": "session.update", "session": {"instructions": "abc"}}
    assert summarize_event(update, "session.update", None, keep_text=False)["session"]["instructions"] == 3


def test_invalid_base64_audio_is_summarized_not_fatal() -> None:
    summary = summarize_event(
        {"type": "input_audio_buffer.append", "audio": "!!!"}, "input_audio_buffer.append", AudioFormat(), True, audio_hash=True
    )
    assert set(summary["audio"]) == {"audio_bytes", "audio_ms", "sha256"}
    assert "!!!" not in json.dumps(summary)


def test_a_full_queue_drops_and_declares_the_gap(tmp_path: Path) -> None:
    log = EventLog(tmp_path, max_queue_bytes=2000)
    log._wake.set = lambda: None  # type: ignore[method-assign]  # keep the writer from draining early
    session = log.open_session("sess_q")
    # The queue is bounded by the encoded records it holds: ten ~800-byte lines do not fit 2000 bytes.
    seqs = [session.append(LogEntry("server", "x", {"type": "x", "text": "a" * 600}, bytes=640)) for _ in range(10)]
    assert seqs == list(range(1, 11))
    assert session.dropped > 0
    session.close().result(5)
    log.close()
    records = read_records(only_file(tmp_path))
    gaps = [r for r in records if r["type"] == "relay.log_gap"]
    assert gaps and gaps[0]["seq"] is None and gaps[0]["event"]["reason"] == "queue_full"
    written = [r["seq"] for r in records if r["seq"] is not None]
    missing = set(range(1, 11)) - set(written)
    declared = set(range(gaps[0]["event"]["from_seq"], gaps[0]["event"]["to_seq"] + 1))
    assert missing == declared
    assert log.dropped_total == len(missing)


def test_a_record_that_cannot_be_encoded_is_dropped_and_declared_in_its_place(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    session = log.open_session("sess_enc")
    session.append(LogEntry("server", "x", {"type": "x", "n": 1}))
    session.append(LogEntry("relay", "x", {"type": "x", "n": object()}))  # no JSON spelling (a relay bug)
    session.append(LogEntry("server", "x", {"type": "x", "n": 3}))
    assert session.dropped == 1
    session.close().result(5)
    log.close()
    records = read_records(only_file(tmp_path))
    assert [(r["seq"], r["type"]) for r in records] == [(1, "x"), (None, "relay.log_gap"), (3, "x")]
    assert records[1]["event"] == {"from_seq": 2, "to_seq": 2, "reason": "encode_error"}
    assert log.dropped_total == 1


def test_a_failing_disk_drops_records_then_declares_the_gap_when_writes_work_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog(tmp_path)
    session = log.open_session("sess_d")
    session.append(LogEntry("client", "a", {"type": "a"}, bytes=1))
    log._wake.set()
    deadline = time.monotonic() + 5
    # Until record "a" is on disk (the file exists from its open, a moment before the write): a loaded machine
    # would otherwise fail its write too.
    while not any(f.stat().st_size for f in tmp_path.rglob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.01)
    path = only_file(tmp_path)
    # Make this file's writes fail, the way a full disk does (other tests' writer threads are left alone).
    real_write = JsonlFile.write
    failing = {"on": True}

    def flaky_write(self: JsonlFile, blob: bytes) -> None:
        if failing["on"] and self.path == path:
            raise OSError(28, "No space left on device")
        real_write(self, blob)

    monkeypatch.setattr(JsonlFile, "write", flaky_write)
    try:
        session.append(LogEntry("client", "b", {"type": "b"}, bytes=1))
        session.append(LogEntry("client", "c", {"type": "c"}, bytes=1))
        log._wake.set()
        deadline = time.monotonic() + 5
        while session.dropped < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert session.dropped == 2
        failing["on"] = False
        session.append(LogEntry("client", "d", {"type": "d"}, bytes=1))
        session.close().result(5)
    finally:
        monkeypatch.undo()
    log.close()
    records = read_records(path)
    assert [(r["type"], r["seq"]) for r in records] == [("a", 1), ("relay.log_gap", None), ("d", 4)]
    assert records[1]["event"] == {"from_seq": 2, "to_seq": 3, "reason": "write_failed"}


def test_an_outage_is_warned_once_per_session_and_its_end_is_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk fails every period's write; one warning per session and outage, not one every 100 ms.
    log = EventLog(tmp_path)
    session = log.open_session("sess_o")
    failing = {"on": True}
    real_write = JsonlFile.write

    def full_disk(self: JsonlFile, blob: bytes) -> None:
        if failing["on"]:
            raise OSError(28, "No space left on device")
        real_write(self, blob)

    monkeypatch.setattr(JsonlFile, "write", full_disk)
    with structlog.testing.capture_logs() as logged:
        for n in range(1, 4):  # three periods, each with a failed write
            session.append(LogEntry("client", "a", {"type": "a"}, bytes=1))
            log._wake.set()
            deadline = time.monotonic() + 5
            while session.dropped < n and time.monotonic() < deadline:
                time.sleep(0.01)
            assert session.dropped == n
        failing["on"] = False
        session.append(LogEntry("client", "b", {"type": "b"}, bytes=1))
        session.close().result(5)
        log.close()
    names = [entry["event"] for entry in logged if entry["event"].startswith("relay.log_write")]
    assert names == ["relay.log_write_failed", "relay.log_write_recovered"]
    recovered = next(entry for entry in logged if entry["event"] == "relay.log_write_recovered")
    assert (recovered["from_seq"], recovered["to_seq"], recovered["dropped"]) == (1, 3, 3)
    records = read_records(only_file(tmp_path))
    assert [(r["type"], r["seq"]) for r in records] == [("relay.log_gap", None), ("b", 4)]


def test_a_partly_failed_write_is_cut_back_to_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = JsonlFile(tmp_path / "x.jsonl")
    target.write(b'{"a":1}\n')
    real_write = os.write
    calls = {"n": 0}

    def half_then_fail(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:5])
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError):
        target.write(b'{"b":2}\n{"c":3}\n')
    monkeypatch.undo()
    target.close()
    assert (tmp_path / "x.jsonl").read_bytes() == b'{"a":1}\n'


def test_stdout_mirror_gets_the_same_bytes(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    log = EventLog(tmp_path, to_stdout=True, stdout_fd=write_fd)
    session = log.open_session("sess_s")
    session.append(LogEntry("client", "a", {"type": "a"}, bytes=1))
    session.close().result(5)
    log.close()
    os.close(write_fd)
    mirrored = os.read(read_fd, 1 << 16)
    os.close(read_fd)
    assert mirrored == only_file(tmp_path).read_bytes()


def test_files_are_appended_never_rewritten(tmp_path: Path) -> None:
    for _ in range(2):
        log = EventLog(tmp_path)
        session = log.open_session("sess_same", started_wall=1_700_000_000.0)
        session.append(LogEntry("client", "a", {"type": "a"}, bytes=1))
        session.close().result(5)
        log.close()
    path = tmp_path / "2023-11-14" / "sess_same.jsonl"
    assert len(read_records(path)) == 2


def test_logging_off_writes_no_files_but_still_counts_seq(tmp_path: Path) -> None:
    log = EventLog(None)
    session = log.open_session("sess_off")
    assert session.append(LogEntry("client", "a", {"type": "a"})) == 1
    assert session.append(LogEntry("client", "a", {"type": "a"})) == 2
    session.close().result(5)
    log.close()
    assert not list(tmp_path.rglob("*"))


def test_log_content_off_reaches_items_nested_in_responses() -> None:
    done = {
        "type": "response.done",
        "response": {
            "id": "r",
            "output": [
                {
                    "id": "i",
                    "content": [{"type": "output_text", "text": "SECRET"}, {"type": "output_audio", "transcript": "SECRET"}],
                }
            ],
        },
    }
    logged = json.dumps(summarize_event(done, "response.done", AudioFormat(), keep_text=False))
    assert "SECRET" not in logged
    create = {
        "type": "response.create",
        "response": {
            "instructions": "SECRET",
            "input": [{"type": "message", "content": [{"type": "input_text", "text": "SECRET"}]}],
        },
    }
    assert "SECRET" not in json.dumps(summarize_event(create, "response.create", AudioFormat(), keep_text=False))


def test_audio_anywhere_in_an_event_is_summarized_and_tool_calls_stay() -> None:
    raw = base64.b64encode(b"\x01\x02" * 500).decode()
    create = {
        "type": "response.create",
        "response": {
            "input": [
                {"type": "message", "content": [{"type": "input_audio", "audio": raw}]},
                {"type": "function_call_output", "output": "42"},
            ]
        },
    }
    logged = summarize_event(create, "response.create", AudioFormat(), keep_text=False)
    assert raw not in json.dumps(logged)
    assert logged["response"]["input"][0]["content"][0]["audio"]["audio_bytes"] == 1000
    assert logged["response"]["input"][1]["output"] == "42"
    assert create["response"]["input"][0]["content"][0]["audio"] == raw  # the event itself is untouched


async def test_on_the_loop_records_wait_in_their_session_and_reach_the_file_in_order(tmp_path: Path) -> None:
    """Records appended on the event loop are handed to the writer per session (one item per 50 ms), not one by
    one, and reach the file in seq order, sessions apart. (The 200 ms bound is by design: a 50 ms hand-over plus the
    writer's 100 ms period; a loaded test machine is not held to it.)"""
    log = EventLog(tmp_path)
    sessions = [log.open_session(f"sess_{n}") for n in range(3)]
    for i in range(300):
        sessions[i % 3].append(LogEntry("client", "x", {"type": "x", "i": i}, bytes=1))
    assert len(log.queue) == 0  # waiting in their sessions, not one queue item per record
    await asyncio.sleep(0.06)
    assert len(log.queue) <= 3  # one item per session, if the writer has not taken them yet
    started = time.monotonic()
    paths = [tmp_path / time.strftime("%Y-%m-%d", time.gmtime(s.started_wall)) / f"{s.session_id}.jsonl" for s in sessions]
    while not all(p.exists() and len(p.read_text().splitlines()) == 100 for p in paths):
        assert time.monotonic() - started < 5, "records did not reach the file"
        await asyncio.sleep(0.005)
    for n, path in enumerate(paths):
        records = read_records(path)
        assert [r["seq"] for r in records] == list(range(1, 101))
        assert [r["event"]["i"] for r in records] == list(range(n, 300, 3))
    for session in sessions:
        await session.aclose()
    log.close()


class _FailingFiles:
    """Makes writes to files under `root` fail the way a full disk does, while `on` (other tests' writers are
    left alone)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = False
        real_write = JsonlFile.write

        def write(file: JsonlFile, blob: bytes) -> None:
            if self.on and root in file.path.parents:
                raise OSError(28, "No space left on device")
            real_write(file, blob)

        monkeypatch.setattr(JsonlFile, "write", write)


def _first_record_written(root: Path) -> bool:
    """The file exists as soon as the writer opens it, and its first record follows: a test that fails the disk
    only after that record must wait for the record, not the file."""
    return any(f.stat().st_size for f in root.rglob("*.jsonl"))


def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_a_session_that_ends_while_writes_fail_gets_its_gap_once_writing_works_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _FailingFiles(tmp_path, monkeypatch)
    log = EventLog(tmp_path)
    session = log.open_session("sess_end")
    session.append(LogEntry("client", "a", {"type": "a"}, bytes=1))
    log._wake.set()
    _wait_for(lambda: _first_record_written(tmp_path))
    disk.on = True
    session.append(LogEntry("client", "b", {"type": "b"}, bytes=1))
    session.append(LogEntry("relay", "relay.session_ended", {"reason": "client_closed"}))
    session.close().result(5)  # its last records are lost with the disk still failing
    assert session.dropped == 2
    disk.on = False
    _wait_for(lambda: len(read_records(only_file(tmp_path))) == 2)  # the writer's next period, no new session
    log.close()
    records = read_records(only_file(tmp_path))
    assert [(r["type"], r["seq"]) for r in records] == [("a", 1), ("relay.log_gap", None)]
    assert records[1]["event"] == {"from_seq": 2, "to_seq": 3, "reason": "write_failed"}


def test_a_gap_line_lost_in_a_failed_write_is_still_declared_with_the_write_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _FailingFiles(tmp_path, monkeypatch)
    log = EventLog(tmp_path, max_queue_bytes=400)
    log._wake.set = lambda: None  # type: ignore[method-assign]  # the writer drains on its own period only
    session = log.open_session("sess_qf")
    disk.on = True
    for n in range(1, 8):  # ~150-byte records against a 400-byte queue: some are dropped before it
        session.append(LogEntry("client", "x", {"type": "x", "n": n, "pad": "p" * 40}, bytes=1))
    assert session.enqueue_dropped > 0
    session.close()
    _wait_for(lambda: session.write_dropped > 0 and session in log._owed)
    disk.on = False
    log.close()
    records = read_records(only_file(tmp_path))
    assert all(r["type"] == "relay.log_gap" for r in records)
    declared = [seq for r in records for seq in range(r["event"]["from_seq"], r["event"]["to_seq"] + 1)]
    assert declared == list(range(1, 8))  # every seq, each once, in order
    reasons = {r["event"]["reason"] for r in records}
    assert reasons == {"write_failed", "queue_full"}


def test_with_files_failing_stdout_gets_each_record_once_and_no_gap_that_only_the_file_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _FailingFiles(tmp_path, monkeypatch)
    read_fd, write_fd = os.pipe()
    log = EventLog(tmp_path, to_stdout=True, stdout_fd=write_fd)
    session = log.open_session("sess_mirror")
    session.append(LogEntry("client", "a", {"type": "a"}, bytes=1))
    log.hand_over()
    log._wake.set()
    _wait_for(lambda: _first_record_written(tmp_path))
    disk.on = True
    for kind in ("b", "c", "d"):  # three failed writes in a row
        session.append(LogEntry("client", kind, {"type": kind}, bytes=1))
        log.hand_over()
        log._wake.set()
        _wait_for(lambda kind=kind: session.write_dropped == "bcd".index(kind) + 1)
    disk.on = False
    session.append(LogEntry("client", "e", {"type": "e"}, bytes=1))
    session.close().result(5)
    log.close()
    os.close(write_fd)
    mirrored = [json.loads(line) for line in os.read(read_fd, 1 << 16).splitlines()]
    os.close(read_fd)
    assert [(r["type"], r["seq"]) for r in mirrored] == [(t, n) for n, t in enumerate("abcde", 1)]
    in_file = read_records(only_file(tmp_path))
    assert [(r["type"], r["seq"]) for r in in_file] == [("a", 1), ("relay.log_gap", None), ("e", 5)]
    assert in_file[1]["event"] == {"from_seq": 2, "to_seq": 4, "reason": "write_failed"}


def test_a_stdout_copy_that_cannot_keep_up_is_dropped_said_and_counted_while_the_files_keep_everything(
    tmp_path: Path,
) -> None:
    read_fd, write_fd = os.pipe()
    linestream._streams[write_fd] = linestream.LineStream(write_fd, max_bytes=16 * 1024)  # a small queue fills at once
    try:
        with structlog.testing.capture_logs() as logs:
            log = EventLog(tmp_path, to_stdout=True, stdout_fd=write_fd)
            session = log.open_session("sess_stalled_stdout")
            for batch in range(20):  # nobody reads stdout: the pipe and then the queue fill up
                for n in range(20):
                    event = {"type": "x.big", "pad": "p" * 2000, "n": n}
                    session.append(LogEntry("client", "x.big", event, bytes=2000))
                log.hand_over()
                log._wake.set()
                written = 20 * (batch + 1)  # whole lines in the file (one may be on its way)
                _wait_for(lambda written=written: sum(p.read_bytes().count(b"\n") for p in tmp_path.rglob("*.jsonl")) == written)
            assert any(e["event"] == "relay.log_stdout_copy_dropping" for e in logs)
            mirrored = bytearray()
            while not linestream._streams[write_fd].flush(0.05):  # the reader is back
                mirrored += os.read(read_fd, 1 << 20)
            session.append(LogEntry("client", "x.after", {"type": "x.after"}, bytes=1))
            session.close().result(5)
            log.close()
        os.set_blocking(read_fd, False)
        with contextlib.suppress(BlockingIOError):
            mirrored += os.read(read_fd, 1 << 20)
    finally:
        del linestream._streams[write_fd]
        os.close(write_fd)
        os.close(read_fd)
    assert len(read_records(only_file(tmp_path))) == 401  # the files have every record
    copied = [json.loads(line) for line in bytes(mirrored).splitlines()]
    started = [e for e in logs if e["event"] == "relay.log_stdout_copy_dropping"]
    ended = [e for e in logs if e["event"] == "relay.log_stdout_copy_recovered"]
    assert len(started) == len(ended) >= 1  # each run of drops is said when it starts and counted when it ends
    assert len(copied) + sum(e["dropped"] for e in ended) == 401 and copied[-1]["type"] == "x.after"


# ---- a flush's records at once (`SessionEventLog.extend`) ---------------------------------------------------------


def _flush(n_audio: int) -> list[LogEntry]:
    """What one flush of a flood carries out: audio both ways, a few other events between them."""
    audio = base64.b64encode(bytes(960)).decode()
    entries: list[LogEntry] = []
    for i in range(n_audio):
        if i % 2:
            event = {"type": "response.output_audio.delta", "event_id": f"e{i}", "item_id": "item_1", "delta": audio}
            entries.append(LogEntry("server", "response.output_audio.delta", event, bytes=1400, audio_format=AudioFormat()))
        else:
            event = {"type": "input_audio_buffer.append", "event_id": f"c{i}", "audio": audio}
            entries.append(LogEntry("client", "input_audio_buffer.append", event, bytes=1350, audio_format=AudioFormat()))
        if i % 5 == 4:
            entries.append(LogEntry("server", "response.done", {"type": "response.done", "response": {"id": "r"}}, bytes=60))
    return entries


def _without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("ts", "t_ms")} for r in records]


def test_a_flush_logged_at_once_gives_the_records_one_at_a_time_would_with_one_time(tmp_path: Path) -> None:
    entries = _flush(12)
    one_by_one = EventLog(tmp_path / "a")
    session = one_by_one.open_session("sess_x")
    for entry in entries:
        session.append(entry)
    session.close().result(5)
    one_by_one.close()
    at_once = EventLog(tmp_path / "b")
    session = at_once.open_session("sess_x")
    session.extend(entries)
    session.extend([])
    session.close().result(5)
    at_once.close()
    expected, got = read_records(only_file(tmp_path / "a")), read_records(only_file(tmp_path / "b"))
    assert [r["seq"] for r in got] == list(range(1, len(entries) + 1))
    assert _without_times(got) == _without_times(expected)
    assert len({(r["ts"], r["t_ms"]) for r in got}) == 1  # carried out together, stamped together


@pytest.mark.parametrize("bound", ["max_session_bytes", "max_queue_bytes"])
def test_a_flush_that_crosses_a_bound_loses_the_same_seqs_as_records_one_at_a_time(tmp_path: Path, bound: str) -> None:
    """The run would not fit whole: its records go one by one, so the limit and its declared gap fall where they would."""
    entries = _flush(30)
    written: dict[str, list[tuple[Any, Any]]] = {}
    for name, feed in (("one_by_one", lambda s: [s.append(e) for e in entries]), ("at_once", lambda s: s.extend(entries))):
        log = EventLog(tmp_path / name, **{bound: 5000})
        log._wake.set = lambda: None  # type: ignore[method-assign]  # the writer drains only at close
        session = log.open_session("sess_b")
        feed(session)
        assert session.dropped > 0
        session.close().result(5)
        log.close()
        records = read_records(only_file(tmp_path / name))
        written[name] = [(r["seq"], r["type"] if r["seq"] is not None else r["event"]) for r in records]
    assert written["at_once"] == written["one_by_one"]


def test_records_written_as_one_run_and_lost_to_a_failing_disk_are_each_counted_and_declared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(self: JsonlFile, blob: bytes) -> None:
        raise OSError(28, "No space left on device")

    log = EventLog(tmp_path)
    session = log.open_session("sess_f")
    monkeypatch.setattr(JsonlFile, "write", no_space)
    session.extend(_flush(6))  # one blob of six audio records and one other record
    log.hand_over()
    log._wake.set()
    _wait_for(lambda: session.dropped == 7)
    monkeypatch.undo()
    session.append(LogEntry("client", "after", {"type": "after"}, bytes=1))
    session.close().result(5)
    log.close()
    records = read_records(only_file(tmp_path))
    assert [(r["seq"], r["type"]) for r in records] == [(None, "relay.log_gap"), (8, "after")]
    assert records[0]["event"] == {"from_seq": 1, "to_seq": 7, "reason": "write_failed"}
    assert log.dropped_total == 7

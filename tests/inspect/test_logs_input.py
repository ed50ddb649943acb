"""`realtime-relay logs` on bad input: every broken line or file is skipped and counted, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.cli.main import main
from relay.inspect.reader import ReadWarnings, read_file
from relay.inspect.summary import summarize
from tests.support.logs_fixtures import SessionLog, two_turn_session


def run_logs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["logs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def test_a_truncated_last_line_is_skipped_with_a_warning_and_the_rest_is_summarized(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [line.encode() + b"\n" for line in two_turn_session().lines()]
    # A writer killed mid-write: the last record (relay.session_ended) lost its second half and newline.
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    path = write_lines(tmp_path / "sess_two.jsonl", lines)
    code, out, err = run_logs(capsys, str(path), "--json")
    assert code == 0
    (session,) = [json.loads(line) for line in out.splitlines()]
    assert session["turn_count"] == 2
    assert session["ended"] is False
    assert session["log"]["warning_count"] == 1
    assert session["log"]["warnings"] == [{"file": str(path), "line": len(lines), "reason": "truncated last line"}]
    assert "truncated last line" in err
    assert "Traceback" not in err


JUNK: list[bytes] = [
    b"this is not json\n",
    b"[1, 2, 3]\n",
    b"null\n",
    b"{}\n",
    b'{"v": 1}\n',
    b'{"event": "relay.listening", "level": "info", "timestamp": "2026-11-26T01:00:00Z"}\n',
    b'{"ts": "2026-11-26T01:00:00.000001Z", "level": "info", "msg": "relay.listening", "port": 8080}\n',
    b'{"v": 1, "session_id": "sess_two", "type": "x", "dir": "sideways", "t_ms": 1}\n',
    b'{"v": 1, "session_id": "sess_two", "type": "x", "dir": "server", "t_ms": "soon"}\n',
    b'{"v": 1, "session_id": "sess_two", "type": "x", "dir": "server", "t_ms": 1, "seq": "7"}\n',
    b'{"v": 1, "session_id": "sess_two", "type": "x", "dir": "server", "t_ms": 1, "event": [1]}\n',
    b"\xff\xfe{\"v\": 1}\n",
    b"[" * 5000 + b"]" * 5000 + b"\n",
    b'{"v": 1, "session_id": "sess_two", "type": "x", "dir": "server", "t_ms": 1e999}\n',
]


def test_junk_lines_are_each_skipped_and_counted_without_changing_the_summary(tmp_path: Path) -> None:
    clean = two_turn_session()
    lines = [line.encode() + b"\n" for line in clean.lines()]
    dirty = lines[:3] + JUNK + lines[3:]
    write_lines(tmp_path / "clean" / "sess_two.jsonl", lines)
    write_lines(tmp_path / "dirty" / "sess_two.jsonl", dirty)
    expected = summarize(tmp_path / "clean").sessions[0]
    result = summarize(tmp_path / "dirty")
    (got,) = result.sessions
    assert result.warnings.total == len(JUNK)
    assert got["log"]["warning_count"] == len(JUNK)
    for key in ("turns", "latency_ms", "events", "event_types", "audio_s", "errors", "retrieves"):
        assert got[key] == expected[key], key


def test_records_of_an_unknown_schema_version_are_skipped_and_counted(tmp_path: Path) -> None:
    log = two_turn_session()
    lines = [line.encode() + b"\n" for line in log.lines()]
    future = dict(log.records[5], v=2)
    path = write_lines(tmp_path / "sess_two.jsonl", [*lines, json.dumps(future).encode() + b"\n"])
    warnings = ReadWarnings()
    assert len(list(read_file(path, warnings))) == len(lines)
    assert warnings.total == 1
    assert warnings.samples[0].reason == "unknown schema version: v=2"


@pytest.mark.parametrize("bad_id", ["../../escaped", "/abs/escaped", "sess\x1b[31mred", "sess_x\n", "s" * 65])
def test_records_whose_session_id_is_not_a_session_id_are_skipped_and_no_page_lands_outside_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_id: str
) -> None:
    # A mixed or tampered log: the same records again under a session id the relay never mints. The id would
    # otherwise name a page file (`<OUT>/<session_id>.html`) and be printed.
    log = two_turn_session()
    lines = [line.encode() + b"\n" for line in log.lines()]
    bad_id = bad_id.replace("/abs", str(tmp_path / "abs"))
    foreign = [json.dumps(dict(r, session_id=bad_id)).encode() + b"\n" for r in log.finished()]
    path = write_lines(tmp_path / "logs" / "mixed.jsonl", lines + foreign)
    out_dir = tmp_path / "work" / "pages"
    out_dir.mkdir(parents=True)
    code, out, err = run_logs(capsys, str(path), "--html", str(out_dir))
    assert code == 0
    assert [p.name for p in out_dir.iterdir()] == [f"{log.session_id}.html"]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["pages"]
    assert not list(tmp_path.glob("**/*escaped*")) and not (tmp_path / "abs").exists()
    assert f"{len(foreign)} not an event-log record" in err
    assert "\x1b" not in out + err


def test_an_empty_file_is_a_warning_and_no_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "2026-11-26").mkdir()
    (tmp_path / "2026-11-26" / "sess_empty.jsonl").write_bytes(b"")
    code, out, err = run_logs(capsys, str(tmp_path))
    assert (code, out) == (0, "")
    assert "empty file" in err
    assert "no sessions found" in err


def test_a_file_name_with_terminal_controls_is_shown_escaped_in_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "2026-11-26").mkdir()
    (tmp_path / "2026-11-26" / "sess_\x1b[2Jx.jsonl").write_bytes(b"")  # clears the screen if printed raw
    code, _out, err = run_logs(capsys, str(tmp_path))
    assert code == 0 and "empty file" in err
    assert "\x1b" not in err


def test_a_missing_path_exits_2_with_a_message_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no" / "such" / "logs"
    code, out, err = run_logs(capsys, str(missing))
    assert code == 2
    assert out == ""
    assert err.strip() == f"realtime-relay logs: no such file or directory: {missing}"


def test_a_directory_of_many_session_files_gives_one_summary_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"sess_{i:03d}" for i in range(120)]
    for i, sid in enumerate(ids):
        log = SessionLog(sid)
        log.started()
        log.voice_turn(n=1, speech_started=100.0, speech_stopped=500.0, first_audio=500.0 + i)
        log.ended(2000.0)
        path = log.path_in(tmp_path)
        # Spread over several day directories, like a long-running relay.
        path = tmp_path / f"2026-11-{20 + i % 5:02d}" / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in log.lines()))
    (tmp_path / "README.txt").write_text("not a log, not read")
    code, out, err = run_logs(capsys, str(tmp_path), "--json")
    assert (code, err) == (0, "")
    sessions = {s["session_id"]: s for s in map(json.loads, out.splitlines())}
    assert sorted(sessions) == ids
    assert sessions["sess_042"]["turns"][0]["speech_to_first_audio_ms"] == 42.0


def test_a_directory_without_logs_says_no_sessions_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_logs(capsys, str(tmp_path))
    assert (code, out) == (0, "")
    assert err.strip() == f"realtime-relay logs: no sessions found in {tmp_path}"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=80) | st.sampled_from(JUNK), max_size=12))
def test_arbitrary_bytes_never_raise_and_every_unusable_line_is_counted(
    tmp_path: Path, chunks: list[bytes]
) -> None:
    data = b"\n".join(chunks)
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    warnings = ReadWarnings()
    records = list(read_file(path, warnings))
    if not data:
        assert (records, warnings.total) == ([], 1)
    else:
        non_blank = [line for line in data.split(b"\n") if line.strip()]
        assert len(records) + warnings.total == len(non_blank)


def test_a_large_log_is_streamed_not_loaded_whole(tmp_path: Path) -> None:
    # ~40k records (~13 MB on disk, far more as parsed dicts): the reader may only hold the summary.
    import tracemalloc

    log = SessionLog("sess_big")
    log.started()
    log.append_stream(0.0, 800_000.0, chunk_ms=20.0)
    log.ended(800_001.0)
    path = log.write(tmp_path)
    del log
    size = path.stat().st_size
    tracemalloc.start()
    try:
        (session,) = summarize(tmp_path).sessions
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert session["events"]["client"] == 40_000
    assert session["audio_s"]["in"] == 800.0
    assert peak < size / 4, (peak, size)

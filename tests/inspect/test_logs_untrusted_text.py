"""`realtime-relay logs` shows text it did not write (event fields, file names) without letting it shape the output:
every single-line value stays on its line, and a file name that is not UTF-8 is shown escaped in every format."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.cli.main import main
from tests.support.logs_fixtures import SessionLog, two_turn_session

FORGED = "FORGED row"
# Each line break a terminal or a line splitter honours, and how the table shows it.
BREAKS = {"\n": "\\n", "\r": "\\u000d", "\x0b": "\\u000b", "\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def run_logs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["logs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def forged_rows(text: str) -> list[str]:
    """Lines (as any line splitter sees them) that begin with the forged text: rows the log never had."""
    return [line for line in text.splitlines() if line.strip().startswith(FORGED)]


def _event_type(log: SessionLog, value: str) -> None:
    log.add(50.0, "client", value)


def _client_model(log: SessionLog, value: str) -> None:
    log.records[0]["event"]["client_model"] = value


def _upstream_session_id(log: SessionLog, value: str) -> None:
    log.connected(5.0, upstream_session_id=value)


def _ts(log: SessionLog, value: str) -> None:
    log.finished()[0]["ts"] = value


def _end_reason(log: SessionLog, value: str) -> None:
    log.ended(900.0, reason=value)


def _tool_name(log: SessionLog, value: str) -> None:
    log.add(60.0, "relay", "relay.tool_call", {"name": value, "call_id": "c1", "result": "ok", "duration_ms": 1.0,
                                              "arguments": "{}", "output": "x"})


def _error_code(log: SessionLog, value: str) -> None:
    log.server_error(70.0, value, "boom")


def _retrieve_reason(log: SessionLog, value: str) -> None:
    log.relay_retrieve(80.0, "item_1")
    log.retrieve_failed(90.0, "item_1", value)


FIELDS: dict[str, Callable[[SessionLog, str], None]] = {
    "event type": _event_type,
    "client model": _client_model,
    "upstream session id": _upstream_session_id,
    "ts": _ts,
    "end reason": _end_reason,
    "tool name": _tool_name,
    "error code": _error_code,
    "retrieve reason": _retrieve_reason,
}


@pytest.mark.parametrize("brk", list(BREAKS))
@pytest.mark.parametrize("field", list(FIELDS))
def test_a_line_break_in_a_logged_value_is_shown_escaped_and_forges_no_table_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, brk: str
) -> None:
    log = SessionLog("sess_forge")
    log.started(0.0, client_model="m")
    FIELDS[field](log, f"x{brk}  {FORGED}")
    log.write(tmp_path)
    code, out, _err = run_logs(capsys, str(tmp_path))
    assert code == 0
    assert forged_rows(out) == []
    assert FORGED in out
    if field != "tool name":  # tool names show every non-printable character as "?"
        assert f"x{BREAKS[brk]}  {FORGED}" in out


def test_a_line_break_in_a_log_file_name_is_shown_escaped_in_the_table_and_in_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day = tmp_path / "2026-11-26"
    day.mkdir()
    log = two_turn_session("sess_named")
    (day / f"x\n{FORGED}.jsonl").write_text("".join(line + "\n" for line in log.lines()))
    (day / f"y\u2028{FORGED}.jsonl").write_bytes(b"")  # an empty file: a warning naming it
    code, out, err = run_logs(capsys, str(tmp_path))
    assert code == 0
    assert forged_rows(out) == [] and forged_rows(err) == []
    assert f"x\\n{FORGED}.jsonl" in out
    assert f"y\\u2028{FORGED}.jsonl: empty file" in err


def test_json_lines_escape_the_unicode_line_separators_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = SessionLog("sess_sep")
    log.started(0.0, client_model=f"a\u2028{FORGED}\u2029b")
    log.write(tmp_path)
    code, out, _ = run_logs(capsys, str(tmp_path), "--json")
    assert code == 0
    (line,) = out.splitlines()
    assert json.loads(line)["client_model"] == f"a\u2028{FORGED}\u2029b"


def test_one_line_escapes_every_line_break_and_tab_and_nothing_else() -> None:
    from relay.inspect.terminal import one_line

    assert one_line("a\nb\r\nc\td\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029 é \x1b[1m") == (
        "a\\nb\\r\\nc\\td\\u000b\\u000c\\u001c\\u001d\\u001e\\u0085\\u2028\\u2029 é \x1b[1m"
    )
    assert "".join(one_line(c) for c in "x\ny").splitlines() == ["x\\ny"]


@pytest.fixture
def undecodable_log(tmp_path: Path) -> Path:
    """A folder holding a session log whose file name is the bytes ff fe: not UTF-8 (Python keeps it as surrogates)."""
    folder = tmp_path / "logs"
    folder.mkdir()
    log = two_turn_session("sess_bytes")
    (folder / os.fsdecode(b"\xff\xfe.jsonl")).write_text("".join(line + "\n" for line in log.lines()))
    return folder


def test_a_file_name_that_is_not_utf8_is_shown_escaped_in_json(
    undecodable_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_logs(capsys, str(undecodable_log), "--json")
    assert (code, err) == (0, "")
    (session,) = [json.loads(line) for line in out.splitlines()]
    assert session["files"] == [f"{undecodable_log}/\\xff\\xfe.jsonl"]
    assert session["turn_count"] == 2


def test_a_file_name_that_is_not_utf8_is_shown_escaped_in_the_table(
    undecodable_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_logs(capsys, str(undecodable_log))
    assert code == 0
    assert f"Session sess_bytes  {undecodable_log}/\\xff\\xfe.jsonl\n" in out
    out.encode("utf-8")  # no surrogate left for a strict terminal encoding to choke on


def test_a_file_name_that_is_not_utf8_is_shown_escaped_in_the_html_page(
    undecodable_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "page.html"
    code, _, err = run_logs(capsys, str(undecodable_log), "--html", str(page))
    assert code == 0, err
    session = re.search(r'id="session-data">(.*?)</script>', page.read_text(encoding="utf-8"), re.S)
    assert session is not None
    assert json.loads(session.group(1))["files"] == [f"{undecodable_log}/\\xff\\xfe.jsonl"]


def test_a_wav_below_a_folder_whose_name_is_not_utf8_is_linked_percent_encoded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relay_dir = tmp_path / os.fsdecode(b"relay\xff")
    log = two_turn_session("sess_wavdir")
    log.write(relay_dir / "logs")
    wav = relay_dir / "data" / "sessions" / "sess_wavdir" / "item_a1.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    page = tmp_path / "page.html"
    code, _, err = run_logs(capsys, str(relay_dir / "logs"), "--html", str(page))
    assert code == 0, err
    assert 'href="relay%FF/data/sessions/sess_wavdir/item_a1.wav"' in page.read_text(encoding="utf-8")

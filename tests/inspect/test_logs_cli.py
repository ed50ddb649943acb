"""`realtime-relay logs`: the terminal table, `--json` lines, `--session`, and `--html` pages on disk."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli.main import main
from tests.support.logs_fixtures import SessionLog, two_turn_session
from tests.support.timing import seconds

# The documented `--json` fields (README): adding one is fine, renaming or removing one breaks users.
JSON_FIELDS = {
    "session_id", "files", "started_at", "ended_at", "duration_s", "upstream_url", "client_model",
    "upstream_session_id", "connect_ms", "ended", "end_reason", "client_close_code", "upstream_close_code",
    "events", "event_types", "turn_count", "barge_in_count", "responses", "turns", "latency_ms", "audio_s",
    "error_count", "errors", "retrieves", "audio_saved", "tool_calls", "log",
}
TURN_FIELDS = {
    "index", "user_item_ids", "input", "user_transcript", "speech_started_ms", "speech_stopped_ms",
    "request_ms", "response_id", "response_created_ms", "first_audio_ms", "response_done_ms", "status",
    "assistant_item_ids", "assistant_text", "audio_out_s", "barge_in", "truncated_audio_end_ms",
    "speech_to_first_audio_ms", "request_to_done_ms",
}


def run_logs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["logs", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def two_sessions(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    two_turn_session("sess_one").write(logs)
    other = SessionLog("sess_other")
    other.started()
    other.voice_turn(n=1, speech_started=10.0, speech_stopped=200.0, first_audio=450.0)
    other.server_error(600.0, "invalid_value", "unknown event type")
    other.ended(700.0, reason="upstream_disconnected", client_close=1014, upstream_close=None)
    other.write(logs)
    return logs


def test_the_table_shows_turns_latencies_and_close_codes_without_colour_off_a_tty(
    two_sessions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_logs(capsys, str(two_sessions), "--session", "sess_one")
    assert (code, err) == (0, "")
    assert "\x1b[" not in out
    assert "Session sess_one" in out
    assert re.search(r"Turns\s+2 \(0 barge-in\), 2 completed", out)
    assert re.search(r"speech end → first audio\s+2\s+400\.0 ms\s+900\.0 ms\s+900\.0 ms", out)
    assert re.search(r"retrieve round-trip\s+1\s+30\.0 ms", out)
    assert "client_closed (client close 1000, upstream close 1000)" in out
    assert re.search(r"1\s+item_u1\s+audio\s+resp_1\s+completed\s+400\.0 ms", out)


def test_several_sessions_get_an_overview_line_each_then_their_details(
    two_sessions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_logs(capsys, str(two_sessions))
    assert code == 0
    assert out.startswith("2 sessions\n")
    assert re.search(r"sess_other .* 1\s+250\.0 ms\s+1\s+upstream_disconnected", out)
    assert out.index("Session sess_one") < out.index("Session sess_other")
    assert "unknown event type" in out


def test_the_table_is_coloured_on_a_terminal_and_not_with_no_color(
    two_sessions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run_on_a_pty() -> str:
        master, slave = os.openpty()
        with open(slave, "w", encoding="utf-8", closefd=True) as tty:
            monkeypatch.setattr(sys, "stdout", tty)
            assert main(["logs", str(two_sessions), "--session", "sess_other"]) == 0
            tty.flush()
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        return b"".join(chunks).decode()

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[31m" in run_on_a_pty()  # the error count in red
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in run_on_a_pty()


def test_json_prints_one_object_per_session_with_the_documented_fields(
    two_sessions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_logs(capsys, str(two_sessions), "--json")
    assert (code, err) == (0, "")
    sessions = [json.loads(line) for line in out.splitlines()]
    assert [s["session_id"] for s in sessions] == ["sess_one", "sess_other"]
    for s in sessions:
        assert set(s) == JSON_FIELDS
        assert all(set(t) == TURN_FIELDS for t in s["turns"])
        assert set(s["latency_ms"]) == {"speech_to_first_audio", "request_to_done", "retrieve_round_trip"}
        assert set(s["log"]) == {"gaps", "dropped", "missing_seq", "duplicate_seq", "warning_count", "warnings"}
    other = sessions[1]
    assert (other["end_reason"], other["client_close_code"], other["upstream_close_code"]) == (
        "upstream_disconnected", 1014, None)
    assert other["errors"][0]["code"] == "invalid_value"


def test_an_unknown_session_id_exits_1_and_says_so(
    two_sessions: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_logs(capsys, str(two_sessions), "--session", "sess_nope")
    assert (code, out) == (1, "")
    assert err.strip() == f"realtime-relay logs: session 'sess_nope' not found in {two_sessions}"


def test_path_defaults_to_the_log_dir_setting(two_sessions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_logs(capsys, "--log-dir", str(two_sessions), "--json")
    assert code == 0
    assert len(out.splitlines()) == 2


def test_html_for_one_session_writes_the_named_file(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "out" / "timeline.html"
    code, _, err = run_logs(capsys, str(two_sessions), "--session", "sess_one", "--html", str(page))
    assert code == 0
    assert f"wrote {page}" in err
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert 'data-lane="client"' in text and 'data-lane="server"' in text and 'data-lane="relay"' in text


def test_html_for_several_sessions_writes_one_page_each_into_the_directory(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "pages"
    code, _, _ = run_logs(capsys, str(two_sessions), "--html", str(out_dir))
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["index.html", "sess_one.html", "sess_other.html"]


def test_html_for_several_sessions_writes_an_index_linking_every_page(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "pages"
    assert run_logs(capsys, str(two_sessions), "--html", str(out_dir))[0] == 0
    index = (out_dir / "index.html").read_text(encoding="utf-8")
    assert index.startswith("<!DOCTYPE html>")
    assert re.findall(r'href="([^"]+)"', index) == ["sess_one.html", "sess_other.html"]


@pytest.mark.parametrize("name", ["out.html", "OUT.HTML"])
def test_html_file_name_for_several_sessions_exits_2_and_writes_nothing(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, out, err = run_logs(capsys, str(two_sessions), "--html", str(tmp_path / name))
    assert code == 2
    assert "2 sessions" in err and "directory" in err and "--session" in err
    assert out == ""
    assert not (tmp_path / name).exists()


def test_html_into_an_existing_directory_names_the_page_after_the_session(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "existing"
    out_dir.mkdir()
    assert run_logs(capsys, str(two_sessions), "--session", "sess_other", "--html", str(out_dir))[0] == 0
    assert [p.name for p in out_dir.iterdir()] == ["sess_other.html"]


def test_html_page_loads_nothing_from_the_network_and_embeds_every_record(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "p.html"
    run_logs(capsys, str(two_sessions), "--session", "sess_one", "--html", str(page))
    text = page.read_text()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text)
    assert "@import" not in text and "url(" not in text
    records = re.search(r'<script type="application/json" id="records-data">(.*?)</script>', text, re.S)
    assert records is not None
    assert len(json.loads(records.group(1))) == 63


def test_html_survives_records_that_contain_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = SessionLog("sess_evil")
    log.user_speech(item_id="item_u1", started=10.0, stopped=100.0,
                    transcript="</script><script>document.title='owned'</script><!--")
    log.write(tmp_path / "logs")
    page = tmp_path / "evil.html"
    assert run_logs(capsys, str(tmp_path / "logs"), "--html", str(page))[0] == 0
    text = page.read_text()
    assert text.count("<script") == 5  # four JSON blocks and the page script, nothing injected
    assert "<script>document.title" not in text
    records = re.search(r'id="records-data">(.*?)</script>', text, re.S)
    assert records is not None
    assert "</script><script>" in json.dumps(json.loads(records.group(1)))


def test_html_links_saved_wavs_that_sit_next_to_the_logs_relative_to_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The relay ran in tmp_path with ./logs and ./data; audio_saved.path is relative to that directory.
    log = two_turn_session("sess_wav")
    log.audio_saved(2500.0, "item_u1", "data/sessions/sess_wav/item_u1.wav")  # this one was never written
    log.write(tmp_path / "logs")
    wav = tmp_path / "data" / "sessions" / "sess_wav" / "item_a1.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    page = tmp_path / "reports" / "sess_wav.html"
    assert run_logs(capsys, str(tmp_path / "logs"), "--html", str(page))[0] == 0
    text = page.read_text()
    assert set(re.findall(r'href="([^"]*)"', text)) == {"../data/sessions/sess_wav/item_a1.wav"}
    assert re.search(r'<audio [^>]*src="\.\./data/sessions/sess_wav/item_a1\.wav"', text)
    assert "not found next to this page" in text


def test_html_that_cannot_be_written_exits_1_with_a_message(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run_logs(capsys, str(two_sessions), "--html", str(blocker / "sub" / "page.html"),
                              "--session", "sess_one")
    assert code == 1
    assert "cannot write" in err
    assert "Session sess_one" in out


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    # `realtime-relay logs ./logs | head -1`: the pipe closes while the table is still being written.
    for i in range(150):
        two_turn_session(f"sess_{i:03d}").write(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "relay", "logs", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"150 sessions\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=seconds(60)) == 0
    assert err == ""


def test_html_of_a_single_log_file_finds_the_wavs_beside_its_log_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = two_turn_session("sess_file")
    log_file = log.write(tmp_path / "logs")  # tmp_path/logs/<date>/sess_file.jsonl
    wav = tmp_path / "data" / "sessions" / "sess_file" / "item_a1.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    page = log_file.with_suffix(".html")
    assert run_logs(capsys, str(log_file), "--html", str(page))[0] == 0
    assert 'href="../../data/sessions/sess_file/item_a1.wav"' in page.read_text()


def test_html_links_a_wav_found_under_the_data_dir_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = two_turn_session("sess_dd")
    log.write(tmp_path / "elsewhere" / "logs")
    wav = tmp_path / "store" / "sessions" / "sess_dd" / "item_a1.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    page = tmp_path / "p.html"
    args = (str(tmp_path / "elsewhere" / "logs"), "--data-dir", str(tmp_path / "store"), "--html", str(page))
    assert run_logs(capsys, *args)[0] == 0
    assert 'href="store/sessions/sess_dd/item_a1.wav"' in page.read_text()

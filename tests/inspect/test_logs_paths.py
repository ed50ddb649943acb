"""`realtime-relay logs` and the file system: what it reads under PATH, what it skips, and what `--html` may write."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.cli.main import main
from relay.inspect.reader import ReadWarnings, read_file
from tests.support.logs_fixtures import SessionLog, two_turn_session


def run_logs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["logs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def deny_listing(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Listing `folder` fails as it does for a folder the user may not read (root is never refused one)."""
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) == os.fspath(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


# -- --html never writes over its input -------------------------------------------------------------------


def test_html_onto_the_log_file_itself_exits_2_and_leaves_the_log_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = two_turn_session("sess_self").write(tmp_path)
    before = log_file.read_bytes()
    code, out, err = run_logs(capsys, str(log_file), "--html", str(log_file))
    assert (code, out) == (2, "")
    assert "--html" in err and str(log_file) in err and "input" in err
    assert log_file.read_bytes() == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_html_onto_another_name_of_the_log_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], link: str
) -> None:
    log_file = two_turn_session("sess_linked").write(tmp_path / "logs")
    before = log_file.read_bytes()
    out_page = tmp_path / "page.html"
    if link == "symlink":
        out_page.symlink_to(log_file)
    else:
        out_page.hardlink_to(log_file)
    code, _, err = run_logs(capsys, str(tmp_path / "logs"), "--html", str(out_page))
    assert code == 2 and "input" in err
    assert log_file.read_bytes() == before


def test_html_into_a_folder_whose_index_would_be_the_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One file holding two sessions, named index.html: writing the folder's index would replace it.
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = two_turn_session("sess_one").lines() + two_turn_session("sess_two").lines()
    log_file = logs / "index.html"
    log_file.write_text("".join(line + "\n" for line in lines))
    before = log_file.read_bytes()
    code, out, err = run_logs(capsys, str(log_file), "--html", str(logs))
    assert (code, out) == (2, "")
    assert "input" in err and str(log_file) in err
    assert log_file.read_bytes() == before
    assert sorted(p.name for p in logs.iterdir()) == ["index.html"]


def test_html_into_a_folder_whose_page_would_be_an_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log_file = logs / "sess_page.html"  # a log named like the page of its own session
    log_file.write_text("".join(line + "\n" for line in two_turn_session("sess_page").lines()))
    code, _, err = run_logs(capsys, str(log_file), "--html", f"{logs}/")
    assert code == 2 and "input" in err
    assert log_file.read_text().startswith("{")


def test_html_next_to_the_logs_is_still_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_file = two_turn_session("sess_next").write(tmp_path)
    page = log_file.with_suffix(".html")
    assert run_logs(capsys, str(log_file), "--html", str(page))[0] == 0
    assert page.read_text().startswith("<!DOCTYPE html>")


# -- unreadable and unusual entries under PATH ------------------------------------------------------------


def test_a_subfolder_that_cannot_be_listed_is_skipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    two_turn_session("sess_seen").write(tmp_path / "a")
    two_turn_session("sess_hidden").write(tmp_path / "b")
    deny_listing(monkeypatch, tmp_path / "b" / "2026-11-26")
    code, out, err = run_logs(capsys, str(tmp_path))
    assert code == 0
    assert "Session sess_seen" in out and "sess_hidden" not in out
    assert "1 unreadable folder" in err
    assert f"{tmp_path / 'b' / '2026-11-26'}: unreadable folder: Permission denied" in err


def test_a_path_that_cannot_be_listed_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    two_turn_session("sess_x").write(tmp_path)
    deny_listing(monkeypatch, tmp_path)
    code, out, err = run_logs(capsys, str(tmp_path))
    assert (code, out) == (1, "")
    assert err.strip() == f"realtime-relay logs: cannot list {tmp_path}: Permission denied"


def test_a_path_file_that_cannot_be_opened_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = two_turn_session("sess_x").write(tmp_path)
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == os.fspath(log_file):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    code, out, err = run_logs(capsys, str(log_file))
    assert (code, out) == (1, "")
    assert err.strip() == f"realtime-relay logs: cannot read {log_file}: Permission denied"


@pytest.fixture
def logs_with_specials(tmp_path: Path) -> Iterator[Path]:
    logs = tmp_path / "logs"
    two_turn_session("sess_real").write(logs)
    os.mkfifo(logs / "fifo.jsonl")  # opening it to read would wait for a writer forever
    (logs / "zero.jsonl").symlink_to("/dev/zero")  # one endless line
    (logs / "loop.jsonl").symlink_to(logs / "loop.jsonl")
    (logs / "dangling.jsonl").symlink_to(tmp_path / "gone")
    yield logs


@pytest.mark.timeout(30)
def test_fifos_devices_and_broken_links_in_a_folder_are_skipped_with_warnings(
    logs_with_specials: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_logs(capsys, str(logs_with_specials))
    assert code == 0
    assert "Session sess_real" in out
    assert "2 not a regular file" in err and "2 unreadable file" in err
    assert f"{logs_with_specials / 'fifo.jsonl'}: not a regular file" in err
    assert f"{logs_with_specials / 'zero.jsonl'}: not a regular file" in err
    assert f"{logs_with_specials / 'loop.jsonl'}: unreadable file: Too many levels of symbolic links" in err


@pytest.mark.timeout(30)
def test_reading_a_fifo_directly_returns_at_once_with_a_warning(tmp_path: Path) -> None:
    fifo = tmp_path / "sess_fifo.jsonl"
    os.mkfifo(fifo)
    warnings = ReadWarnings()
    assert list(read_file(fifo, warnings)) == []
    assert [(w.file, w.reason) for w in warnings.samples] == [(str(fifo), "not a regular file")]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_path_that_is_a_fifo_or_a_device_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    if kind == "fifo":
        path = tmp_path / "sess.jsonl"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    code, out, err = run_logs(capsys, str(path))
    assert (code, out) == (2, "")
    assert err.strip() == (
        f"realtime-relay logs: not a regular file or directory: {path} (a FIFO, device or socket is not read)"
    )


# -- --session --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("session", ["", "sess_nope"])
def test_an_empty_or_unknown_session_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], session: str
) -> None:
    log = SessionLog("sess_here")
    log.started()
    log.write(tmp_path)
    code, out, err = run_logs(capsys, str(tmp_path), "--session", session)
    assert (code, out) == (1, "")
    assert err.strip() == f"realtime-relay logs: session {session!r} not found in {tmp_path}"

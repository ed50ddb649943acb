"""`realtime-relay logs PATH [--session ID] [--json] [--html OUT]`: what happened in each session, how fast.

Boundary: CLI adapter. Reads logs through `relay.inspect.summary`, prints a table (`relay.inspect.terminal`;
colour only when stdout is a TTY and NO_COLOR is unset) or JSON lines to stdout, read warnings to stderr, and
with `--html` finds each session's saved audio and recording on disk and writes one timeline page per session
through `relay.inspect.timeline`. Exit codes: 0 ok; 1 a requested session (`--session`, even an empty one) is
not in the logs, the path cannot be read or listed, or an HTML file could not be written; 2 the path does not
exist or is neither a regular file nor a folder, or `--html OUT` is refused (below). Unreadable files and
subfolders below the path are skipped and counted with the other read warnings, on stderr.

`--html OUT` rule: when exactly one session is selected and OUT is not an existing directory (and does not
end with a path separator), OUT is that page's file name. Otherwise OUT is a directory (created when
missing), every session gets `<OUT>/<session_id>.html` and `<OUT>/index.html` links them; an OUT ending in
`.html` then is refused with exit 2 before anything is printed or written (a directory named `x.html` is
never what was meant). So is an OUT whose pages (or index) would be one of the log files found under the path,
by any name (a symlink or hard link included): the pages never overwrite their own input.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import wave
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO
from urllib.parse import quote

import orjson

from relay.cli import stdout_to_devnull
from relay.inspect.reader import LogAccessError, LogPathError, ReadWarnings, session_records, shown_name
from relay.inspect.summary import LogSummary, summarize
from relay.inspect.terminal import one_line, render_overview, render_session
from relay.inspect.timeline import write_timeline
from relay.recording import RECORDING_FILE, RECORDING_SAVED
from relay.recording.peaks import recording_peaks
from relay.redact import printable, printable_data

if TYPE_CHECKING:
    from relay.settings import Settings

NAME = "logs"
HELP = "Summarize event logs: turns, latencies, errors; --json for JSON lines, --html for timelines."

# JSON escapes every control character but leaves the Unicode line and paragraph separators raw; a reader that
# splits lines the way Python's `str.splitlines` does would see a second object in one line.
_JSON_LINE_SEPARATORS: Final = {0x2028: "\\u2028", 0x2029: "\\u2029"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", metavar="PATH", nargs="?", default=None,
        help="a session's .jsonl file or a directory of them (default: the log_dir setting)",
    )
    parser.add_argument("--session", metavar="ID", default=None, help="only this session id")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per session per line (fields in the README)"
    )
    parser.add_argument(
        "--html", metavar="OUT", default=None,
        help="write a self-contained timeline page: OUT is the file for one session, else a directory "
        "that gets <session_id>.html per session",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.path if args.path is not None else settings.log_dir)
    try:
        result = summarize(path, args.session)
    except LogPathError as exc:
        print(f"realtime-relay logs: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except LogAccessError as exc:
        print(f"realtime-relay logs: {one_line(str(exc))}", file=sys.stderr)
        return 1
    if args.html is not None and len(result.sessions) > 1 and args.html.lower().endswith(".html"):
        print(
            f"realtime-relay logs: {path} holds {len(result.sessions)} sessions, so --html needs a directory "
            f"(one page per session plus index.html), not the file {args.html!r}; pass a directory, or pick "
            "one session with --session ID",
            file=sys.stderr,
        )
        return 2
    if args.html is not None and result.sessions:
        overwritten = input_overwritten(output_paths(result, Path(args.html)), result.log_files)
        if overwritten is not None:
            print(
                f"realtime-relay logs: --html {args.html!r} would write over the log file {overwritten}, which "
                "is one of the inputs; choose another OUT",
                file=sys.stderr,
            )
            return 2
    try:
        print_sessions(result, args.json)
    except BrokenPipeError:
        # `logs ./logs | head`: the reader has gone, which is not an error; the warnings and pages still follow.
        stdout_to_devnull()
    write_warnings(result.warnings, sys.stderr)
    code = 0
    if not result.sessions:
        # An empty --session names no session the relay mints: not found, like any other unknown id.
        what = f"session {args.session!r} not" if args.session is not None else "no sessions"
        print(f"realtime-relay logs: {what} found in {path}", file=sys.stderr)
        code = 1 if args.session is not None else 0
    if args.html is not None and result.sessions:
        code = max(code, write_pages(result, Path(args.html), Path(settings.data_dir)))
    return code


def print_sessions(result: LogSummary, as_json: bool) -> None:
    if as_json:
        for session in result.sessions:
            sys.stdout.write(printable(orjson.dumps(session).decode()).translate(_JSON_LINE_SEPARATORS) + "\n")
    else:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        # Event text came from clients and upstreams: never let it drive the terminal (see docs/security.md).
        # (sanitized before rendering, so the relay's own colours stay).
        sessions = [printable_data(session) for session in result.sessions]
        if len(sessions) > 1:
            sys.stdout.write(render_overview(sessions, color) + "\n")
        for session in sessions:
            sys.stdout.write(render_session(session, color) + "\n")
    sys.stdout.flush()


def write_warnings(warnings: ReadWarnings, out: TextIO) -> None:
    if not warnings.total:
        return
    reasons = ", ".join(f"{n} {reason}" for reason, n in warnings.by_reason.most_common())
    print(f"realtime-relay logs: skipped {warnings.total} unreadable line(s)/file(s)/folder(s): {reasons}", file=out)
    for w in warnings.samples[:10]:
        name = shown_name(w.file)
        where = f"{name}:{w.line}" if w.line is not None else name
        # A file name is anyone's bytes: no terminal control, and no line break that would print a forged warning.
        print(printable(one_line(f"  {where}: {w.reason}")), file=out)
    if len(warnings.samples) > 10 or warnings.total > len(warnings.samples):
        print(f"  ... and {warnings.total - min(10, len(warnings.samples))} more", file=out)


# -- HTML ------------------------------------------------------------------------------------------------


def page_paths(session_ids: list[str], out: Path) -> dict[str, Path]:
    """Where each session's page goes (the rule in the module docstring)."""
    as_file = len(session_ids) == 1 and not out.is_dir() and not str(out).endswith(("/", os.sep))
    if as_file:
        return {session_ids[0]: out}
    return {sid: out / f"{sid}.html" for sid in session_ids}


def output_paths(result: LogSummary, out: Path) -> list[Path]:
    """Every file `--html OUT` would write: one page per session, and the index when there are several."""
    pages = list(page_paths([s["session_id"] for s in result.sessions], out).values())
    return [*pages, out / "index.html"] if len(pages) > 1 else pages


def input_overwritten(outputs: Iterable[Path], inputs: Iterable[Path]) -> Path | None:
    """The first output that is already one of the inputs (the same file by any name, symlinks followed), or None."""
    def identity(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:  # not there (yet): writing it overwrites nothing
            return None
        return st.st_dev, st.st_ino

    read = {key for path in inputs if (key := identity(path)) is not None}
    return next((path for path in outputs if identity(path) in read), None)


def wav_links(session: dict[str, Any], files: list[Path], page: Path, data_dir: Path) -> dict[str, str]:
    """item_id -> link to its saved WAV relative to the page, for the WAVs that exist on this machine.

    Candidates, first existing wins: the `path` of relay.audio_saved as given (absolute, or relative to the
    working directory); a relative `path` resolved against the directories above the session's log file
    (the relay's working directory is usually the parent of `<log_dir>/<date>/`, where `./data` sits next
    to `./logs`); and `<data_dir>/sessions/<session_id>/<item_id>.wav`.
    """
    links: dict[str, str] = {}
    bases = _log_bases(files)
    for saved in session["audio_saved"]:
        item_id = saved.get("item_id")
        if not isinstance(item_id, str):
            continue
        candidates = _logged_path(saved.get("path"), bases)
        candidates.append(data_dir / "sessions" / session["session_id"] / f"{item_id}.wav")
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            links[item_id] = _link(found, page)
    return links


def _log_bases(files: list[Path]) -> list[Path]:
    """The directories a relative path logged by the relay may be relative to: up to three above each log file."""
    bases: list[Path] = []
    for log_file in files:
        for base in log_file.parents[:3]:
            if base not in bases:
                bases.append(base)
    return bases


def _logged_path(given: object, bases: list[Path]) -> list[Path]:
    """Where a file path found in a record may point: as given, then (when relative) against each base."""
    if not isinstance(given, str) or not given:
        return []
    return [Path(given)] + ([] if Path(given).is_absolute() else [base / given for base in bases])


def _link(target: Path, page: Path) -> str:
    """`target` as a URL path relative to the page's directory: the name's bytes percent-encoded, so a name
    that is not UTF-8 (or holds `#`, `?` or a space) still links to its file."""
    return quote(os.fsencode(Path(os.path.relpath(target.resolve(), page.parent.resolve())).as_posix()))


def recording_view(session: dict[str, Any], records: list[Path], page: Path, data_dir: Path) -> dict[str, Any] | None:
    """The session's recording for its page: a link relative to the page and the waveform peaks, or None.

    Candidates, first existing wins: the `path` of relay.recording_saved (as given, or relative to the
    directories above the log file, like item WAVs), then `<data_dir>/sessions/<session_id>/recording.wav`.
    A session still running (or killed) has no relay.recording_saved; its file is found by the last rule.
    """
    candidates: list[Path] = []
    bases = _log_bases(records)
    for record in session_records(records, session["session_id"]):
        if record.type == RECORDING_SAVED and isinstance(record.raw.get("event"), dict):
            candidates.extend(_logged_path(record.raw["event"].get("path"), bases))
    candidates.append(data_dir / "sessions" / session["session_id"] / RECORDING_FILE)
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            peaks = recording_peaks(candidate)
        except (OSError, EOFError, wave.Error) as exc:
            print(f"realtime-relay logs: cannot read the recording {candidate}: {exc}", file=sys.stderr)
            return None
        return {"link": _link(candidate, page), **peaks.as_json()}
    return None


def write_pages(result: LogSummary, out: Path, data_dir: Path) -> int:
    paths = page_paths([s["session_id"] for s in result.sessions], out)
    code = 0
    for session in result.sessions:
        page = paths[session["session_id"]]
        try:
            page.parent.mkdir(parents=True, exist_ok=True)
            files = result.files_by_session[session["session_id"]]
            records = session_records(files, session["session_id"])
            links = wav_links(session, files, page, data_dir)
            recording = recording_view(session, files, page, data_dir)
            with page.open("w", encoding="utf-8") as handle:
                write_timeline(handle, session, records, links, recording)
        except OSError as exc:
            print(f"realtime-relay logs: cannot write {page}: {exc.strerror or exc}", file=sys.stderr)
            code = 1
            continue
        print(f"realtime-relay logs: wrote {page}", file=sys.stderr)
    if len(paths) > 1:
        index = out / "index.html"
        try:
            index.write_text(index_page(result, paths, index), encoding="utf-8")
        except OSError as exc:
            print(f"realtime-relay logs: cannot write {index}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"realtime-relay logs: wrote {index}", file=sys.stderr)
    return code


def index_page(result: LogSummary, paths: dict[str, Path], index: Path) -> str:
    """A self-contained page listing every session's timeline page (relative links), oldest first."""
    rows = []
    for session in result.sessions:
        sid = session["session_id"]
        link = Path(os.path.relpath(paths[sid], index.parent)).as_posix()
        duration = session.get("duration_s")
        rows.append(
            f'<tr><td><a href="{html.escape(link)}">{html.escape(sid)}</a></td>'
            f"<td>{html.escape(str(session.get('started_at') or '-'))}</td>"
            f"<td>{'-' if not isinstance(duration, (int, float)) else f'{duration:.1f} s'}</td>"
            f"<td>{len(session.get('turns') or [])}</td><td>{len(session.get('errors') or [])}</td></tr>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>realtime-relay sessions</title>'
        "<style>body{font:14px system-ui,sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}</style>"
        "</head><body><h1>Sessions</h1><table><thead><tr><th>session</th><th>started</th><th>duration</th>"
        "<th>turns</th><th>errors</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></body></html>\n"
    )

"""`realtime-relay logs PATH [--session ID] [--json] [--html OUT]`: what happened in each session, how fast.

Boundary: CLI adapter. Reads logs through `relay.inspect.summary`, prints a table (colour only when stdout is a
TTY and NO_COLOR is unset) or JSON lines to stdout, read warnings to stderr, and with `--html` writes one
timeline page per session through `relay.inspect.timeline`. Exit codes: 0 ok, 1 a requested session is not in
the logs or an HTML file could not be written, 2 the path does not exist.

`--html OUT` rule: when exactly one session is selected and OUT is not an existing directory (and does not
end with a path separator), OUT is that page's file name. Otherwise OUT is a directory (created when
missing), every session gets `<OUT>/<session_id>.html` and `<OUT>/index.html` links them; an OUT ending in
`.html` then is refused with exit 2 before anything is printed or written (a directory named `x.html` is
never what was meant).
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from relay.inspect.formats import LATENCY_LABELS, fmt_ms, tool_arguments, turn_status
from relay.inspect.reader import LogPathError, ReadWarnings, session_records
from relay.inspect.summary import LogSummary, summarize
from relay.inspect.timeline import write_timeline
from relay.recording import RECORDING_FILE, RECORDING_SAVED
from relay.recording.peaks import recording_peaks
from relay.redact import printable, printable_data

if TYPE_CHECKING:
    from relay.settings import Settings

NAME = "logs"
HELP = "Summarize event logs: turns, latencies, errors; --json for JSON lines, --html for timelines."


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
        print(f"realtime-relay logs: {exc}", file=sys.stderr)
        return 2
    if args.html is not None and len(result.sessions) > 1 and args.html.lower().endswith(".html"):
        print(
            f"realtime-relay logs: {path} holds {len(result.sessions)} sessions, so --html needs a directory "
            f"(one page per session plus index.html), not the file {args.html!r}; pass a directory, or pick "
            "one session with --session ID",
            file=sys.stderr,
        )
        return 2
    try:
        print_sessions(result, args.json)
    except BrokenPipeError:
        # `logs ./logs | head`: the reader has gone, which is not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    write_warnings(result.warnings, sys.stderr)
    code = 0
    if not result.sessions:
        what = f"session {args.session!r} not" if args.session else "no sessions"
        print(f"realtime-relay logs: {what} found in {path}", file=sys.stderr)
        code = 1 if args.session else 0
    if args.html is not None and result.sessions:
        code = max(code, write_pages(result, Path(args.html), Path(settings.data_dir)))
    return code


def print_sessions(result: LogSummary, as_json: bool) -> None:
    if as_json:
        for session in result.sessions:
            sys.stdout.write(printable(orjson.dumps(session).decode()) + "\n")
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
    print(f"realtime-relay logs: skipped {warnings.total} unreadable line(s)/file(s): {reasons}", file=out)
    for w in warnings.samples[:10]:
        where = f"{w.file}:{w.line}" if w.line is not None else w.file
        print(f"  {where}: {w.reason}", file=out)
    if len(warnings.samples) > 10 or warnings.total > len(warnings.samples):
        print(f"  ... and {warnings.total - min(10, len(warnings.samples))} more", file=out)


# -- HTML ------------------------------------------------------------------------------------------------


def page_paths(session_ids: list[str], out: Path) -> dict[str, Path]:
    """Where each session's page goes (the rule in the module docstring)."""
    as_file = len(session_ids) == 1 and not out.is_dir() and not str(out).endswith(("/", os.sep))
    if as_file:
        return {session_ids[0]: out}
    return {sid: out / f"{sid}.html" for sid in session_ids}


def wav_links(session: dict[str, Any], page: Path, data_dir: Path) -> dict[str, str]:
    """item_id -> link to its saved WAV relative to the page, for the WAVs that exist on this machine.

    Candidates, first existing wins: the `path` of relay.audio_saved as given (absolute, or relative to the
    working directory); a relative `path` resolved against the directories above the session's log file
    (the relay's working directory is usually the parent of `<log_dir>/<date>/`, where `./data` sits next
    to `./logs`); and `<data_dir>/sessions/<session_id>/<item_id>.wav`.
    """
    links: dict[str, str] = {}
    bases: list[Path] = []
    for log_file in session["files"]:
        for base in Path(log_file).parents[:3]:
            if base not in bases:
                bases.append(base)
    for saved in session["audio_saved"]:
        item_id = saved.get("item_id")
        if not isinstance(item_id, str):
            continue
        candidates: list[Path] = []
        if isinstance(saved.get("path"), str) and saved["path"]:
            given = Path(saved["path"])
            candidates.append(given)
            if not given.is_absolute():
                candidates.extend(base / given for base in bases)
        candidates.append(data_dir / "sessions" / session["session_id"] / f"{item_id}.wav")
        for candidate in candidates:
            if candidate.is_file():
                links[item_id] = Path(os.path.relpath(candidate.resolve(), page.parent.resolve())).as_posix()
                break
    return links


def recording_view(session: dict[str, Any], records: list[Path], page: Path, data_dir: Path) -> dict[str, Any] | None:
    """The session's recording for its page: a link relative to the page and the waveform peaks, or None.

    Candidates, first existing wins: the `path` of relay.recording_saved (as given, or relative to the
    directories above the log file, like item WAVs), then `<data_dir>/sessions/<session_id>/recording.wav`.
    A session still running (or killed) has no relay.recording_saved; its file is found by the last rule.
    """
    candidates: list[Path] = []
    bases = [base for log_file in session["files"] for base in Path(log_file).parents[:3]]
    for record in session_records(records, session["session_id"]):
        if record.type == RECORDING_SAVED and isinstance(record.raw.get("event"), dict):
            given = record.raw["event"].get("path")
            if isinstance(given, str) and given:
                candidates.append(Path(given))
                if not Path(given).is_absolute():
                    candidates.extend(base / given for base in bases)
    candidates.append(data_dir / "sessions" / session["session_id"] / RECORDING_FILE)
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            peaks = recording_peaks(candidate)
        except (OSError, EOFError, wave.Error) as exc:
            print(f"realtime-relay logs: cannot read the recording {candidate}: {exc}", file=sys.stderr)
            return None
        link = Path(os.path.relpath(candidate.resolve(), page.parent.resolve())).as_posix()
        return {"link": link, **peaks.as_json()}
    return None


def write_pages(result: LogSummary, out: Path, data_dir: Path) -> int:
    paths = page_paths([s["session_id"] for s in result.sessions], out)
    code = 0
    for session in result.sessions:
        page = paths[session["session_id"]]
        try:
            page.parent.mkdir(parents=True, exist_ok=True)
            records = session_records(result.files_by_session[session["session_id"]], session["session_id"])
            links = wav_links(session, page, data_dir)
            files = result.files_by_session[session["session_id"]]
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


# -- terminal table ----------------------------------------------------------------------------------------


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _table(rows: list[list[str]], indent: str = "    ", right: frozenset[int] = frozenset()) -> list[str]:
    """Rows aligned into columns (column numbers in `right` are right-aligned). Cells are plain text."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def _short(text: str | None, width: int = 40) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _printable(text: str) -> str:
    """Tool names, arguments and outputs come from the model and handlers: no control characters on a terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


def render_overview(sessions: list[dict[str, Any]], color: bool = False) -> str:
    """One line per session, before the details, when there are several."""
    st = _Style(color)
    rows = [["session", "started", "duration", "turns", "speech→audio p50", "errors", "end"]]
    for s in sessions:
        rows.append([
            s["session_id"], s["started_at"] or "?", _fmt_s(s["duration_s"]), str(s["turn_count"]),
            fmt_ms(s["latency_ms"]["speech_to_first_audio"]["p50"]), str(s["error_count"]),
            s["end_reason"] or ("-" if s["ended"] else "not ended"),
        ])
    lines = _table(rows, "  ", frozenset({2, 3, 4, 5}))
    return st.bold(f"{len(sessions)} sessions") + "\n" + "\n".join(lines)


def render_session(s: dict[str, Any], color: bool = False) -> str:
    """A readable, aligned summary of one session (the `--json` dict) for a terminal."""
    st = _Style(color)
    out: list[str] = [st.bold(f"Session {s['session_id']}") + "  " + st.dim(", ".join(s["files"]))]
    ended = (
        f"{s['end_reason'] or '?'} (client close {s['client_close_code']}, "
        f"upstream close {s['upstream_close_code']})"
        if s["ended"] else st.yellow("no relay.session_ended (still running, or the log was cut)")
    )
    upstream = s["upstream_url"] or "?"
    if s["upstream_session_id"]:
        upstream += f"  (upstream session {s['upstream_session_id']}, connect {fmt_ms(s['connect_ms'])})"
    ev = s["events"]
    audio = s["audio_s"]
    retrieves = s["retrieves"]
    by_result = ", ".join(f"{n} {k}" for k, n in retrieves["by_result"].items())
    saved = s["audio_saved"]
    sources = ", ".join(sorted({str(a.get("source")) for a in saved}))
    head = [
        ["Started", f"{s['started_at'] or '?'}   ended {s['ended_at'] or '?'}"],
        ["Duration", _fmt_s(s["duration_s"])],
        ["End", ended],
        ["Upstream", upstream],
        ["Events", f"{ev['total']}: client {ev['client']}, server {ev['server']}, relay {ev['relay']}"],
        ["Audio", f"in {_fmt_s(audio['in'])}, out {_fmt_s(audio['out'])}"],
        ["Turns", f"{s['turn_count']} ({s['barge_in_count']} barge-in)"
         + "".join(f", {n} {status}" for status, n in s["responses"]["by_status"].items())],
        ["Retrieves", f"{retrieves['total']}" + (f" ({by_result})" if by_result else "")],
        ["Saved audio", f"{len(saved)} file(s)" + (f" from {sources}" if saved else "")],
        ["Errors", st.red(str(s["error_count"])) if s["errors"] else "0"],
        ["Log", _log_health(s["log"], st)],
    ]
    if s["client_model"]:
        head.insert(4, ["Client model", f"{s['client_model']} (ignored unless allow_client_model)"])
    # Colour codes are invisible: pad the label column only, values are last.
    out.extend(_table(head, indent="  "))

    if s["errors"]:
        out.append("  " + st.bold("Errors"))
        rows = [[f"{e['t_ms'] / 1000:.3f} s", e["kind"], e["code"] or "-",
                 _short(e["message"] or (e["item_id"] and f"item {e['item_id']}") or "", 60)]
                for e in s["errors"]]
        out.extend(_table(rows, right=frozenset({0})))

    if s["turns"]:
        out.append("  " + st.bold("Turns"))
        rows = [["#", "user", "input", "response", "status", "speech→audio", "request→done", "audio out",
                 "said"]]
        for t in s["turns"]:
            said = _short(t["user_transcript"], 30) or "…"
            if t["assistant_text"]:
                said += " → " + _short(t["assistant_text"], 30)
            rows.append([
                str(t["index"]),
                ",".join(t["user_item_ids"]) or "-",
                t["input"] or "-",
                t["response_id"] or "-",
                turn_status(t) + (" barge-in" if t["barge_in"] else ""),
                fmt_ms(t["speech_to_first_audio_ms"]),
                fmt_ms(t["request_to_done_ms"]),
                _fmt_s(t["audio_out_s"]),
                said,
            ])
        out.extend(_table(rows, right=frozenset({0, 5, 6, 7})))

    if s.get("tool_calls"):
        out.append("  " + st.bold("Server tool calls"))
        rows = [["at", "tool", "result", "took", "arguments → output"]]
        for call in s["tool_calls"]:
            arguments = tool_arguments(call)
            output = call["output"] if isinstance(call["output"], str) else str(call["output"])
            rows.append([
                f"{call['t_ms'] / 1000:.3f} s",
                _printable(call["name"] or "?"),
                call["result"] or "?",
                fmt_ms(call["duration_ms"]),
                _printable(_short(arguments, 40) + " → " + _short(output, 60)),
            ])
        out.extend(_table(rows, right=frozenset({0, 3})))

    out.append("  " + st.bold("Latency"))
    rows = [["", "n", "p50", "p95", "max"]]
    for key, label in LATENCY_LABELS.items():
        lat = s["latency_ms"][key]
        rows.append([label, str(lat["count"]), fmt_ms(lat["p50"]), fmt_ms(lat["p95"]), fmt_ms(lat["max"])])
    out.extend(_table(rows, right=frozenset({1, 2, 3, 4})))

    out.append("  " + st.bold("Event types"))
    rows = []
    for direction, types in s["event_types"].items():
        for type_name, n in sorted(types.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append([direction, type_name, str(n)])
    out.extend(_table(rows, right=frozenset({2})))
    return "\n".join(out) + "\n"


def _log_health(log: dict[str, Any], st: _Style) -> str:
    problems = []
    if log["gaps"]:
        problems.append(f"{len(log['gaps'])} gap(s)")
    if log["dropped"]:
        problems.append(f"{log['dropped']} record(s) dropped by the relay")
    if log["missing_seq"]:
        problems.append(f"{log['missing_seq']} seq(s) missing")
    if log["duplicate_seq"]:
        problems.append(f"{log['duplicate_seq']} duplicate record(s) skipped")
    if log["warning_count"]:
        problems.append(f"{log['warning_count']} unreadable line(s)")
    return st.yellow(", ".join(problems)) if problems else st.green("complete")

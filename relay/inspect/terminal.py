"""Render session summaries (the `--json` dicts of `relay.inspect.summary`) as aligned text for a terminal.

Boundary: dicts in, strings out; no printing, no file, no environment. The caller decides whether colour is
wanted and makes the summaries' text safe for a terminal first (`relay.cli.logs`); tool names, arguments and
outputs are made printable here as well. Every table cell and the session's heading are kept on one line here
(`one_line`): values such as event types, ids and file names come from clients, upstreams and the file system,
and a line break inside one would print a row the log never had. The HTML rendering of the same dicts is
`relay.inspect.timeline`.
"""

from __future__ import annotations

from typing import Any, Final

from relay.inspect.formats import LATENCY_LABELS, NOT_ENDED, events_text, fmt_ms, fmt_s, tool_arguments, turn_status, turns_text

# What `str.splitlines` breaks a line at, and tab (which would shift every column after it): shown as visible
# escapes. `relay.redact.printable` keeps newline and tab on purpose, for text that may span lines.
_LINE_BREAKS: Final = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"} | {
    code: f"\\u{code:04x}" for code in (0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)
}


def one_line(text: str) -> str:
    """`text` on one line: every line break (and tab) shown as a visible escape such as `\\n` or `\\u2028`."""
    return text.translate(_LINE_BREAKS)


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


def _table(rows: list[list[str]], indent: str = "    ", right: frozenset[int] = frozenset()) -> list[str]:
    """Rows aligned into columns (column numbers in `right` are right-aligned). Cells are plain text."""
    if not rows:
        return []
    rows = [[one_line(cell) for cell in row] for row in rows]
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
            s["session_id"], s["started_at"] or "?", fmt_s(s["duration_s"]), str(s["turn_count"]),
            fmt_ms(s["latency_ms"]["speech_to_first_audio"]["p50"]), str(s["error_count"]),
            s["end_reason"] or ("-" if s["ended"] else "not ended"),
        ])
    lines = _table(rows, "  ", frozenset({2, 3, 4, 5}))
    return st.bold(f"{len(sessions)} sessions") + "\n" + "\n".join(lines)


def render_session(s: dict[str, Any], color: bool = False) -> str:
    """A readable, aligned summary of one session (the `--json` dict) for a terminal."""
    st = _Style(color)
    out: list[str] = [st.bold(one_line(f"Session {s['session_id']}")) + "  " + st.dim(one_line(", ".join(s["files"])))]
    ended = (
        f"{s['end_reason'] or '?'} (client close {s['client_close_code']}, "
        f"upstream close {s['upstream_close_code']})"
        if s["ended"] else st.yellow(NOT_ENDED)
    )
    upstream = s["upstream_url"] or "?"
    if s["upstream_session_id"]:
        upstream += f"  (upstream session {s['upstream_session_id']}, connect {fmt_ms(s['connect_ms'])})"
    audio = s["audio_s"]
    retrieves = s["retrieves"]
    by_result = ", ".join(f"{n} {k}" for k, n in retrieves["by_result"].items())
    saved = s["audio_saved"]
    sources = ", ".join(sorted({str(a.get("source")) for a in saved}))
    head = [
        ["Started", f"{s['started_at'] or '?'}   ended {s['ended_at'] or '?'}"],
        ["Duration", fmt_s(s["duration_s"])],
        ["End", ended],
        ["Upstream", upstream],
        ["Events", events_text(s)],
        ["Audio", f"in {fmt_s(audio['in'])}, out {fmt_s(audio['out'])}"],
        ["Turns", turns_text(s)
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
                fmt_s(t["audio_out_s"]),
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

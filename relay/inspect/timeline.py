"""Render one session's event log as a self-contained HTML timeline page.

Boundary: the Python side of the page: it writes the session's summary tables and streams its records, as
inline JSON, into the static template of `relay.inspect.timeline_page` (skeleton, CSS, script), to a handle it
is given; it opens no file, reads no log, touches no network. The page has everything inline (CSS, JS, the data
as JSON) and loads nothing from anywhere, so it opens from disk.

What the page shows: the session summary (the `--json` object of `relay.inspect.summary`), a turns table, the
latency percentiles, errors, server tool calls (arguments, output, duration), saved WAVs (linked with paths
relative to the page, when the caller found them), the session recording (when the caller found it: two waveform
lanes, user and assistant, drawn from peaks embedded in the page, and a player linked by relative path that seeks
to where a lane is clicked), and a zoomable timeline with one lane per direction (client, server, relay) where
every record is a mark; hovering a mark names it, clicking shows its full record. Turns are bands above the lanes; the
speech-end -> first-audio latency of each turn is a bracket labelled with its milliseconds.

Records are streamed into the page one by one (never held in a list here), so a long session costs the
writer no memory; the browser gets them all.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

from relay.core import events as ev
from relay.inspect.formats import LATENCY_LABELS, NOT_ENDED, events_text, fmt_ms, fmt_s, tool_arguments, turn_status, turns_text
from relay.inspect.reader import LogRecord
from relay.inspect.timeline_page import CSS, JS, LANES_END, RECORDING_LANES, RECORDING_PLAYER, TIMELINE_HTML, TIMELINE_START

# Inside <script type="application/json"> only "</script" could end the element early; escaping <, > and &
# as JSON unicode escapes keeps the text valid JSON and inert HTML.
_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


# Which marks the page draws small (audio chunks) or red (errors); handed to the script so no type string is
# spelled out twice.
_TYPE_CLASSES = {
    "audio": sorted(ev.AUDIO_PAYLOAD_FIELD),
    "errors": [ev.ERROR, ev.RELAY_RETRIEVE_FAILED, ev.RELAY_CLIENT_ERROR],
}


def _json_for_script(value: Any) -> str:
    return orjson.dumps(value).decode().translate(_JSON_ESCAPES)


def write_timeline(
    out: TextIO,
    session: dict[str, Any],
    records: Iterable[LogRecord],
    wav_links: dict[str, str],
    recording: dict[str, Any] | None = None,
) -> None:
    """Write the page for `session` (a summary dict) with every record of `records` as a timeline mark.

    `wav_links` maps item ids to WAV paths relative to the page; only those are linked. `recording` is the
    session recording's `link` (relative to the page) and its peaks (`relay.recording.peaks`), or None.
    """
    title = f"Session {session['session_id']} — realtime-relay logs"
    out.write("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
    out.write('<meta name="viewport" content="width=device-width, initial-scale=1">\n')
    # No network, ever: the policy forbids every fetch; only inline code, and media from local files.
    out.write(
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; media-src file: 'self'\">\n"
    )
    out.write(f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n")
    out.write(_summary_html(session, wav_links))
    if recording is None:
        out.write(TIMELINE_HTML)
    else:
        player = RECORDING_PLAYER.format(src=html.escape(str(recording["link"])))
        out.write(
            TIMELINE_HTML.replace(TIMELINE_START, player + TIMELINE_START).replace(
                LANES_END, RECORDING_LANES + LANES_END
            )
        )
        out.write('<script type="application/json" id="recording-data">')
        out.write(_json_for_script({k: v for k, v in recording.items() if k != "link"}))
        out.write("</script>\n")
    out.write('<script type="application/json" id="session-data">')
    out.write(_json_for_script(session))
    out.write('</script>\n<script type="application/json" id="wav-data">')
    out.write(_json_for_script(wav_links))
    out.write('</script>\n<script type="application/json" id="type-data">')
    out.write(_json_for_script(_TYPE_CLASSES))
    out.write('</script>\n<script type="application/json" id="records-data">[')
    for i, record in enumerate(records):
        if i:
            out.write(",\n")
        out.write(_json_for_script(record.raw))
    out.write("]</script>\n")
    out.write(f"<script>{JS}</script>\n</body>\n</html>\n")


def _esc(value: object) -> str:
    return html.escape("-" if value is None else str(value))


def _summary_html(s: dict[str, Any], wav_links: dict[str, str]) -> str:
    parts: list[str] = [f"<header><h1>Session <code>{_esc(s['session_id'])}</code></h1>"]
    ended = (
        f"{_esc(s['end_reason'])} (client close {_esc(s['client_close_code'])}, "
        f"upstream close {_esc(s['upstream_close_code'])})"
        if s["ended"]
        else f"<span class=warn>{NOT_ENDED}</span>"
    )
    facts = [
        ("Started", _esc(s["started_at"])),
        ("Duration", fmt_s(s["duration_s"])),
        ("End", ended),
        ("Upstream", f"{_esc(s['upstream_url'])} (session {_esc(s['upstream_session_id'])}, "
                     f"connect {fmt_ms(s['connect_ms'])})"),
        ("Events", events_text(s)),
        ("Audio", f"in {fmt_s(s['audio_s']['in'])}, out {fmt_s(s['audio_s']['out'])}"),
        ("Turns", turns_text(s)),
        ("Errors", str(s["error_count"])),
    ]
    parts.append('<dl class="facts">')
    parts.extend(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    parts.append("</dl></header>\n")

    parts.append('<section><h2>Latency</h2><table class="latency"><tr><th></th><th>n</th><th>p50</th>'
                 "<th>p95</th><th>max</th></tr>")
    for key, label in LATENCY_LABELS.items():
        lat = s["latency_ms"][key]
        parts.append(f"<tr><td>{label}</td><td>{lat['count']}</td><td>{fmt_ms(lat['p50'])}</td>"
                     f"<td>{fmt_ms(lat['p95'])}</td><td>{fmt_ms(lat['max'])}</td></tr>")
    parts.append("</table></section>\n")

    def item_link(item_id: str) -> str:
        link = wav_links.get(item_id)
        if link is None:
            return _esc(item_id)
        return f'<a class="wav" href="{html.escape(link)}">{_esc(item_id)} ♪</a>'

    if s["turns"]:
        parts.append('<section><h2>Turns</h2><table class="turns"><tr><th>#</th><th>user</th><th>said</th>'
                     "<th>response</th><th>status</th><th>assistant</th><th>speech→audio</th>"
                     "<th>request→done</th><th>audio out</th></tr>")
        for t in s["turns"]:
            status = _esc(turn_status(t))
            if t["barge_in"]:
                status += ' <span class="warn">barge-in</span>'
            parts.append(
                f'<tr data-turn="{t["index"]}"><td>{t["index"]}</td>'
                f"<td>{', '.join(item_link(i) for i in t['user_item_ids']) or '-'}</td>"
                f"<td class=text>{_esc(t['user_transcript'] or '')}</td><td>{_esc(t['response_id'])}</td>"
                f"<td>{status}</td>"
                f"<td>{', '.join(item_link(i) for i in t['assistant_item_ids']) or '-'}"
                f"<div class=said>{_esc(t['assistant_text'] or '')}</div></td>"
                f"<td>{fmt_ms(t['speech_to_first_audio_ms'])}</td><td>{fmt_ms(t['request_to_done_ms'])}</td>"
                f"<td>{fmt_s(t['audio_out_s'])}</td></tr>"
            )
        parts.append("</table></section>\n")

    if s["errors"]:
        parts.append('<section><h2>Errors</h2><table class="errors"><tr><th>t</th><th>kind</th><th>code</th>'
                     "<th>message</th><th>event / item</th></tr>")
        for e in s["errors"]:
            parts.append(f"<tr><td>{e['t_ms'] / 1000:.3f} s</td><td>{_esc(e['kind'])}</td>"
                         f"<td>{_esc(e['code'])}</td><td>{_esc(e['message'] or '')}</td>"
                         f"<td>{_esc(e['event_id'] or e['item_id'] or '')}</td></tr>")
        parts.append("</table></section>\n")

    if s.get("tool_calls"):
        # Server-side tools (docs/tools.md): each call with what it was given, what it answered, how long it took.
        parts.append('<section><h2>Server tool calls</h2><table class="tools"><tr><th>t</th><th>tool</th>'
                     "<th>result</th><th>duration</th><th>arguments</th><th>output</th></tr>")
        for c in s["tool_calls"]:
            arguments = tool_arguments(c)
            result = _esc(c["result"])
            if c["result"] != "ok":
                result = f'<span class="warn">{result}</span>'
            parts.append(f'<tr data-call="{_esc(c["call_id"])}"><td>{c["t_ms"] / 1000:.3f} s</td>'
                         f"<td>{_esc(c['name'])}</td><td>{result}</td><td>{fmt_ms(c['duration_ms'])}</td>"
                         f"<td><code>{_esc(arguments)}</code></td><td><code>{_esc(c['output'])}</code></td></tr>")
        parts.append("</table></section>\n")

    if s["audio_saved"]:
        parts.append('<section><h2>Saved audio</h2><table class="saved"><tr><th>item</th><th>source</th>'
                     "<th>duration</th><th>rate</th><th></th></tr>")
        for a in s["audio_saved"]:
            item_id = str(a.get("item_id"))
            cells = (f"<td>{_esc(a.get('source'))}</td><td>{_esc(a.get('duration_ms'))} ms</td>"
                     f"<td>{_esc(a.get('rate'))} Hz</td>")
            link = wav_links.get(item_id)
            if link is None:
                parts.append(f"<tr><td>{_esc(item_id)}</td>{cells}<td class=dim>{_esc(a.get('path'))} "
                             "not found next to this page</td></tr>")
            else:
                href = html.escape(link)
                parts.append(f'<tr><td><a class="wav" href="{href}">{_esc(item_id)}.wav</a></td>{cells}'
                             f'<td><audio controls preload="none" src="{href}"></audio></td></tr>')
        parts.append("</table></section>\n")
    return "".join(parts)

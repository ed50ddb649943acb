"""How a session summary's numbers and labels read, the same in every rendering of it.

Boundary: pure functions of summary values (the `--json` dict of `relay.inspect.summary`) to short text, shared
by the terminal table (`relay.cli.logs`) and the HTML page (`relay.inspect.timeline`). No escaping, colour or
layout: each renderer applies its own.
"""

from __future__ import annotations

from typing import Any

import orjson

# The summary's latency keys, in the order they are shown, with the words that name them.
LATENCY_LABELS = {
    "speech_to_first_audio": "speech end → first audio",
    "request_to_done": "commit/create → done",
    "retrieve_round_trip": "retrieve round-trip",
}


# What a session without relay.session_ended shows instead of how it ended.
NOT_ENDED = "no relay.session_ended (still running, or the log was cut)"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def events_text(session: dict[str, Any]) -> str:
    """The session's record counts: the total, then per direction."""
    ev = session["events"]
    return f"{ev['total']}: client {ev['client']}, server {ev['server']}, relay {ev['relay']}"


def turns_text(session: dict[str, Any]) -> str:
    """The session's turn count and how many of them the user barged in on."""
    return f"{session['turn_count']} ({session['barge_in_count']} barge-in)"


def turn_status(turn: dict[str, Any]) -> str:
    """A turn's response status; "unfinished" for a response without response.done, "-" for no response."""
    return str(turn["status"] or ("-" if turn["response_id"] is None else "unfinished"))


def tool_arguments(call: dict[str, Any]) -> str:
    """A tool call's arguments as text: the string the model sent, or any other JSON value encoded."""
    arguments = call["arguments"]
    return arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()

"""Summarize each session of the event logs (docs/event-log.md): turns, latencies, errors, audio, log health.

Boundary: `summarize` reads logs through `relay.inspect.reader` and feeds every record of a session to one
`SessionAnalyzer`, which keeps the session's own facts (start, upstream, end, event counts, log health) and hands
the record to the folds of the parts it summarizes: `relay.inspect.turns` (turns and their latencies) and
`relay.inspect.ledger` (errors, retrieves, tool calls, saved audio, log gaps). It writes nothing and prints
nothing: rendering lives in `relay.inspect.terminal` (table), `relay.inspect.timeline` (HTML) and
`relay.cli.logs` (JSON lines).

Records are fed one at a time and then dropped, so memory grows with the number of sessions, turns and items,
never with the size of the logs. The definitions of a turn and of each latency are in the docstrings of
`relay.inspect.turns` and `relay.inspect.ledger`; percentiles use the nearest-rank method on the samples of one
session (`relay.inspect.fields.percentiles`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.core import events as ev
from relay.inspect.fields import as_num, as_str, percentiles
from relay.inspect.ledger import SessionLedger
from relay.inspect.reader import (
    DIRECTIONS,
    LogRecord,
    ReadWarnings,
    SeqFilter,
    find_log_files,
    group_files_by_session,
    read_merged,
    select_files,
    shown_name,
)
from relay.inspect.turns import TurnTracker


class SessionAnalyzer:
    """Folds the records of one session, in seq order, into a summary. Pure: records in, a dict out."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.files: list[str] = []
        self.seq = SeqFilter()
        self.first_ts: str | None = None
        self.last_ts: str | None = None
        self.last_t_ms: float | None = None
        self.started: dict[str, Any] = {}
        self.connected: dict[str, Any] = {}
        self.ended: dict[str, Any] | None = None
        self.by_dir: Counter[str] = Counter()
        self.by_type: dict[str, Counter[str]] = {d: Counter() for d in DIRECTIONS}
        self.turns = TurnTracker()
        self.ledger = SessionLedger()

    # -- feeding -------------------------------------------------------------------------------------------

    def feed(self, record: LogRecord) -> bool:
        """Take one record; False when it was dropped as a duplicate seq."""
        if record.file not in self.files:
            self.files.append(record.file)
        if not self.seq.accept(record):
            return False
        if self.first_ts is None:
            self.first_ts = record.ts
        self.last_ts = record.ts or self.last_ts
        self.last_t_ms = record.t_ms if self.last_t_ms is None else max(self.last_t_ms, record.t_ms)
        self.by_dir[record.dir] += 1
        self.by_type[record.dir][record.type] += 1
        key = (record.dir, record.type)
        for part in (self, self.turns, self.ledger):
            handler = part.HANDLERS.get(key)
            if handler is not None:
                handler(part, record)
        return True

    def _on_session_started(self, r: LogRecord) -> None:
        self.started = r.event

    def _on_upstream_connected(self, r: LogRecord) -> None:
        self.connected = r.event

    def _on_session_ended(self, r: LogRecord) -> None:
        self.ended = r.event

    HANDLERS: dict[tuple[str, str], Any] = {
        ("relay", ev.RELAY_SESSION_STARTED): _on_session_started,
        ("relay", ev.RELAY_UPSTREAM_CONNECTED): _on_upstream_connected,
        ("relay", ev.RELAY_SESSION_ENDED): _on_session_ended,
    }

    # -- result --------------------------------------------------------------------------------------------

    def summary(self, warnings: ReadWarnings | None = None) -> dict[str, Any]:
        """The session as a JSON-ready dict; field names are the documented `--json` format."""
        turns = self.turns.all_turns()
        ended = self.ended or {}
        statuses = Counter(t.status or "unfinished" for t in turns if t.response_id is not None)
        speech = [x for t in turns if (x := t.speech_to_first_audio_ms) is not None]
        request = [x for t in turns if (x := t.request_to_done_ms) is not None]
        round_trips = [x for r in self.ledger.retrieves if (x := r.round_trip_ms) is not None]
        warning_count, warning_samples = warnings.for_files(self.files) if warnings else (0, [])
        duration = None
        if self.last_t_ms is not None:
            # t_ms counts from session start, so the last record's t_ms is the session's length.
            duration = round(self.last_t_ms / 1000, 3)
        return {
            "session_id": self.session_id,
            "files": [shown_name(f) for f in self.files],  # for output; the real names stay in `self.files`
            "started_at": self.first_ts,
            "ended_at": self.last_ts,
            "duration_s": duration,
            "upstream_url": as_str(self.started.get("upstream_url")),
            "client_model": as_str(self.started.get("client_model")),
            "upstream_session_id": as_str(self.connected.get("upstream_session_id")),
            "connect_ms": as_num(self.connected.get("connect_ms")),
            "ended": self.ended is not None,
            "end_reason": as_str(ended.get("reason")),
            "client_close_code": ended.get("client_close_code"),
            "upstream_close_code": ended.get("upstream_close_code"),
            "events": {"total": sum(self.by_dir.values())} | {d: self.by_dir.get(d, 0) for d in DIRECTIONS},
            "event_types": {d: dict(sorted(self.by_type[d].items())) for d in DIRECTIONS},
            "turn_count": len(turns),
            "barge_in_count": sum(1 for t in turns if t.barge_in),
            "responses": {"total": sum(statuses.values()), "by_status": dict(sorted(statuses.items()))},
            "turns": [self.turns.turn_json(t) for t in turns],
            "latency_ms": {
                "speech_to_first_audio": percentiles(speech),
                "request_to_done": percentiles(request),
                "retrieve_round_trip": percentiles(round_trips),
            },
            "audio_s": {"in": round(self.turns.audio_in_ms / 1000, 3), "out": round(self.turns.audio_out_ms / 1000, 3)},
            "error_count": len(self.ledger.errors),
            "errors": list(self.ledger.errors),
            "retrieves": self.ledger.retrieves_json(),
            "audio_saved": list(self.ledger.audio_saved),
            "tool_calls": list(self.ledger.tool_calls),
            "log": {
                "gaps": list(self.ledger.gaps),
                "dropped": ended.get("log_dropped"),
                "missing_seq": self.seq.unexplained_missing,
                "duplicate_seq": self.seq.duplicates,
                "warning_count": warning_count,
                "warnings": [w.to_json() for w in warning_samples],
            },
        }


@dataclass
class LogSummary:
    """Everything one read produced: per-session summaries (by start time) and the read warnings."""

    sessions: list[dict[str, Any]]
    warnings: ReadWarnings
    # session_id -> the files its records came from (the HTML renderer reads them again).
    files_by_session: dict[str, list[Path]]
    # Every log file found under the path, read or not (`--html` must never write over one of them).
    log_files: list[Path]


def summarize(path: Path, session_id: str | None = None) -> LogSummary:
    """Read every log under `path` (optionally one session only) and summarize each session.

    Raises LogPathError when `path` is missing or not a file or folder, LogAccessError when it cannot be read.
    """
    warnings = ReadWarnings()
    log_files = find_log_files(path, warnings)
    files = select_files(log_files, session_id)
    analyzers: dict[str, SessionAnalyzer] = {}
    for group in group_files_by_session(files).values():
        for record in read_merged(group, warnings, session_id):
            analyzer = analyzers.get(record.session_id)
            if analyzer is None:
                analyzer = analyzers[record.session_id] = SessionAnalyzer(record.session_id)
            analyzer.feed(record)
    ordered = sorted(analyzers.values(), key=lambda a: (a.first_ts or "", a.session_id))
    return LogSummary(
        sessions=[a.summary(warnings) for a in ordered],
        warnings=warnings,
        files_by_session={a.session_id: [Path(f) for f in a.files] for a in ordered},
        log_files=log_files,
    )

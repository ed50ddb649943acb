"""Read C6 event logs as a stream and summarize each session: turns, latencies, errors, audio, log health.

Boundary: this module reads log files (opens, iterates lines, closes) and does nothing else: no writing,
no printing, no clock, no network. Rendering (terminal table, JSON lines, HTML) lives in
`relay.cli.logs` and `relay.inspect.timeline`.

Streaming: files are read line by line and every record is fed to a small per-session `SessionAnalyzer`
and then dropped, so memory grows with the number of sessions, turns and items, never with the size of
the logs. Nothing here loads a whole file or directory.

Bad input never raises: a truncated last line (a writer killed mid-write), a line that is not JSON, a JSON
value that is not a C6 record, a record with an unknown schema version `v`, an empty or unreadable file are
each skipped and counted in a `ReadWarnings`. Only a missing path raises (`LogPathError`), which the CLI
turns into exit code 2.

Definitions used by the summary (documented for the README):
- A *turn* is one response together with the user items committed since the previous response (server
  `input_audio_buffer.committed` or a user-role `conversation.item.added`/`.created`); user items that
  never got a response form a turn of their own with no response.
- *speech_to_first_audio*: t_ms of the first `response.output_audio.delta` of a response minus t_ms of
  the latest server `input_audio_buffer.speech_stopped` before that response was created.
- *request_to_done*: t_ms of `response.done` minus t_ms of the latest client `response.create` before the
  response was created, or, when the client did not ask for it (server VAD), of the latest client
  `input_audio_buffer.commit` since the previous response.
- *retrieve_round_trip*: a relay `conversation.item.retrieve` to the relay-dir `conversation.item.retrieved`
  (matched by `item.id`) or `error` (matched by `error.event_id`) that answers it.
- Percentiles use the nearest-rank method on the samples of one session (p50 of [1, 2, 3, 4] is 2).
"""

from __future__ import annotations

import heapq
import math
import os
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from relay.core import events as ev

SCHEMA_VERSION = 1
DIRECTIONS: tuple[str, ...] = ("client", "server", "relay")
LOG_FILE_SUFFIX = ".jsonl"
# The `type` shown for records the relay logged with type null (an upstream frame that was not JSON).
UNTYPED = "(no type)"
# At most this many warnings are kept verbatim (per file); the rest are only counted.
WARNING_SAMPLES_PER_FILE = 20
# Transcripts and assistant text are kept for the summary up to this many characters per turn.
TEXT_KEEP_CHARS = 300


class LogPathError(Exception):
    """The path given to the reader does not exist or cannot be listed."""


@dataclass(frozen=True, slots=True)
class ReadWarning:
    """One skipped piece of input: which file, which line (None for the whole file), and why."""

    file: str
    line: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


@dataclass
class ReadWarnings:
    """Counts every skipped line or file; keeps the first few per file as samples."""

    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_file: Counter[str] = field(default_factory=Counter)
    samples: list[ReadWarning] = field(default_factory=list)

    def add(self, file: str, line: int | None, reason: str) -> None:
        self.total += 1
        # The reason's first word group (before ':') is the category, so counts stay readable.
        self.by_reason[reason.split(":", 1)[0]] += 1
        self.by_file[file] += 1
        if self.by_file[file] <= WARNING_SAMPLES_PER_FILE:
            self.samples.append(ReadWarning(file, line, reason))

    def for_files(self, files: Iterable[str]) -> tuple[int, list[ReadWarning]]:
        """The warning count and samples that belong to the given files."""
        wanted = set(files)
        count = sum(n for f, n in self.by_file.items() if f in wanted)
        return count, [w for w in self.samples if w.file in wanted]


@dataclass(slots=True)
class LogRecord:
    """One parsed C6 record. `raw` is the whole JSON object as read (the HTML timeline shows it)."""

    session_id: str
    seq: int | None
    t_ms: float
    ts: str | None
    dir: str
    type: str
    event: dict[str, Any]
    raw: dict[str, Any]
    file: str
    line: int
    # Merge key across several files of one session: the seq, or for a seq-less relay.log_gap the previous
    # record's seq plus a half, so a gap stays where the writer put it.
    order: float = 0.0


def find_log_files(path: Path) -> list[Path]:
    """The log files under `path`: the file itself, or every `*.jsonl` below a directory, in sorted order.

    Raises LogPathError when the path does not exist or is neither a file nor a directory.
    """
    if not path.exists():
        raise LogPathError(f"no such file or directory: {path}")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LogPathError(f"not a file or directory: {path}")
    found: list[Path] = []

    def fail(exc: OSError) -> None:
        raise LogPathError(f"cannot list {exc.filename}: {exc.strerror}")

    for root, dirs, names in os.walk(path, onerror=fail):
        dirs.sort()
        found.extend(Path(root) / n for n in sorted(names) if n.endswith(LOG_FILE_SUFFIX))
    return found


def _validate(obj: object) -> str | None:
    """Why `obj` is not a usable C6 record, or None when it is."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("v") != SCHEMA_VERSION:
        return f"unknown schema version: v={obj.get('v')!r}"
    session_id = obj.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        return "not a C6 record: no session_id"
    # The relay logs an upstream frame that is not JSON with type null; it is still a record.
    if not isinstance(obj.get("type"), str | None) or "type" not in obj:
        return "not a C6 record: no type"
    if obj.get("dir") not in DIRECTIONS:
        return f"not a C6 record: dir={obj.get('dir')!r}"
    t_ms = obj.get("t_ms")
    if isinstance(t_ms, bool) or not isinstance(t_ms, int | float) or not math.isfinite(t_ms):
        return "not a C6 record: no t_ms"
    seq = obj.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        return "not a C6 record: seq is not an integer"
    event = obj.get("event")
    if event is not None and not isinstance(event, dict):
        return "not a C6 record: event is not an object"
    return None


def read_file(
    path: Path, warnings: ReadWarnings, session_id: str | None = None
) -> Iterator[LogRecord]:
    """Yield the valid records of one file, in file order, counting everything skipped in `warnings`.

    With `session_id`, only that session's records are parsed: a line not containing the id's bytes is
    passed over without parsing (and without a warning, since it is not part of what was asked for).
    """
    name = str(path)
    needle = session_id.encode() if session_id is not None else None
    try:
        handle = path.open("rb")
    except OSError as exc:
        warnings.add(name, None, f"unreadable file: {exc.strerror}")
        return
    last_seq: dict[str, float] = {}
    any_line = False
    with handle:
        line_no = 0
        try:
            for line in handle:
                line_no += 1
                any_line = True
                if needle is not None and needle not in line:
                    continue
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    # Only the final line of a file can lack its newline: a writer killed mid-write.
                    truncated = not line.endswith(b"\n")
                    warnings.add(name, line_no, "truncated last line" if truncated else "not JSON")
                    continue
                problem = _validate(obj)
                if problem is not None:
                    warnings.add(name, line_no, problem)
                    continue
                if session_id is not None and obj["session_id"] != session_id:
                    continue
                seq = obj.get("seq")
                sid = obj["session_id"]
                order = float(seq) if seq is not None else last_seq.get(sid, 0.0) + 0.5
                last_seq[sid] = float(seq) if seq is not None else last_seq.get(sid, 0.0)
                event = obj.get("event")
                yield LogRecord(
                    session_id=sid,
                    seq=seq,
                    t_ms=float(obj["t_ms"]),
                    ts=obj["ts"] if isinstance(obj.get("ts"), str) else None,
                    dir=obj["dir"],
                    type=obj["type"] if obj["type"] is not None else UNTYPED,
                    event=event if isinstance(event, dict) else {},
                    raw=obj,
                    file=name,
                    line=line_no,
                    order=order,
                )
        except OSError as exc:
            warnings.add(name, line_no + 1, f"read error: {exc.strerror}")
    if not any_line:
        warnings.add(name, None, "empty file")


def group_files_by_session(files: Iterable[Path]) -> dict[str, list[Path]]:
    """Group files by their name (C6: `<session_id>.jsonl`), so several files of one session are merged."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        groups[f.name[: -len(LOG_FILE_SUFFIX)] if f.name.endswith(LOG_FILE_SUFFIX) else f.name].append(f)
    return groups


def read_merged(
    files: list[Path], warnings: ReadWarnings, session_id: str | None = None
) -> Iterator[LogRecord]:
    """Records of several files of one session merged in seq order (one file: its own order, no merge)."""
    if len(files) == 1:
        yield from read_file(files[0], warnings, session_id)
        return
    streams = [read_file(f, warnings, session_id) for f in files]
    yield from heapq.merge(*streams, key=lambda r: r.order)


def select_files(files: list[Path], session_id: str | None) -> list[Path]:
    """With a session filter, the files named after that session when there are any, else all files."""
    if session_id is None:
        return files
    named = [f for f in files if f.name == session_id + LOG_FILE_SUFFIX]
    return named or files


class SeqFilter:
    """Per session: drops records whose seq was already seen (duplicated files) and counts seqs never seen."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.duplicates = 0
        self.missing = 0
        self.gap_covered = 0

    def accept(self, record: LogRecord) -> bool:
        if record.seq is None:
            if record.type == ev.RELAY_LOG_GAP:
                lo, hi = record.event.get("from_seq"), record.event.get("to_seq")
                if isinstance(lo, int) and isinstance(hi, int) and hi >= lo:
                    self.gap_covered += hi - lo + 1
            return True
        if record.seq <= self.last_seq:
            self.duplicates += 1
            return False
        self.missing += record.seq - self.last_seq - 1
        self.last_seq = record.seq
        return True

    @property
    def unexplained_missing(self) -> int:
        """Seqs that never appeared and that no relay.log_gap accounts for (lost lines, a cut file)."""
        return max(0, self.missing - self.gap_covered)


def percentiles(samples: list[float]) -> dict[str, Any]:
    """count, p50, p95, max by nearest rank; None values when there are no samples."""
    if not samples:
        return {"count": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return _ms(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)])

    return {"count": len(ordered), "p50": rank(50), "p95": rank(95), "max": _ms(ordered[-1])}


def _ms(value: float) -> float:
    # t_ms differences carry float noise (1500.2 - 1000.1); microseconds are the log's own resolution.
    return round(value, 3)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _error_code(error: dict[str, Any]) -> str | None:
    return _str(error.get("code")) or _str(error.get("type"))


def _audio_ms(payload: object) -> float:
    """audio_ms of a C6 audio summary ({"audio_bytes", "audio_ms", "sha256"}), 0 when absent."""
    if isinstance(payload, dict):
        return _num(payload.get("audio_ms")) or 0.0
    return 0.0


@dataclass
class UserItem:
    item_id: str
    input: str | None = None  # "audio" | "text" | other content type
    speech_started_ms: float | None = None
    speech_stopped_ms: float | None = None
    committed_ms: float | None = None
    transcript: str | None = None


@dataclass
class Turn:
    """One response and the user items that led to it (see the module docstring)."""

    index: int
    user_item_ids: list[str]
    response_id: str | None = None
    stop_ms: float | None = None
    request_ms: float | None = None
    response_created_ms: float | None = None
    first_audio_ms: float | None = None
    response_done_ms: float | None = None
    status: str | None = None
    assistant_item_ids: list[str] = field(default_factory=list)
    audio_out_ms: float = 0.0
    assistant_text: str = ""
    barge_in: bool = False
    truncated_audio_end_ms: float | None = None

    @property
    def speech_to_first_audio_ms(self) -> float | None:
        if self.stop_ms is None or self.first_audio_ms is None:
            return None
        return _ms(self.first_audio_ms - self.stop_ms)

    @property
    def request_to_done_ms(self) -> float | None:
        if self.request_ms is None or self.response_done_ms is None:
            return None
        return _ms(self.response_done_ms - self.request_ms)


@dataclass
class Retrieve:
    item_id: str
    sent_ms: float
    answered_ms: float | None = None
    result: str = "pending"  # retrieved | error | timeout | session_closed | pending

    @property
    def round_trip_ms(self) -> float | None:
        return None if self.answered_ms is None else _ms(self.answered_ms - self.sent_ms)


class SessionAnalyzer:
    """Folds the records of one session, in seq order, into a summary. Pure: records in, a dict out."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.files: list[str] = []
        self.seq = SeqFilter()
        self.first_ts: str | None = None
        self.last_ts: str | None = None
        self.first_t_ms: float | None = None
        self.last_t_ms: float | None = None
        self.started: dict[str, Any] = {}
        self.connected: dict[str, Any] = {}
        self.ended: dict[str, Any] | None = None
        self.by_dir: Counter[str] = Counter()
        self.by_type: dict[str, Counter[str]] = {d: Counter() for d in DIRECTIONS}
        self.errors: list[dict[str, Any]] = []
        self.items: dict[str, UserItem] = {}
        self.pending_user_items: list[str] = []
        self.queued_user_items: set[str] = set()
        self.turns: list[Turn] = []
        self.turn_by_response: dict[str, Turn] = {}
        self.turn_by_assistant_item: dict[str, Turn] = {}
        self.active_responses: set[str] = set()
        self.last_stop_ms: float | None = None
        self.pending_create_ms: float | None = None
        self.pending_create_event_id: str | None = None
        self.pending_commit_ms: float | None = None
        self.audio_in_ms = 0.0
        self.audio_out_ms = 0.0
        self.retrieves: list[Retrieve] = []
        self.pending_retrieves: dict[str, deque[Retrieve]] = defaultdict(deque)
        self.audio_saved: list[dict[str, Any]] = []
        self.gaps: list[dict[str, Any]] = []
        self.barge_ins = 0
        self.tool_calls: list[dict[str, Any]] = []

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
        if self.first_t_ms is None:
            self.first_t_ms = record.t_ms
        self.last_t_ms = record.t_ms if self.last_t_ms is None else max(self.last_t_ms, record.t_ms)
        self.by_dir[record.dir] += 1
        self.by_type[record.dir][record.type] += 1
        handler = self._HANDLERS.get((record.dir, record.type)) or self._HANDLERS.get(("*", record.type))
        if handler is not None:
            handler(self, record)
        return True

    def _on_session_started(self, r: LogRecord) -> None:
        self.started = r.event

    def _on_upstream_connected(self, r: LogRecord) -> None:
        self.connected = r.event

    def _on_session_ended(self, r: LogRecord) -> None:
        self.ended = r.event

    def _on_log_gap(self, r: LogRecord) -> None:
        self.gaps.append(
            {k: r.event.get(k) for k in ("from_seq", "to_seq", "reason")} | {"t_ms": _ms(r.t_ms)}
        )

    def _on_audio_saved(self, r: LogRecord) -> None:
        keys = ("item_id", "path", "url", "duration_ms", "audio_bytes", "rate", "source")
        self.audio_saved.append({k: r.event.get(k) for k in keys} | {"t_ms": _ms(r.t_ms)})

    def _on_tool_call(self, r: LogRecord) -> None:
        """A server-side tool ran: what it was asked, what it answered, how long it took (docs/tools.md)."""
        output = r.event.get("output")
        if isinstance(output, str) and len(output) > TEXT_KEEP_CHARS:
            output = output[:TEXT_KEEP_CHARS] + "…"
        self.tool_calls.append(
            {
                "t_ms": _ms(r.t_ms),
                "name": _str(r.event.get("name")),
                "call_id": _str(r.event.get("call_id")),
                "result": _str(r.event.get("result")),
                "duration_ms": _num(r.event.get("duration_ms")),
                "arguments": r.event.get("arguments"),
                "output": output,
            }
        )

    def _on_retrieve_failed(self, r: LogRecord) -> None:
        item_id = _str(r.event.get("item_id"))
        reason = _str(r.event.get("reason")) or "error"
        error = r.event.get("error")
        message = None
        code = None
        if isinstance(error, dict):
            message = _str(error.get("message"))
            code = _str(error.get("code"))
        elif isinstance(error, str):
            message = error
        self._error(r, "retrieve_failed", code or reason, message, None, item_id)
        if item_id is not None:
            pending = self.pending_retrieves.get(item_id)
            if pending:
                retrieve = pending.popleft()
                retrieve.result = reason
                # A timeout or session end is not an answer: no round-trip sample for it.
                if reason == "error":
                    retrieve.answered_ms = r.t_ms
            else:
                # Already answered by a relay-dir error (counted there); record the reason it was given.
                for retrieve in reversed(self.retrieves):
                    if retrieve.item_id == item_id:
                        retrieve.result = reason
                        break

    def _error(
        self, r: LogRecord, kind: str, code: str | None, message: str | None, event_id: str | None,
        item_id: str | None = None,
    ) -> None:
        self.errors.append(
            {"t_ms": _ms(r.t_ms), "seq": r.seq, "kind": kind, "code": code, "message": message,
             "event_id": event_id, "item_id": item_id}
        )

    def _on_client_error(self, r: LogRecord) -> None:
        event = r.event
        self._error(r, "client_error", _str(event.get("code")), _str(event.get("message")),
                    _str(event.get("event_id")))

    def _on_server_error(self, r: LogRecord) -> None:
        error = r.event.get("error")
        error = error if isinstance(error, dict) else {}
        event_id = _str(error.get("event_id"))
        if event_id is not None and event_id == self.pending_create_event_id:
            # The response.create was refused: it must not be the request of the next response.
            self.pending_create_ms = None
            self.pending_create_event_id = None
        self._error(r, "server_error", _error_code(error), _str(error.get("message")), event_id)

    def _on_relay_error(self, r: LogRecord) -> None:
        # A relay-dir error is the upstream's answer to one of the relay's own frames (its retrieves).
        error = r.event.get("error")
        error = error if isinstance(error, dict) else {}
        event_id = _str(error.get("event_id")) or ""
        prefix = ev.RELAY_RETRIEVE_EVENT_ID_PREFIX
        if event_id.startswith(prefix):
            pending = self.pending_retrieves.get(event_id[len(prefix):])
            if pending:
                retrieve = pending.popleft()
                retrieve.answered_ms = r.t_ms
                retrieve.result = "error"
            return
        self._error(r, "relay_error", _error_code(error), _str(error.get("message")), event_id or None)

    def _on_relay_retrieve(self, r: LogRecord) -> None:
        item_id = _str(r.event.get("item_id")) or _str(r.raw.get("item_id"))
        if item_id is None:
            return
        retrieve = Retrieve(item_id=item_id, sent_ms=r.t_ms)
        self.retrieves.append(retrieve)
        self.pending_retrieves[item_id].append(retrieve)

    def _on_relay_retrieved(self, r: LogRecord) -> None:
        item = r.event.get("item")
        item_id = _str(item.get("id")) if isinstance(item, dict) else _str(r.raw.get("item_id"))
        pending = self.pending_retrieves.get(item_id or "")
        if pending:
            retrieve = pending.popleft()
            retrieve.answered_ms = r.t_ms
            retrieve.result = "retrieved"

    def _user_item(self, item_id: str) -> UserItem:
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = UserItem(item_id)
        return item

    def _add_pending_user_item(self, item_id: str) -> None:
        # committed and item.added both announce the same item: queue it once.
        if item_id not in self.queued_user_items:
            self.queued_user_items.add(item_id)
            self.pending_user_items.append(item_id)

    def _on_speech_started(self, r: LogRecord) -> None:
        item_id = _str(r.event.get("item_id"))
        if item_id is not None:
            self._user_item(item_id).speech_started_ms = r.t_ms
        # Speech while a response is still running is a barge-in on that response.
        for response_id in self.active_responses:
            turn = self.turn_by_response[response_id]
            if not turn.barge_in:
                turn.barge_in = True
                self.barge_ins += 1

    def _on_speech_stopped(self, r: LogRecord) -> None:
        item_id = _str(r.event.get("item_id"))
        if item_id is not None:
            self._user_item(item_id).speech_stopped_ms = r.t_ms
        self.last_stop_ms = r.t_ms

    def _on_committed(self, r: LogRecord) -> None:
        item_id = _str(r.event.get("item_id"))
        if item_id is None:
            return
        item = self._user_item(item_id)
        item.committed_ms = r.t_ms
        item.input = item.input or "audio"
        self._add_pending_user_item(item_id)

    def _on_item_added(self, r: LogRecord) -> None:
        item = r.event.get("item")
        if not isinstance(item, dict) or item.get("role") != "user":
            return
        item_id = _str(item.get("id"))
        if item_id is None:
            return
        user = self._user_item(item_id)
        content = item.get("content")
        if isinstance(content, list) and content and isinstance(content[0], dict):
            kind = _str(content[0].get("type")) or ""
            user.input = user.input or kind.removeprefix("input_")
            text = _str(content[0].get("text"))
            if text and user.transcript is None:
                user.transcript = text[:TEXT_KEEP_CHARS]
        self._add_pending_user_item(item_id)

    def _on_transcription(self, r: LogRecord) -> None:
        item_id = _str(r.event.get("item_id"))
        transcript = _str(r.event.get("transcript"))
        if item_id is not None and transcript is not None:
            self._user_item(item_id).transcript = transcript[:TEXT_KEEP_CHARS]

    def _on_client_append(self, r: LogRecord) -> None:
        self.audio_in_ms += _audio_ms(r.event.get("audio"))

    def _on_client_commit(self, r: LogRecord) -> None:
        self.pending_commit_ms = r.t_ms

    def _on_client_response_create(self, r: LogRecord) -> None:
        self.pending_create_ms = r.t_ms
        self.pending_create_event_id = _str(r.event.get("event_id"))

    def _on_client_truncate(self, r: LogRecord) -> None:
        item_id = _str(r.event.get("item_id"))
        turn = self.turn_by_assistant_item.get(item_id or "")
        if turn is not None:
            turn.truncated_audio_end_ms = _num(r.event.get("audio_end_ms"))
            if not turn.barge_in:
                turn.barge_in = True
                self.barge_ins += 1

    def _response_turn(self, response_id: str, t_ms: float) -> Turn:
        """The turn of a response, opening it (and taking the pending user items) on first sight."""
        turn = self.turn_by_response.get(response_id)
        if turn is not None:
            return turn
        turn = Turn(index=len(self.turns) + 1, user_item_ids=self.pending_user_items, response_id=response_id)
        self.pending_user_items = []
        turn.response_created_ms = t_ms
        turn.stop_ms = self.last_stop_ms
        self.last_stop_ms = None
        # A client response.create is the request; under server VAD the client's commit is.
        create, commit = self.pending_create_ms, self.pending_commit_ms
        turn.request_ms = create if create is not None else commit
        self.pending_create_ms = self.pending_commit_ms = None
        self.pending_create_event_id = None
        self.turns.append(turn)
        self.turn_by_response[response_id] = turn
        self.active_responses.add(response_id)
        return turn

    @staticmethod
    def _response_id(r: LogRecord) -> str | None:
        response = r.event.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            return str(response["id"])
        return _str(r.event.get("response_id")) or _str(r.raw.get("response_id"))

    def _on_response_created(self, r: LogRecord) -> None:
        response_id = self._response_id(r)
        if response_id is not None:
            self._response_turn(response_id, r.t_ms)

    def _note_assistant_item(self, turn: Turn, item_id: str | None) -> None:
        if item_id is not None and item_id not in turn.assistant_item_ids:
            turn.assistant_item_ids.append(item_id)
            self.turn_by_assistant_item[item_id] = turn

    def _on_output_item_added(self, r: LogRecord) -> None:
        response_id = self._response_id(r)
        item = r.event.get("item")
        if response_id is not None and isinstance(item, dict):
            self._note_assistant_item(self._response_turn(response_id, r.t_ms), _str(item.get("id")))

    def _on_audio_delta(self, r: LogRecord) -> None:
        audio_ms = _audio_ms(r.event.get("delta"))
        self.audio_out_ms += audio_ms
        response_id = self._response_id(r)
        if response_id is None:
            return
        turn = self._response_turn(response_id, r.t_ms)
        if turn.first_audio_ms is None:
            turn.first_audio_ms = r.t_ms
        turn.audio_out_ms += audio_ms
        self._note_assistant_item(turn, _str(r.event.get("item_id")))

    def _on_text_delta(self, r: LogRecord) -> None:
        response_id = self._response_id(r)
        delta = _str(r.event.get("delta"))
        if response_id is None or delta is None:
            return
        turn = self._response_turn(response_id, r.t_ms)
        if len(turn.assistant_text) < TEXT_KEEP_CHARS:
            turn.assistant_text = (turn.assistant_text + delta)[:TEXT_KEEP_CHARS]

    def _on_response_done(self, r: LogRecord) -> None:
        response_id = self._response_id(r)
        if response_id is None:
            return
        turn = self._response_turn(response_id, r.t_ms)
        turn.response_done_ms = r.t_ms
        response = r.event.get("response")
        if isinstance(response, dict):
            turn.status = _str(response.get("status"))
        self.active_responses.discard(response_id)

    _HANDLERS: dict[tuple[str, str], Any] = {
        ("relay", ev.RELAY_SESSION_STARTED): _on_session_started,
        ("relay", ev.RELAY_UPSTREAM_CONNECTED): _on_upstream_connected,
        ("relay", ev.RELAY_SESSION_ENDED): _on_session_ended,
        ("relay", ev.RELAY_LOG_GAP): _on_log_gap,
        ("relay", ev.RELAY_AUDIO_SAVED): _on_audio_saved,
        ("relay", ev.RELAY_RETRIEVE_FAILED): _on_retrieve_failed,
        ("relay", ev.RELAY_TOOL_CALL): _on_tool_call,
        ("relay", ev.RELAY_CLIENT_ERROR): _on_client_error,
        ("relay", ev.CONVERSATION_ITEM_RETRIEVE): _on_relay_retrieve,
        ("relay", ev.CONVERSATION_ITEM_RETRIEVED): _on_relay_retrieved,
        ("relay", ev.ERROR): _on_relay_error,
        ("server", ev.ERROR): _on_server_error,
        ("server", ev.INPUT_AUDIO_BUFFER_SPEECH_STARTED): _on_speech_started,
        ("server", ev.INPUT_AUDIO_BUFFER_SPEECH_STOPPED): _on_speech_stopped,
        ("server", ev.INPUT_AUDIO_BUFFER_COMMITTED): _on_committed,
        ("server", ev.CONVERSATION_ITEM_ADDED): _on_item_added,
        ("server", ev.CONVERSATION_ITEM_CREATED): _on_item_added,
        ("server", ev.INPUT_AUDIO_TRANSCRIPTION_COMPLETED): _on_transcription,
        ("server", ev.RESPONSE_CREATED): _on_response_created,
        ("server", ev.RESPONSE_OUTPUT_ITEM_ADDED): _on_output_item_added,
        ("server", ev.RESPONSE_OUTPUT_AUDIO_DELTA): _on_audio_delta,
        ("server", ev.RESPONSE_OUTPUT_TEXT_DELTA): _on_text_delta,
        ("server", ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA): _on_text_delta,
        ("server", ev.RESPONSE_DONE): _on_response_done,
        ("client", ev.INPUT_AUDIO_BUFFER_APPEND): _on_client_append,
        ("client", ev.INPUT_AUDIO_BUFFER_COMMIT): _on_client_commit,
        ("client", ev.RESPONSE_CREATE): _on_client_response_create,
        ("client", ev.CONVERSATION_ITEM_TRUNCATE): _on_client_truncate,
    }

    # -- result --------------------------------------------------------------------------------------------

    def _all_turns(self) -> list[Turn]:
        turns = list(self.turns)
        if self.pending_user_items:
            turns.append(Turn(index=len(turns) + 1, user_item_ids=list(self.pending_user_items)))
        return turns

    def _turn_json(self, turn: Turn) -> dict[str, Any]:
        users = [self.items[i] for i in turn.user_item_ids if i in self.items]
        first_user = users[0] if users else None
        transcripts = [u.transcript for u in users if u.transcript]

        def t(value: float | None) -> float | None:
            return None if value is None else _ms(value)

        return {
            "index": turn.index,
            "user_item_ids": list(turn.user_item_ids),
            "input": first_user.input if first_user else None,
            "user_transcript": " ".join(transcripts) if transcripts else None,
            "speech_started_ms": t(first_user.speech_started_ms) if first_user else None,
            "speech_stopped_ms": t(turn.stop_ms),
            "request_ms": t(turn.request_ms),
            "response_id": turn.response_id,
            "response_created_ms": t(turn.response_created_ms),
            "first_audio_ms": t(turn.first_audio_ms),
            "response_done_ms": t(turn.response_done_ms),
            "status": turn.status,
            "assistant_item_ids": list(turn.assistant_item_ids),
            "assistant_text": turn.assistant_text or None,
            "audio_out_s": round(turn.audio_out_ms / 1000, 3),
            "barge_in": turn.barge_in,
            "truncated_audio_end_ms": turn.truncated_audio_end_ms,
            "speech_to_first_audio_ms": turn.speech_to_first_audio_ms,
            "request_to_done_ms": turn.request_to_done_ms,
        }

    def summary(self, warnings: ReadWarnings | None = None) -> dict[str, Any]:
        """The session as a JSON-ready dict; field names are the documented `--json` format."""
        turns = self._all_turns()
        ended = self.ended or {}
        statuses = Counter(t.status or "unfinished" for t in turns if t.response_id is not None)
        speech = [x for t in turns if (x := t.speech_to_first_audio_ms) is not None]
        request = [x for t in turns if (x := t.request_to_done_ms) is not None]
        round_trips = [x for r in self.retrieves if (x := r.round_trip_ms) is not None]
        warning_count, warning_samples = warnings.for_files(self.files) if warnings else (0, [])
        duration = None
        if self.last_t_ms is not None:
            # t_ms counts from session start, so the last record's t_ms is the session's length.
            duration = round(self.last_t_ms / 1000, 3)
        retrieve_results = Counter(r.result for r in self.retrieves)
        return {
            "session_id": self.session_id,
            "files": list(self.files),
            "started_at": self.first_ts,
            "ended_at": self.last_ts,
            "duration_s": duration,
            "upstream_url": _str(self.started.get("upstream_url")),
            "client_model": _str(self.started.get("client_model")),
            "upstream_session_id": _str(self.connected.get("upstream_session_id")),
            "connect_ms": _num(self.connected.get("connect_ms")),
            "ended": self.ended is not None,
            "end_reason": _str(ended.get("reason")),
            "client_close_code": ended.get("client_close_code"),
            "upstream_close_code": ended.get("upstream_close_code"),
            "events": {"total": sum(self.by_dir.values())} | {d: self.by_dir.get(d, 0) for d in DIRECTIONS},
            "event_types": {d: dict(sorted(self.by_type[d].items())) for d in DIRECTIONS},
            "turn_count": len(turns),
            "barge_in_count": sum(1 for t in turns if t.barge_in),
            "responses": {"total": sum(statuses.values()), "by_status": dict(sorted(statuses.items()))},
            "turns": [self._turn_json(t) for t in turns],
            "latency_ms": {
                "speech_to_first_audio": percentiles(speech),
                "request_to_done": percentiles(request),
                "retrieve_round_trip": percentiles(round_trips),
            },
            "audio_s": {"in": round(self.audio_in_ms / 1000, 3), "out": round(self.audio_out_ms / 1000, 3)},
            "error_count": len(self.errors),
            "errors": list(self.errors),
            "retrieves": {
                "total": len(self.retrieves),
                "by_result": dict(sorted(retrieve_results.items())),
                "items": [
                    {"item_id": r.item_id, "sent_ms": _ms(r.sent_ms), "result": r.result,
                     "round_trip_ms": r.round_trip_ms}
                    for r in self.retrieves
                ],
            },
            "audio_saved": list(self.audio_saved),
            "tool_calls": list(self.tool_calls),
            "log": {
                "gaps": list(self.gaps),
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


def summarize(path: Path, session_id: str | None = None) -> LogSummary:
    """Read every log under `path` (optionally one session only) and summarize each session.

    Raises LogPathError when `path` is missing.
    """
    warnings = ReadWarnings()
    files = select_files(find_log_files(path), session_id)
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
    )


def session_records(files: list[Path], session_id: str) -> Iterator[LogRecord]:
    """One session's records again, merged and de-duplicated the way `summarize` saw them (for the HTML)."""
    seq = SeqFilter()
    for record in read_merged(files, ReadWarnings(), session_id):
        if seq.accept(record):
            yield record

"""One session's side of the event log, on the event loop: seqs, stamps, the bounds and the gaps they leave.

Boundary: `SessionEventLog` takes the records of what the bridge carried out (`extend`, one flush at a time; `append`
for one record), numbers and stamps them, has the record builder (`relay/eventlog/records.py`) encode them, checks
them against `max_session_log_bytes` and the writer's queue bound, and keeps the bytes until the writer's hand-over
takes them (`relay/eventlog/writer.py`, which owns the queue, the writer thread and the files, and reports lost
writes back here as gaps owed). No I/O here; the items it queues (`QueuedRecords`, `QueuedGap`, `QueuedClose`) are
the writer's input. Records over a bound are counted and declared by a `relay.log_gap` line (docs/event-log.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

import msgspec
import structlog

from relay.core import events as ev
from relay.core.outbox import LogEntry
from relay.eventlog.records import RecordBuilder, summarize_event
from relay.redact import redact_data

log = structlog.get_logger()


class QueuedRecords(NamedTuple):
    """Encoded lines of one session, joined: `n_records` records with seqs from `first_seq` to `last_seq`, or
    (`gap_reason` set, `n_records` 0) one `relay.log_gap` line declaring `first_seq`..`last_seq`."""

    log: SessionEventLog
    first_seq: int
    last_seq: int
    n_records: int
    blob: bytes
    gap_reason: str | None = None


@dataclass
class QueuedGap:
    log: SessionEventLog
    from_seq: int
    to_seq: int
    reason: str


@dataclass
class QueuedClose:
    log: SessionEventLog
    done: concurrent.futures.Future[None]


class LogOwner(Protocol):
    """What a session's log shares with the process-wide writer that owns it (`relay.eventlog.writer.EventLog`): the
    options, the queue and its byte count (the loop adds, the writer thread takes away), the process's drop count."""

    enabled: bool
    records: RecordBuilder
    max_session_bytes: int
    max_queue_bytes: int
    queue: deque[QueuedRecords | QueuedGap | QueuedClose]
    enqueued_bytes: int  # the loop's half of `queued_bytes`: what it counted into the queue
    dropped_enqueue: int

    @property
    def queued_bytes(self) -> int: ...

    def mark_dirty(self, session_log: SessionEventLog) -> None: ...

    def enqueue_control(self, item: QueuedGap | QueuedClose) -> None: ...


@dataclass(eq=False)
class SessionEventLog:
    """One session's log. `extend` (a flush's records) and `append` (one) are called on the event loop, in forwarding
    order."""

    owner: LogOwner
    session_id: str
    started_wall: float
    started_mono: float
    next_seq: int = 1
    enqueue_dropped: int = 0  # touched by the loop thread only
    write_dropped: int = 0  # touched by the writer thread only
    _drop_start: int | None = None
    _drop_end: int | None = None
    # Gaps lost writes left, (from_seq, to_seq, reason) in seq order, declared at the next write that works
    # (writer thread only).
    write_gaps: list[tuple[int, int, str]] = field(default_factory=list, repr=False)
    _closed: bool = False
    logged_bytes: int = 0  # encoded bytes accepted for this session (loop thread)
    _size_gap: tuple[int, int] | None = None  # seqs dropped past max_session_bytes, declared once
    _close_future: concurrent.futures.Future[None] | None = field(default=None, repr=False)
    # Records encoded and counted as queued, not handed to the writer yet (`EventLog.hand_over`): blobs of one or
    # more lines, their first and last seqs and how many records they hold.
    _lines: list[bytes] = field(default_factory=list, repr=False)
    _lines_first: int = 0
    _lines_last: int = 0
    _lines_records: int = 0

    def path(self, log_dir: Path) -> Path:
        day = datetime.fromtimestamp(self.started_wall, UTC).strftime("%Y-%m-%d")
        return log_dir / day / f"{self.session_id}.jsonl"

    def extend(self, entries: list[LogEntry]) -> None:
        """The records of what one flush carried out, in order, stamped with one time (the flush's: its frames were
        written together). A run of flat audio records (a burst of frames) is built in one native call and queued as
        one blob when all of it fits the bounds; any other record, and a run that would cross a bound or wait behind
        a gap, takes `append`'s path one record at a time, so limits and gaps fall on the same seqs either way."""
        wall = time.time()
        t_ms = (time.monotonic() - self.started_mono) * 1000.0
        owner = self.owner
        runs = owner.enabled and not self._closed
        index = 0
        while index < len(entries):
            if runs:
                try:
                    blob, count = owner.records.audio_run(self.session_id, self.next_seq, wall, t_ms, entries, index)
                except Exception:  # what the run cannot encode, the record-by-record path declares, record by record
                    blob, count, runs = b"", 0, False
                if count:
                    if self._queue_run(blob, count):
                        index += count
                        continue
                    runs = False  # near a bound: the rest of this flush record by record
            self._add(entries[index], wall, t_ms)
            index += 1

    def _queue_run(self, blob: bytes, count: int) -> bool:
        """Queue `count` records built as one blob, with the next seqs: only when no gap waits to be declared and the
        whole blob fits both bounds; else False and nothing changed."""
        owner = self.owner
        size = len(blob)
        if (
            self._size_gap is not None
            or self._drop_start is not None
            or self.logged_bytes + size > owner.max_session_bytes
            or not self._queue_has_room(size)
        ):
            return False
        first = self.next_seq
        self.next_seq = first + count
        self.logged_bytes += size
        owner.enqueued_bytes += size
        self._keep(blob, first, first + count - 1, count)
        return True

    def append(self, entry: LogEntry) -> int:
        """Stamp and enqueue one record; returns its seq (assigned even if the record is dropped)."""
        return self._add(entry, time.time(), (time.monotonic() - self.started_mono) * 1000.0)

    def _add(self, entry: LogEntry, wall: float, t_ms: float) -> int:
        """One record stamped `wall` / `t_ms`, with the next seq: built, checked against the bounds, queued."""
        seq = self.next_seq
        self.next_seq += 1
        if entry.dir == "relay" and entry.type is not None and entry.type.startswith("relay."):
            # The relay's own records quote what clients and upstreams sent (a user agent, an error's text): a
            # credential in there is masked in the event record as in the daemon log (docs/security.md).
            entry = msgspec.structs.replace(entry, event=redact_data(entry.event))
            fields = entry.event if isinstance(entry.event, dict) else {}
            if entry.type == ev.RELAY_TOOL_CALL:  # arguments and output are content: log_content decides
                fields = summarize_event(fields, entry.type, None, self.owner.records.keep_text)
            log.info(entry.type, session_id=self.session_id, **fields)
        owner = self.owner
        if not owner.enabled or self._closed:
            return seq
        try:
            line = owner.records.build(self.session_id, seq, wall, t_ms, entry)
        except Exception as exc:  # a record that cannot be encoded is a dropped record, declared in place
            self._count_drop()
            log.warning("relay.log_encode_failed", session_id=self.session_id, seq=seq, error=str(exc))
            self._enqueue_control(QueuedGap(self, seq, seq, "encode_error"))
            return seq
        size = len(line)
        if self.logged_bytes + size > owner.max_session_bytes and entry.type != ev.RELAY_SESSION_ENDED:
            self._count_drop()
            if self._size_gap is None:
                log.warning("relay.log_size_limit", session_id=self.session_id, max_bytes=owner.max_session_bytes)
            self._size_gap = (self._size_gap[0] if self._size_gap else seq, seq)
            return seq
        if self._size_gap is not None:
            self._declare_size_gap()
        self.logged_bytes += size
        if self._drop_start is not None and self._queue_has_room(size):
            self._declare_queue_gap()  # room again: the gap goes before this record
        # Room in the queue's bound: counted as queued.
        if self._queue_has_room(size):
            owner.enqueued_bytes += size
            self._keep(line, seq, seq, 1)
        else:
            self._count_drop()
            if self._drop_start is None:
                self._drop_start = seq
                log.warning("relay.log_queue_full", session_id=self.session_id, queued_bytes=owner.queued_bytes)
            self._drop_end = seq
        return seq

    def _queue_has_room(self, size: int) -> bool:
        """Whether `size` more bytes fit the writer's queue bound (`log_queue_max_bytes`)."""
        return self.owner.queued_bytes + size <= self.owner.max_queue_bytes

    def _keep(self, blob: bytes, first_seq: int, last_seq: int, count: int) -> None:
        """Records counted as queued wait in the session's list for the next hand-over (one timer for all sessions)."""
        lines = self._lines
        lines.append(blob)
        self._lines_last = last_seq
        self._lines_records += count
        if len(lines) == 1:
            self._lines_first = first_seq
            self.owner.mark_dirty(self)

    def hand_over_records(self) -> None:
        """Queue this session's waiting records for the writer, as one item."""
        lines = self._lines
        if lines:
            self._lines = []
            count, self._lines_records = self._lines_records, 0
            blob = lines[0] if len(lines) == 1 else b"".join(lines)
            self.owner.queue.append(QueuedRecords(self, self._lines_first, self._lines_last, count, blob))

    def _enqueue_control(self, item: QueuedGap | QueuedClose) -> None:
        """A gap or the close goes after the records before it (the session's waiting ones first)."""
        self.hand_over_records()
        self.owner.enqueue_control(item)

    def _count_drop(self) -> None:
        """One record dropped before the queue (loop thread): counted for the session and the process."""
        self.enqueue_dropped += 1
        self.owner.dropped_enqueue += 1

    def _declare_queue_gap(self) -> None:
        if self._drop_start is not None:
            self._enqueue_control(QueuedGap(self, self._drop_start, self._drop_end or self._drop_start, "queue_full"))
            self._drop_start = self._drop_end = None

    def _declare_size_gap(self) -> None:
        if self._size_gap is not None:
            self._enqueue_control(QueuedGap(self, self._size_gap[0], self._size_gap[1], "size_limit"))
            self._size_gap = None

    def owe_gap(self, from_seq: int, to_seq: int, reason: str) -> None:
        """Writer thread: seqs `from_seq`..`to_seq` are lost for `reason`, declared at the next write that works.
        A range that continues the last one for the same reason extends it (one line per run of failures)."""
        gaps = self.write_gaps
        if gaps and gaps[-1][2] == reason and gaps[-1][1] + 1 >= from_seq:
            gaps[-1] = (gaps[-1][0], max(gaps[-1][1], to_seq), reason)
        else:
            gaps.append((from_seq, to_seq, reason))

    @property
    def dropped(self) -> int:
        return self.enqueue_dropped + self.write_dropped

    def close(self) -> concurrent.futures.Future[None]:
        """No more records; the writer writes what is queued and closes the file. Resolves when done."""
        if self._close_future is None:
            self._close_future = concurrent.futures.Future()
            self._declare_queue_gap()
            self._declare_size_gap()
            self._closed = True
            if self.owner.enabled:
                self._enqueue_control(QueuedClose(self, self._close_future))
            else:
                self._close_future.set_result(None)
        return self._close_future

    async def aclose(self, within: float | None = None) -> None:
        """`close` and wait until the records are written; with `within`, that many seconds at most (a sink that
        is slow, like a stalled stdout collector, gets them later: it must not keep a finished session around)."""
        closed = asyncio.wrap_future(self.close())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), within)

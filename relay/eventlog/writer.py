"""The event log's writer: one bounded queue, one writer thread, the files (docs/event-log.md).

Boundary: this module moves records; what they say is `relay/eventlog/records.py` (the record builder), and each
session's side (seqs, stamps, the bounds) is `relay/eventlog/session_log.py`. `EventLog` hands out a
`SessionEventLog` per session; every 50 ms one timer on the loop hands every session's waiting records to the queue
(`EventLog.hand_over`), and at session end. The writer thread joins and write(2)s them within 200 ms, so forwarding
never waits on the disk. The queue is bounded by the bytes it holds (`log_queue_max_bytes`); records lost to failed
writes are owed to their session as gaps and declared by a `relay.log_gap` line (its own seq null) at the next write
that works. Files are opened O_APPEND, 0640 in 0750 folders, and a write that fails halfway is cut back to the last
whole line. File I/O happens on the writer thread only; stdout goes through the log stream (relay/linestream.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from pathlib import Path
from typing import Final

import structlog

from relay.eventlog.files import JsonlFile
from relay.eventlog.records import RecordBuilder
from relay.eventlog.session_log import QueuedClose, QueuedGap, QueuedRecords, SessionEventLog
from relay.linestream import line_stream

FLUSH_INTERVAL_S: Final = 0.1  # the writer's period; with the hand-over below, within the 200 ms bound
# Records wait in their session's list this long before the loop hands them to the writer in one piece: per
# record, the loop then appends bytes to a list, and the writer thread takes one item per session and period.
HAND_OVER_S: Final = 0.05
CLOSE_TIMEOUT_S: Final = 3.0  # stdout as the only copy, at shutdown: with the log stream's 2 s, the 5 s flush budget
_SOON_BYTES: Final = 8 << 20  # wake the writer early when this much is queued (1/8 of the default bound)

log = structlog.get_logger()


class EventLog:
    """The process-wide writer. `open_session` hands out a `SessionEventLog` per session."""

    def __init__(
        self,
        log_dir: Path | None,
        *,
        to_stdout: bool = False,
        max_queue_bytes: int = 64 << 20,
        keep_text: bool = True,
        stdout_fd: int = 1,
        max_session_bytes: int = 256 << 20,
        audio_hash: bool = False,
    ) -> None:
        self.log_dir = log_dir
        self.max_session_bytes = max_session_bytes
        self.to_stdout = to_stdout
        self.max_queue_bytes = max_queue_bytes
        self.records = RecordBuilder(keep_text=keep_text, audio_hash=audio_hash)
        self._stdout_fd = stdout_fd
        self.enabled = log_dir is not None or to_stdout  # records are encoded and written at all
        self.queue: deque[QueuedRecords | QueuedGap | QueuedClose] = deque()
        self._dirty: list[SessionEventLog] = []  # sessions with records not handed over yet (loop thread)
        self._owed: set[SessionEventLog] = set()  # ended sessions whose files are owed gap lines (writer thread)
        self._hand_over_timer: asyncio.TimerHandle | None = None
        self._hand_over_lock = threading.Lock()
        self.enqueued_bytes = 0  # written by the loop thread only
        self.written_bytes = 0  # written by the writer thread only
        self._mirror_dropped = 0  # records the stdout copy lost in the current outage (writer thread only)
        self.dropped_enqueue = 0
        self._dropped_write = 0
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="relay-eventlog", daemon=True)
        self._thread.start()

    @property
    def dropped_total(self) -> int:
        return self.dropped_enqueue + self._dropped_write

    @property
    def queued_bytes(self) -> int:
        return self.enqueued_bytes - self.written_bytes

    def open_session(
        self, session_id: str, *, started_wall: float | None = None, started_mono: float | None = None
    ) -> SessionEventLog:
        return SessionEventLog(
            self,
            session_id,
            started_wall=time.time() if started_wall is None else started_wall,
            started_mono=time.monotonic() if started_mono is None else started_mono,
        )

    # ---- loop side ------------------------------------------------------------------------------------
    def mark_dirty(self, session_log: SessionEventLog) -> None:
        """`session_log` has records to hand over: soon (one timer for every session), or now without a loop."""
        self._dirty.append(session_log)
        if self._hand_over_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the event loop (a tool, a test): no batching
                self.hand_over()
                return
            self._hand_over_timer = loop.call_later(HAND_OVER_S, self.hand_over)

    def hand_over(self) -> None:
        """Give the writer every session's waiting records: on the loop thread (its timer), or from `close` once
        no session appends any more (the lock keeps a timer firing meanwhile from handing a list over twice)."""
        with self._hand_over_lock:
            self._hand_over_timer = None
            dirty, self._dirty = self._dirty, []
            for session_log in dirty:
                session_log.hand_over_records()
        if self.queued_bytes > _SOON_BYTES and not self._wake.is_set():
            self._wake.set()

    def enqueue_control(self, item: QueuedGap | QueuedClose) -> None:
        self.queue.append(item)
        self._wake.set()

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, close every file, stop the thread (idempotent). Waits `timeout` seconds at
        most; by default 30 s for files, `CLOSE_TIMEOUT_S` when stdout is the records' only copy: a collector
        that reads nothing must not hold up the process's exit (what it never took is lost)."""
        if timeout is None:
            timeout = 30.0 if self.log_dir is not None else CLOSE_TIMEOUT_S
        deadline = time.monotonic() + timeout
        self.hand_over()  # sessions' logs are closed by now (each hands its records over); any left go too
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        if self.to_stdout:  # the stdout copy beside the files, handed to the log stream's thread
            line_stream(self._stdout_fd).flush(max(0.0, deadline - time.monotonic()))

    # ---- writer thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        files: dict[SessionEventLog, JsonlFile] = {}
        while True:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            stopping = self._stop
            self._write_batch(files)
            self._declare_owed_gaps(files)
            if stopping and not self.queue:
                for open_file in files.values():
                    open_file.close()
                files.clear()
                return

    def _write_batch(self, files: dict[SessionEventLog, JsonlFile]) -> None:
        # Per session, in the order sessions first appear in the queue (a dict keeps insertion order).
        pending: dict[SessionEventLog, list[QueuedRecords]] = {}
        closes: list[QueuedClose] = []
        freed = 0
        queue = self.queue
        while queue:
            item = queue.popleft()
            lines = pending.setdefault(item.log, [])
            if isinstance(item, QueuedRecords):
                freed += len(item.blob)
                lines.append(item)
            elif isinstance(item, QueuedGap):
                lines.append(self._gap_records(item.log, item.from_seq, item.to_seq, item.reason))
            else:
                closes.append(item)
        self.written_bytes += freed
        for session_log, lines in pending.items():
            self._write_session(files, session_log, lines)
        for close in closes:
            _close_file(files, close.log)
            if close.log.write_gaps:
                # Its last records were lost while writing failed: the gap is still owed to its file.
                self._owed.add(close.log)
            if not close.done.done():
                close.done.set_result(None)

    def _write_session(
        self, files: dict[SessionEventLog, JsonlFile], session_log: SessionEventLog, lines: list[QueuedRecords]
    ) -> None:
        if not lines:
            return
        blob = lines[0].blob if len(lines) == 1 else b"".join(records.blob for records in lines)
        # The records' one durable copy is the file when files are on, else stdout: losing it is a counted,
        # declared gap. With files on, stdout mirrors each record once, whether or not the file took it, so the
        # gaps owed by failed file writes go to the file only; a failing mirror beside working files loses nothing.
        try:
            self._write_durable(files, session_log, blob)
        except OSError as exc:
            self._drop_batch(session_log, lines, exc, sink_name(self.log_dir))
        if self.log_dir is not None:
            self._mirror_to_stdout(blob, sum(records.n_records for records in lines))

    def _write_durable(self, files: dict[SessionEventLog, JsonlFile], session_log: SessionEventLog, blob: bytes) -> None:
        """`blob` to the records' one durable copy (the session's file when files are on, else stdout), after the
        gap lines earlier failed writes left, which are then declared. Raises OSError; the gaps stay owed."""
        gaps = session_log.write_gaps
        if gaps:
            blob = b"".join(self._gap_line(session_log, start, end, reason) for start, end, reason in gaps) + blob
        if self.log_dir is None:
            line_stream(self._stdout_fd).write_now(blob)  # between the daemon's log lines, never inside one
        else:
            open_file = files.get(session_log)
            if open_file is None:
                open_file = files[session_log] = JsonlFile(session_log.path(self.log_dir))
            open_file.write(blob)
        if gaps:
            session_log.write_gaps = []
            log.info(
                "relay.log_write_recovered", session_id=session_log.session_id, sink=sink_name(self.log_dir),
                from_seq=gaps[0][0], to_seq=gaps[-1][1], dropped=session_log.write_dropped,
            )  # fmt: skip

    def _declare_owed_gaps(self, files: dict[SessionEventLog, JsonlFile]) -> None:
        """Sessions that ended while their writes failed: once writing works again, their files get the gap lines
        they are owed (the session's file is opened again just for them)."""
        for session_log in list(self._owed):
            try:
                self._write_durable(files, session_log, b"")
            except OSError:
                continue  # still failing: tried again next period, and at shutdown
            finally:
                _close_file(files, session_log)
            self._owed.discard(session_log)

    def _mirror_to_stdout(self, blob: bytes, n_records: int) -> None:
        """The copy beside the files, through the log stream (a stalled collector never holds up the files); past
        its bound the copy is dropped, said when that starts and counted when it ends."""
        if not self.to_stdout:
            return
        if line_stream(self._stdout_fd).put(blob):
            if self._mirror_dropped:
                log.info("relay.log_stdout_copy_recovered", dropped=self._mirror_dropped)
                self._mirror_dropped = 0
            return
        if not self._mirror_dropped:
            detail = "stdout's reader is behind: its copy is dropped until it catches up (the files keep every record)"
            log.warning("relay.log_stdout_copy_dropping", detail=detail)
        self._mirror_dropped += n_records

    def _drop_batch(self, session_log: SessionEventLog, lines: list[QueuedRecords], exc: OSError, sink: str) -> None:
        """The lines of a failed write are lost: records become a `write_failed` gap, and gap lines among them
        (a full queue's, a size limit's) stay owed as they were; all are declared once writing works again."""
        dropped = 0
        first_failure = not session_log.write_gaps  # nothing owed yet: this write starts an outage
        for line in lines:
            if line.gap_reason is not None:
                session_log.owe_gap(line.first_seq, line.last_seq, line.gap_reason)
            else:
                session_log.owe_gap(line.first_seq, line.last_seq, "write_failed")
                dropped += line.n_records
        session_log.write_dropped += dropped
        self._dropped_write += dropped
        if first_failure:  # once per outage and session, not every period: a full disk would flood the daemon log
            log.warning(
                "relay.log_write_failed", session_id=session_log.session_id, error=str(exc), sink=sink,
                detail="records are dropped and counted until a write works again (relay.log_write_recovered)",
            )  # fmt: skip

    def _gap_records(self, session_log: SessionEventLog, from_seq: int, to_seq: int, reason: str) -> QueuedRecords:
        return QueuedRecords(session_log, from_seq, to_seq, 0, self._gap_line(session_log, from_seq, to_seq, reason), reason)

    def _gap_line(self, session_log: SessionEventLog, from_seq: int, to_seq: int, reason: str) -> bytes:
        return self.records.gap(session_log.session_id, session_log.started_mono, from_seq, to_seq, reason)


def _close_file(files: dict[SessionEventLog, JsonlFile], session_log: SessionEventLog) -> None:
    open_file = files.pop(session_log, None)
    if open_file is not None:
        open_file.close()


def sink_name(log_dir: Path | None) -> str:
    """Where the records' one durable copy goes: the session's file, or stdout when event files are off."""
    return "file" if log_dir is not None else "stdout"

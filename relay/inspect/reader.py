"""Read event-log files (docs/event-log.md) leniently, as a stream of records, one session or all of them.

Boundary: this module finds log files, opens them, iterates their lines, parses and validates each record and
closes them; it does nothing else: no aggregation, no writing, no printing, no clock, no network. What the
records mean to a summary is `relay.inspect.summary` and the modules it folds records with.

Streaming: files are read line by line and every record is yielded and then dropped by the caller, so memory
grows with the number of sessions, never with the size of the logs. Nothing here loads a whole file or
directory.

Bad input never raises: a truncated last line (a writer killed mid-write), a line that is not JSON, a JSON
value that is not an event-log record (a `session_id` the relay would not mint included), a record with an
unknown schema version `v`, an empty or unreadable file, a folder that cannot be listed, and a `*.jsonl` that is
not a regular file once symlinks are followed (a FIFO would block the read forever, a link to /dev/zero would
never end a line) are each skipped and counted in a `ReadWarnings`. Only the path asked for raises: missing, or
neither a regular file nor a folder (`LogPathError`, a usage error: the CLI exits 2), or there but unreadable
(`LogAccessError`, a runtime failure: exit 1).

File names are whatever bytes the file system holds; `shown_name` is how every output spells them.
"""

from __future__ import annotations

import heapq
import math
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from relay.core import events as ev
from relay.core.items import SESSION_ID_RE

SCHEMA_VERSION = 1
DIRECTIONS: tuple[str, ...] = ("client", "server", "relay")
LOG_FILE_SUFFIX = ".jsonl"
# The `type` shown for records the relay logged with type null (an upstream frame that was not JSON).
UNTYPED = "(no type)"
# At most this many warnings are kept verbatim (per file); the rest are only counted.
WARNING_SAMPLES_PER_FILE = 20


class LogPathError(Exception):
    """The path given to the reader does not exist, or is neither a regular file nor a folder."""


class LogAccessError(Exception):
    """The path given to the reader exists but cannot be read or listed."""


def shown_name(name: str) -> str:
    """A file name as text any output can carry: bytes that are not UTF-8 (which Python keeps as lone
    surrogates) are shown as `\\xNN` escapes, so JSON encoders, HTML and terminals all take it."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file system decoding makes; still never fail to show a name
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class ReadWarning:
    """One skipped piece of input: which file, which line (None for the whole file), and why."""

    file: str
    line: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"file": shown_name(self.file), "line": self.line, "reason": self.reason}


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
    """One parsed event-log record. `raw` is the whole JSON object as read (the HTML timeline shows it)."""

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


def find_log_files(path: Path, warnings: ReadWarnings | None = None) -> list[Path]:
    """The log files under `path`: the file itself, or every `*.jsonl` below a folder, in sorted order.

    Below a folder, a subfolder that cannot be listed and a `*.jsonl` that is not a regular file (after
    following symlinks; checked with stat, so a FIFO is never opened) are skipped and counted in `warnings`.
    Symlinked folders are not descended into, so a link loop cannot make the walk endless.
    Raises LogPathError when `path` is missing or neither a regular file nor a folder, LogAccessError when it
    cannot be read or listed.
    """
    warnings = warnings if warnings is not None else ReadWarnings()
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise LogPathError(f"no such file or directory: {path}") from None
    except OSError as exc:
        raise LogAccessError(f"cannot read {path}: {exc.strerror or exc.__class__.__name__}") from None
    if stat.S_ISREG(mode):
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        except OSError as exc:
            raise LogAccessError(f"cannot read {path}: {exc.strerror or exc.__class__.__name__}") from None
        return [path]
    if not stat.S_ISDIR(mode):
        raise LogPathError(f"not a regular file or directory: {path} (a FIFO, device or socket is not read)")
    found: list[Path] = []
    # Depth first, each folder's files before its subfolders, names sorted: the order os.walk would give.
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            if folder == path:
                raise LogAccessError(f"cannot list {path}: {exc.strerror or exc.__class__.__name__}") from None
            warnings.add(str(folder), None, f"unreadable folder: {exc.strerror or exc.__class__.__name__}")
            continue
        subfolders: list[Path] = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(Path(entry.path))
                    continue
            except OSError:
                pass  # not listable as a folder: judged as a file below when its name says it is a log
            if not entry.name.endswith(LOG_FILE_SUFFIX):
                continue
            try:
                regular = stat.S_ISREG(entry.stat(follow_symlinks=True).st_mode)
            except OSError as exc:  # a dangling or looping symlink, a file gone meanwhile
                warnings.add(entry.path, None, f"unreadable file: {exc.strerror or exc.__class__.__name__}")
                continue
            if not regular:
                warnings.add(entry.path, None, "not a regular file")
                continue
            found.append(Path(entry.path))
        pending.extend(reversed(subfolders))
    return found


def _validate(obj: object) -> str | None:
    """Why `obj` is not a usable event-log record, or None when it is."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("v") != SCHEMA_VERSION:
        return f"unknown schema version: v={obj.get('v')!r}"
    session_id = obj.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        return "not an event-log record: no session_id"
    if not SESSION_ID_RE.fullmatch(session_id):  # not the relay's: it must not name a page file or reach a terminal
        return "not an event-log record: session_id is not a session id"
    # The relay logs an upstream frame that is not JSON with type null; it is still a record.
    if not isinstance(obj.get("type"), str | None) or "type" not in obj:
        return "not an event-log record: no type"
    if obj.get("dir") not in DIRECTIONS:
        return f"not an event-log record: dir={obj.get('dir')!r}"
    t_ms = obj.get("t_ms")
    if isinstance(t_ms, bool) or not isinstance(t_ms, int | float) or not math.isfinite(t_ms):
        return "not an event-log record: no t_ms"
    seq = obj.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        return "not an event-log record: seq is not an integer"
    event = obj.get("event")
    if event is not None and not isinstance(event, dict):
        return "not an event-log record: event is not an object"
    return None


def read_file(
    path: Path, warnings: ReadWarnings, session_id: str | None = None
) -> Iterator[LogRecord]:
    """Yield the valid records of one file, in file order, counting everything skipped in `warnings`.

    With `session_id`, only that session's records are parsed: a line not containing the id's bytes is
    passed over without parsing (and without a warning, since it is not part of what was asked for).
    """
    name = str(path)
    needle = session_id.encode("utf-8", "surrogateescape") if session_id is not None else None  # argv's undecodable bytes
    try:
        # Non-blocking, so a FIFO put in place after the folder was listed cannot hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        warnings.add(name, None, f"unreadable file: {exc.strerror}")
        return
    last_seq: dict[str, float] = {}
    any_line = False
    with open(fd, "rb") as handle:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                warnings.add(name, None, "not a regular file")
                return
            os.set_blocking(fd, True)
        except OSError as exc:
            warnings.add(name, None, f"unreadable file: {exc.strerror}")
            return
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
    """Group files by their name (`<session_id>.jsonl`, docs/event-log.md), so several files of one session are merged."""
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



def session_records(files: list[Path], session_id: str) -> Iterator[LogRecord]:
    """One session's records again, merged and de-duplicated the way `summarize` saw them (for the HTML)."""
    seq = SeqFilter()
    for record in read_merged(files, ReadWarnings(), session_id):
        if seq.accept(record):
            yield record

"""Configure structlog once, at the CLI entry point: console on a TTY, JSON lines otherwise.

stdlib loggers (aiohttp, picows, asyncio) are routed through the same processors via ProcessorFormatter, so
stdout carries one format. The daemons' lines go through their descriptor's `LineStream` (relay.linestream): a
logging call on the event loop never waits for a collector that reads slowly or not at all, and past the stream's
bound lines are dropped and then declared by a `relay.log_lines_dropped` line. The CLI tools write their stderr
directly.

JSON records share stdout with the event records of `event_log_stdout`, so they follow the same schema (see
docs/configuration.md, "One stdout schema"): the time is `ts`, the severity `level`, the message `msg`; the keys
only event records own (`event`, `seq`, `dir`, ...) never appear at the top level of a daemon record, and
`event_id`/`item_id`/`response_id` are strings or absent.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import structlog

from relay.linestream import LineStream, line_stream
from relay.redact import RedactingFormatter

# Keys whose JSON type is fixed by the event records on the same stream: a daemon record that was given one of
# them as a field keeps the value under `<key>_field` instead, so no key has two JSON types across stdout.
EVENT_RECORD_KEYS = ("v", "t_ms", "seq", "dir", "type", "bytes", "client_event", "server_event")
ID_KEYS = ("event_id", "item_id", "response_id")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def use_json(log_format: str, stream: Any = None) -> bool:
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    stream = sys.stdout if stream is None else stream
    return not (hasattr(stream, "isatty") and stream.isatty())


def one_stdout_schema(_logger: Any, _method: str, event_dict: Any) -> Any:
    """Rename the message to `msg`, move fields that would clash with event records' keys and write object and
    list values as their JSON text (JSON output only)."""
    for key in EVENT_RECORD_KEYS:
        if key in event_dict:
            event_dict[f"{key}_field"] = event_dict.pop(key)
    for key in ID_KEYS:
        if key in event_dict and not isinstance(event_dict[key], str):
            value = event_dict.pop(key)
            if value is not None:
                event_dict[f"{key}_field"] = repr(value)
    if "event" in event_dict:
        event_dict["msg"] = event_dict.pop("event")
    for key, value in event_dict.items():
        # The same field name carries a string in one message and an object in another (`error`: an exception's
        # text, an upstream's error object): as text, a collector sees one JSON type per key.
        if key != "msg" and isinstance(value, dict | list | tuple):
            event_dict[key] = json.dumps(value, default=repr, ensure_ascii=False, separators=(",", ":"))
    return event_dict


class LineHandler(logging.Handler):
    """Hands each formatted record to a `LineStream` without waiting; counts what the stream refused and says so
    in the first line that gets through after."""

    def __init__(self, stream: LineStream) -> None:
        super().__init__()
        self.stream = stream
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        except Exception:
            self.handleError(record)
            return
        if not self.stream.put(line):
            self.dropped += 1
            return
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            # Through the logging call, so the line has the stream's format (re-entering this handler is safe).
            structlog.get_logger(__name__).warning(
                "relay.log_lines_dropped", dropped=dropped, detail="the log stream's reader fell behind by this many lines"
            )


def configure_logging(log_format: str = "auto", log_level: str = "info", stream: Any = None, *, daemon: bool = False) -> None:
    """`stream`: stdout for the daemons (serve, sim, mic); the CLI tools log to stderr so their output stays clean.
    `daemon`: write through the stream's descriptor's `LineStream` (a stream with no descriptor, like a test's,
    is written directly)."""
    stream = sys.stdout if stream is None else stream
    level = _LEVELS[log_level]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
    ]
    renderer: Any
    final: list[Any] = []
    if use_json(log_format, stream):
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"))
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
        final.append(one_stdout_schema)
    else:
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Not cached: a later configuration (a test capturing logs, a CLI moving its log to stderr) reaches every
        # module's logger, including those already used. The daemon logs a few lines per session, not per frame.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final, renderer],
    )
    handler: logging.Handler = logging.StreamHandler(stream)
    fd = _descriptor(stream) if daemon else None
    if fd is not None:
        stream.flush()  # what was printed before goes first
        handler = LineHandler(line_stream(fd))
    # Secrets never reach the output, whoever logged them (see docs/security.md).
    handler.setFormatter(RedactingFormatter(formatter))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per HTTP request: useful at debug only.
    logging.getLogger("aiohttp.access").setLevel(max(level, logging.WARNING))


def _descriptor(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None

"""Configure structlog once, at the CLI entry point: console on a TTY, JSON lines otherwise (CONTRACT C6).

stdlib loggers (aiohttp, websockets, asyncio) are routed through the same processors via ProcessorFormatter, so
stdout carries one format. This module writes only to the process's stdout stream through the logging module.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from relay.redact import RedactingFormatter

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def use_json(log_format: str, stream: Any = None) -> bool:
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    stream = sys.stdout if stream is None else stream
    return not (hasattr(stream, "isatty") and stream.isatty())


def configure_logging(log_format: str = "auto", log_level: str = "info", stream: Any = None) -> None:
    """`stream`: stdout for the daemons (serve, sim, mic); the CLI tools log to stderr so their output stays clean."""
    stream = sys.stdout if stream is None else stream
    level = _LEVELS[log_level]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if use_json(log_format, stream):
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    # Secrets never reach the output, whoever logged them (see docs/security.md).
    handler.setFormatter(RedactingFormatter(formatter))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per HTTP request: useful at debug only.
    logging.getLogger("aiohttp.access").setLevel(max(level, logging.WARNING))

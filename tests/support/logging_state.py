"""Process-wide logging state for tests that run `configure_logging` (directly or through `relay.cli.main`) in
the test process: `kept_logging_state` puts structlog's configuration, the root logger's handlers and level and
aiohttp's access-log level back as they were."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import structlog


@contextlib.contextmanager
def kept_logging_state() -> Iterator[None]:
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    access = logging.getLogger("aiohttp.access")
    saved_access = access.level
    try:
        yield
    finally:
        structlog.configure(**saved_config)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        access.setLevel(saved_access)

"""The first log line of `serve` and `mic`: whether sessions are recorded and where (docs/recording.md) and, when
no upstream credentials are configured, that the embedded simulator answers instead (docs/configuration.md)."""

from __future__ import annotations

import structlog

from relay.recording import recording_banner
from relay.settings import Settings


def log_first_line(settings: Settings, fell_back: bool, *, answering: str) -> None:
    """`fell_back`: no credentials, so `upstream` is the simulator; `answering` says what it answers (sessions,
    the session)."""
    log = structlog.get_logger()
    if fell_back:
        log.warning(
            "relay.using_simulator",
            reason="no upstream credentials (YANDEX_API_KEY / YANDEX_IAM_TOKEN) configured",
            detail=f"the embedded simulator answers {answering}",
            **recording_banner(settings),
        )
    else:
        log.info("relay.recording_configured", **recording_banner(settings))

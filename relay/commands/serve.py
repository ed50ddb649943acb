"""`realtime-relay serve`: run the relay daemon until SIGTERM/SIGINT, then drain and exit 0 (CONTRACT C4).

With no credentials and the default upstream, the embedded simulator is used and the first log line says so.
Signals: the first SIGTERM/SIGINT starts the drain (`/readyz` 503, new upgrades 503, live sessions run up to
`drain_seconds`, then close 1001); a second one closes every session at once. Either way every event log is
flushed before the process exits 0. This module owns the process lifecycle only; the app is `relay.server`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
from pathlib import Path

import structlog
from aiohttp import web

from relay.credentials import simulator_fallback
from relay.eventlog import EventLog
from relay.recording import recording_banner
from relay.server import STATE, check_bind_policy, create_app, drain, force_close, is_loopback
from relay.settings import Settings
from relay.upstream import redact_url

NAME = "serve"
HELP = "run the relay daemon (WebSocket /v1/realtime, REST proxy, page at /)"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    parser.add_argument("--host", dest="host", default=s, help="listen address (127.0.0.1)")
    parser.add_argument("--port", dest="port", default=s, help="listen port (8080; 0 = any free port)")
    parser.add_argument(
        "--insecure-no-auth",
        dest="insecure_no_auth",
        action="store_const",
        const="true",
        default=s,
        help="allow a non-loopback bind without client tokens",
    )


def tune_garbage_collector() -> None:
    """Full collections of a relay's heap paused it 60-100 ms at 200 sessions (make bench); almost nothing it
    allocates per frame is cyclic. Freeze what start-up built and collect young objects far less often:
    measured -90% GC time, no full collections, a shorter latency tail."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


class StopSignals:
    """The first signal asks for a drain; any later one forces every session closed."""

    def __init__(self) -> None:
        self.drain_requested = asyncio.Event()
        self.app: web.Application | None = None
        self.count = 0

    def __call__(self, signum: int) -> None:
        log = structlog.get_logger()
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            log.info("relay.signal", signal=name, action="drain")
            self.drain_requested.set()
        else:
            log.warning("relay.signal", signal=name, action="force close")
            self.drain_requested.set()
            if self.app is not None:
                force_close(self.app)


async def serve(settings: Settings, fell_back: bool) -> int:
    check_bind_policy(settings)  # before anything is logged or bound: a refused bind is a config error (exit 2)
    log = structlog.get_logger()
    # The first line says whether sessions are recorded and where (docs/recording.md).
    if fell_back:
        log.warning(
            "relay.using_simulator",
            reason="no upstream credentials (YANDEX_API_KEY / YANDEX_IAM_TOKEN) configured",
            detail="serving against the embedded simulator",
            **recording_banner(settings),
        )
    else:
        log.info("relay.recording_configured", **recording_banner(settings))
    if not settings.client_tokens:
        if is_loopback(settings.host):
            log.warning("relay.auth_disabled", reason="no client_tokens configured; loopback bind only")
        else:
            log.warning("relay.auth_disabled_insecure", host=settings.host, reason="--insecure-no-auth")

    # Handlers go in before anything else: a supervisor may signal as soon as the process exists.
    loop = asyncio.get_running_loop()
    signals = StopSignals()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, signals, signum)
    try:
        event_log = EventLog(
            Path(settings.log_dir) if settings.event_log_files else None,
            to_stdout=settings.event_log_stdout,
            max_queue_bytes=settings.log_queue_max_bytes,
            keep_text=settings.log_content,
        )
        try:
            app = create_app(settings, event_log=event_log)
            tune_garbage_collector()
            signals.app = app
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            try:
                site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
                await site.start()
                port = int(runner.addresses[0][1]) if runner.addresses else settings.port
                state = app[STATE]
                log.info(
                    "relay.listening",
                    host=settings.host,
                    port=port,
                    url=f"http://{settings.host}:{port}/",
                    # No userinfo and no query: either may carry a secret an operator put in the URL.
                    upstream=redact_url(state.upstream_base).split("?")[0],
                    auth=state.auth_required,
                )
                await signals.drain_requested.wait()
                await drain(app, 0.0 if signals.count > 1 else settings.drain_seconds)
            finally:
                await runner.cleanup()
        finally:
            # Every record of every session reaches the disk before the process says it stopped (C6).
            await asyncio.to_thread(event_log.close)
        log.info("relay.stopped")
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    sources = getattr(args, "setting_sources", {})
    settings, fell_back = simulator_fallback(settings, sources.get("upstream", "default"))
    return asyncio.run(serve(settings, fell_back))

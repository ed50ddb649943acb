"""`realtime-relay serve`: run the relay daemon until SIGTERM/SIGINT, then drain and exit 0 (CONTRACT C4).

With no credentials and the default upstream, the embedded simulator is used and the first log line says so.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
from pathlib import Path

import structlog
from aiohttp import web

from relay.credentials import Credentials
from relay.eventlog import EventLog
from relay.server import STATE, check_bind_policy, create_app, drain, is_loopback
from relay.settings import DEFAULT_UPSTREAM, UPSTREAM_SIM, Settings

NAME = "serve"
HELP = "run the relay daemon (WebSocket /v1/realtime, REST proxy, page at /)"


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


def effective_settings(settings: Settings) -> tuple[Settings, bool]:
    """(settings, fell_back_to_sim): the default upstream without credentials means the simulator (C1)."""
    if settings.upstream == DEFAULT_UPSTREAM and not Credentials.load(settings).present:
        return dataclasses.replace(settings, upstream=UPSTREAM_SIM), True
    return settings, False


async def serve(settings: Settings, fell_back: bool) -> int:
    log = structlog.get_logger()
    if fell_back:
        log.warning(
            "relay.using_simulator",
            reason="no upstream credentials (YANDEX_API_KEY / YANDEX_IAM_TOKEN) configured",
            detail="serving against the embedded simulator",
        )
    check_bind_policy(settings)
    if not settings.client_tokens:
        if is_loopback(settings.host):
            log.warning("relay.auth_disabled", reason="no client_tokens configured; loopback bind only")
        else:
            log.warning("relay.auth_disabled_insecure", host=settings.host, reason="--insecure-no-auth")
    event_log = EventLog(
        Path(settings.log_dir) if settings.event_log_files else None,
        to_stdout=settings.event_log_stdout,
        max_queue_bytes=settings.log_queue_max_bytes,
        keep_text=settings.log_content,
    )
    app = create_app(settings, event_log=event_log)
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
            upstream=state.upstream_base.split("?")[0],
            auth=state.auth_required,
        )

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info("relay.signal", signal=signal.Signals(signum).name, action="drain")
                stop.set()
            else:
                log.warning("relay.signal", signal=signal.Signals(signum).name, action="force close")
                for bridge in list(state.bridges):
                    from relay.bridge import EndReason

                    bridge.request_stop(EndReason.DRAIN)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await stop.wait()
        await drain(app, settings.drain_seconds)
    finally:
        await runner.cleanup()
        await asyncio.to_thread(event_log.close)
        log.info("relay.stopped")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings, fell_back = effective_settings(settings)
    check_bind_policy(settings)
    return asyncio.run(serve(settings, fell_back))

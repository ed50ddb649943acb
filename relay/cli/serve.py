"""`realtime-relay serve`: run the relay daemon until SIGTERM/SIGINT, then drain and exit 0 (docs/lifecycle.md).

With no credentials and the default upstream, the embedded simulator is used and the first log line says so.
Signals: the first SIGTERM/SIGINT starts the drain (`/readyz` 503, new upgrades 503, live sessions run up to
`drain_seconds`, then close 1001); a second one closes every session at once. Either way every event log is
flushed before the process exits 0. This module owns the process lifecycle only; the app is `relay.server.app`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import os
import signal
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog
from aiohttp import web

from relay.cli import interrupts
from relay.cli.first_line import log_first_line
from relay.credentials import Credentials, resolve_model, simulator_fallback
from relay.errors import ConfigError, StartupError
from relay.links.upstream import redact_url
from relay.server import connections
from relay.server.app import (
    STATE,
    check_bind_policy,
    create_app,
    create_metrics_app,
    drain,
    force_close,
    is_loopback,
)
from relay.settings import UPSTREAM_SIM, Settings
from relay.tools.config import load_tools
from relay.wiring import open_event_log

NAME = "serve"
HELP = "run the relay daemon (WebSocket /v1/realtime, REST proxy, page at /)"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Idle keep-alive connections close after this long (aiohttp's own default is an hour: see docs/security.md).
KEEPALIVE_TIMEOUT_SECONDS = 30.0


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
    if settings.metrics_port and settings.metrics_port == settings.port:
        raise ConfigError("metrics_port", str(settings.metrics_port), "must differ from port")
    tls = tls_context(settings)
    log = structlog.get_logger()
    # Event logs, saved audio and recordings are private to the relay's user and group: 0640 files, 0750 folders.
    os.umask(0o027)
    check_writable_folders(settings)
    nofile, _hard = connections.raise_nofile_limit()
    loop = asyncio.get_running_loop()
    connections.AcceptErrorLimiter.install(loop)
    log_first_line(settings, fell_back, answering="every session")
    if not settings.client_tokens:
        if is_loopback(settings.host):
            log.warning("relay.auth_disabled", reason="no client_tokens configured; loopback bind only")
        else:
            log.warning("relay.auth_disabled_insecure", host=settings.host, reason="--insecure-no-auth")

    # Handlers go in before anything else: a supervisor may signal as soon as the process exists.
    signals = StopSignals()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, signals, signum)
    if interrupts.noted():  # a Ctrl-C while the process was starting: the drain it asks for starts now
        signals(signal.SIGINT)
    try:
        event_log = open_event_log(settings)
        try:
            app = create_app(settings, event_log=event_log)
            tune_garbage_collector()
            signals.app = app
            runner = web.AppRunner(
                app, handle_signals=False, access_log=None, shutdown_timeout=2.0, keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS
            )
            await runner.setup()
            state = app[STATE]
            cap = connections.connection_cap(settings.max_connections, nofile, settings.max_sessions)
            if cap < settings.max_connections:
                log.warning("relay.max_connections_lowered", max_connections=cap, nofile_limit=nofile)
            gate = connections.ConnectionGate(
                cap, settings.header_timeout_seconds, lambda reason: state.metrics.connections_closed.update((reason,))
            )
            listener: asyncio.Server | None = None
            metrics_listener: asyncio.Server | None = None
            metrics_runner: web.AppRunner | None = None
            try:
                # The runner's protocol factory, behind the connection bounds (see relay.server.connections).
                assert runner.server is not None  # set by setup()
                try:
                    with host_named_in_errors("host", settings.host):
                        listener = await connections.start_listener(
                            runner.server, settings.host, settings.port, gate, tls=tls
                        )
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:  # e.g. a port below 1024 without the right to bind it
                        raise StartupError(
                            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
                        ) from None
                    raise StartupError(
                        f"cannot listen on {settings.host}:{settings.port}: the address is already in use (another "
                        "relay still running?); stop it or choose another port with --port (RELAY_PORT)"
                    ) from None
                port = int(listener.sockets[0].getsockname()[1]) if listener.sockets else settings.port
                if settings.metrics_port:
                    metrics_runner = web.AppRunner(create_metrics_app(app), handle_signals=False, access_log=None)
                    await metrics_runner.setup()
                    assert metrics_runner.server is not None
                    # Behind the same bounds as the main port (header deadline, connection cap).
                    metrics_listener = await connections.start_listener(
                        metrics_runner.server, settings.host, settings.metrics_port, gate, tls=tls
                    )
                    log.info("relay.metrics_listening", host=settings.host, port=settings.metrics_port)
                log.info(
                    "relay.listening",
                    host=settings.host,
                    port=port,
                    url=f"{'https' if tls is not None else 'http'}://{settings.host}:{port}/",
                    # No userinfo and no query: either may carry a secret an operator put in the URL.
                    upstream=redact_url(state.upstream_base).split("?")[0],
                    auth=state.auth_required,
                    event_loop=running_loop_name(),
                )
                await signals.drain_requested.wait()
                await drain(app, 0.0 if signals.count > 1 else settings.drain_seconds)
            finally:
                for server in (listener, metrics_listener):
                    if server is not None:
                        server.close()
                if metrics_runner is not None:
                    await metrics_runner.cleanup()
                await runner.cleanup()
        finally:
            # Every record of every session reaches the disk before the process says it stopped (docs/event-log.md).
            await asyncio.to_thread(event_log.close)
        log.info("relay.stopped")
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    return 0


@contextlib.contextmanager
def host_named_in_errors(setting: str, host: str) -> Iterator[None]:
    """A listen inside fails because of the host asked for (not a valid name, not resolvable, not an address of
    this machine): a ConfigError naming `setting` (exit 2). Any other OSError (the port) passes through.

    Shared by `sim`, whose listen fails the same ways."""
    try:
        yield
    except UnicodeError as exc:  # the idna codec refusing a name such as "a..b"
        raise ConfigError(setting, host, f"not a valid host name ({exc})") from None
    except socket.gaierror as exc:
        raise ConfigError(setting, host, f"cannot be resolved: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            reason = f"cannot listen there: {os.strerror(exc.errno)} (not an address of this machine)"
            raise ConfigError(setting, host, reason) from None
        raise


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The listeners' TLS (docs/security.md): None without `tls_cert_file`; a certificate and key that do not
    load are a config error naming the setting (exit 2)."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if not cert and not key:
        return None
    if not cert or not key:
        missing = "tls_key_file" if cert else "tls_cert_file"
        raise ConfigError(missing, "", "tls_cert_file and tls_key_file are set together (a certificate and its key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError("tls_cert_file", cert, f"cannot load it with tls_key_file {key!r}: {reason}") from None
    return context


def check_writable_folders(settings: Settings) -> None:
    """The folders `serve` writes (data_dir always, log_dir with event files) exist or can be made, and take a new
    file: a volume mounted read-only or owned by another user fails the start (exit 1, naming the setting) instead
    of every session's saves and recordings later (docs/configuration.md)."""
    folders = [("data_dir", "--data-dir", "RELAY_DATA_DIR", settings.data_dir)]
    if settings.event_log_files:
        folders.append(("log_dir", "--log-dir", "RELAY_LOG_DIR", settings.log_dir))
    for name, flag, variable, folder in folders:
        path = Path(folder)
        try:
            path.mkdir(mode=0o750, parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise StartupError(
                f"{name} {str(path)!r} is not a folder this process (uid {os.getuid()}) can write: {reason}; make it "
                f"writable or choose another with {flag} ({variable})"
            ) from None


def check_model(settings: Settings) -> None:
    """Say at start what would otherwise fail on the first client: credentials but no folder for the model.

    The default model cannot be built without YANDEX_FOLDER_ID (ConfigError, exit 2); a bare model name is
    sent as given, which Yandex refuses, so that starts with a warning.
    """
    if settings.upstream == UPSTREAM_SIM:
        return
    credentials = Credentials.load(settings)
    resolve_model(settings, credentials)
    if credentials.present and not credentials.folder_id and not settings.model.startswith("gpt://"):
        structlog.get_logger().warning(
            "relay.folder_id_missing",
            model=settings.model,
            detail="YANDEX_FOLDER_ID is not set, so the model is sent without a folder (gpt://<folder>/<name>); "
            "set YANDEX_FOLDER_ID or configure model as gpt://FOLDER/NAME",
        )


def run(args: argparse.Namespace, settings: Settings) -> int:
    sources = getattr(args, "setting_sources", {})
    settings, fell_back = simulator_fallback(settings, sources.get("upstream", "default"))
    check_model(settings)
    load_tools(settings, sources.get("tools", "config"))  # a tool that does not load: exit 2 before anything starts
    with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
        return runner.run(serve(settings, fell_back))


def loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `serve` runs on (setting `event_loop`): uvloop's by default, which runs the same relay on
    less CPU per frame (docs/performance.md); None is asyncio's own. With the relay's own TLS it is always
    asyncio's: on uvloop a connection whose handshake failed, and a client's first request sent right behind its
    handshake, waited for the header deadline (docs/security.md, "TLS")."""
    if settings.event_loop == "uvloop" and not (settings.tls_cert_file or settings.tls_key_file):
        import uvloop

        return uvloop.new_event_loop
    return None


def running_loop_name() -> str:
    """Which event loop this process runs on, as the `relay.listening` line says it."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"

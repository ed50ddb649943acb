"""`realtime-relay sim [--host --port --flavour yandex|openai --speed X --api-key K]`: the simulator alone.

Boundary: CLI adapter over `relay.simulator`. Binds `sim_host:sim_port` (port 0 = any free port; the chosen
port is in the first log record), serves the realtime WebSocket and the Conversations REST API until SIGINT or
SIGTERM, then closes open sockets (1001) and exits 0. A host that cannot be listened on (not this machine's, not
resolvable, not a valid name) is a config error (exit 2); a port that cannot be bound is a runtime failure (1).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TYPE_CHECKING, Final

import structlog

from relay.cli import interrupts
from relay.cli.serve import host_named_in_errors
from relay.simulator import start_simulator
from relay.wiring import simulator_options

if TYPE_CHECKING:
    from relay.settings import Settings

NAME = "sim"
HELP = "Run the realtime simulator (an offline stand-in for Yandex AI Studio's Realtime API)."


# The settings this command's flags set, where the flag's name is not the setting's (errors name the flag).
FLAG_NAMES: Final = {
    "sim_host": "--host",
    "sim_port": "--port",
    "sim_flavour": "--flavour",
    "sim_speed": "--speed",
    "sim_api_key": "--api-key",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    parser.add_argument("--host", dest="sim_host", default=s, help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", dest="sim_port", type=int, default=s, help="port (8090; 0 = any free port)")
    parser.add_argument(
        "--flavour",
        dest="sim_flavour",
        choices=("yandex", "openai"),
        default=s,
        help="protocol flavour (yandex)",
    )
    parser.add_argument(
        "--speed",
        dest="sim_speed",
        type=float,
        default=s,
        help="pacing factor for response audio (1.0 = real time; 0 = as fast as possible)",
    )
    parser.add_argument(
        "--api-key",
        dest="sim_api_key",
        metavar="K",
        default=s,
        help="require 'Authorization: Api-Key K' or 'Bearer K' (default: no auth)",
    )


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    """Serve until `stop` is set or SIGINT/SIGTERM arrives."""
    log = structlog.get_logger()
    options = simulator_options(settings)
    try:
        with host_named_in_errors("sim_host", settings.sim_host):
            sim = await start_simulator(options, host=settings.sim_host, port=settings.sim_port)
    except OSError as exc:
        log.error("sim.bind_failed", host=settings.sim_host, port=settings.sim_port, error=str(exc))
        return 1
    log.info(
        "sim.listening",
        host=sim.host,
        port=sim.port,
        realtime_url=sim.realtime_url,
        rest_base=sim.rest_base,
        flavour=options.flavour,
        speed=options.speed,
        auth=options.api_key is not None,
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if interrupts.noted():  # a Ctrl-C while the process was starting
        stop.set()
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        log.info("sim.stopping", port=sim.port)
        await sim.close()
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(serve(settings))

"""Attacks on `serve`'s file descriptors: a slowloris (request heads trickling in) and a connection flood past the
process's RLIMIT_NOFILE. `serve` runs as a subprocess with a small descriptor limit; `/healthz` must stay
answered, surplus connections are closed and counted, and the log does not fill with tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Callable
from pathlib import Path

import aiohttp

from relay.server.connections import FD_RESERVE_BASE, AcceptErrorLimiter, ConnectionGate, connection_cap
from tests.support.relay_fixtures import RelayProcess, running_relay_process
from tests.support.timing import seconds

HARD_LIMIT = 400


def small_fd_limit(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


async def healthz_answers(relay: RelayProcess, within: float) -> bool:
    """True once a fresh connection gets /healthz 200 (a prober retries, as a kubelet does)."""
    async with asyncio.timeout(within):
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                    async with http.get(relay.base_url + "/healthz") as response:
                        if response.status == 200:
                            return True
            await asyncio.sleep(0.1)


async def metric(relay: RelayProcess, line_start: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(relay.base_url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionError):
        return await reader.read(65536) == b""
    return True


async def test_serve_raises_its_soft_descriptor_limit_to_the_hard_one(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path, preexec_fn=small_fd_limit(200, HARD_LIMIT)) as relay:
        assert open_files_limit(relay.pid) == (HARD_LIMIT, HARD_LIMIT)


async def test_a_slowloris_is_cut_off_at_the_header_deadline_while_healthz_answers(tmp_path: Path) -> None:
    env = {"RELAY_HEADER_TIMEOUT_SECONDS": "1"}
    async with running_relay_process(tmp_path, env=env, preexec_fn=small_fd_limit(HARD_LIMIT, HARD_LIMIT)) as relay:
        attackers = [await asyncio.open_connection("127.0.0.1", relay.port) for _ in range(100)]
        for _, writer in attackers:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line that ends the head

        async def trickle() -> None:
            while True:
                for _, writer in attackers:
                    if not writer.is_closing():
                        writer.write(b"X")
                await asyncio.sleep(0.2)

        dribbler = asyncio.create_task(trickle())
        try:
            assert await healthz_answers(relay, seconds(10))
            async with asyncio.timeout(seconds(10)):
                results = await asyncio.gather(*(closed_by_peer(reader) for reader, _ in attackers))
            assert all(results)
        finally:
            dribbler.cancel()
            for _, writer in attackers:
                writer.close()
        assert await metric(relay, 'relay_connections_closed_total{reason="header_timeout"}') >= 100


async def test_a_connection_flood_past_the_descriptor_limit_is_refused_and_counted(tmp_path: Path) -> None:
    env = {"RELAY_HEADER_TIMEOUT_SECONDS": "2"}
    async with running_relay_process(tmp_path, env=env, preexec_fn=small_fd_limit(HARD_LIMIT, HARD_LIMIT)) as relay:
        flood = []
        for _ in range(450):
            with contextlib.suppress(OSError):
                flood.append(await asyncio.open_connection("127.0.0.1", relay.port))
        try:
            assert await healthz_answers(relay, seconds(15))
            refused = await metric(relay, 'relay_connections_closed_total{reason="max_connections"}')
            # The relay keeps descriptors for its own files and upstream sockets: it never holds as many client
            # sockets as its limit allows (a few of the flood may still wait in the accept queue).
            assert refused >= 450 - (HARD_LIMIT - FD_RESERVE_BASE) - 5
        finally:
            for _, writer in flood:
                writer.close()
        relay.terminate()
        assert await relay.wait() == 0
    assert not [r for r in relay.log_lines if r.get("event") == "relay.accept_failed"]  # never out of descriptors
    text = b"".join(relay.raw_stdout).decode("utf-8", "replace")
    assert text.count("Traceback") <= 2
    assert len(relay.log_lines) < 100


def test_accept_errors_are_logged_at_most_once_a_second() -> None:
    loop = asyncio.new_event_loop()
    try:
        others: list[dict[str, object]] = []
        limiter = AcceptErrorLimiter(lambda _loop, context: others.append(context))
        for _ in range(10_000):
            limiter(loop, {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")})
        limiter(loop, {"message": "something else"})
        assert (limiter.logged, limiter.suppressed) == (1, 9_999)
        assert others == [{"message": "something else"}]
    finally:
        loop.close()


def test_the_connection_cap_leaves_descriptors_for_sessions_but_never_starves_the_listener() -> None:
    assert connection_cap(1000, HARD_LIMIT, 10) < HARD_LIMIT - 10 * 3
    assert connection_cap(1000, 65536, 10) == 1000
    assert connection_cap(1000, 20000, 100_000) == 1000  # a huge max_sessions does not reserve every descriptor
    assert connection_cap(1000, 16, 10) >= 1


class ForeignStreamTransport:
    """A stream transport that is none of asyncio's classes, as another loop's (uvloop's) are not."""

    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def test_the_gate_bounds_connections_of_any_loops_transports() -> None:
    closed: list[str] = []
    gate = ConnectionGate(max_connections=1, header_timeout=0.05, on_closed=closed.append)
    made: list[object] = []

    class Inner(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    factory = gate.wrap(Inner)
    first, second = ForeignStreamTransport(), ForeignStreamTransport()
    factory().connection_made(first)  # type: ignore[arg-type]
    factory().connection_made(second)  # type: ignore[arg-type]
    assert made == [first] and second.aborted and closed == ["max_connections"]
    await asyncio.sleep(0.2)  # no request head within the deadline
    assert first.aborted and closed == ["max_connections", "header_timeout"]

"""A real relay in front of a real simulator, on 127.0.0.1 port 0, for integration tests (shared; stable API).

    from tests.support.relay_fixtures import running_relay, running_relay_process, RawWebSocket

    async with running_relay(tmp_path, settings={"max_sessions": 2}, sim_speed=0.0) as relay:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(relay.ws_url, headers=relay.auth_headers()) as ws:
                ...
        relay.sim_handshakes        # upstream WebSocket handshakes the simulator has seen (any answer)
        relay.state                 # relay.server.app.RelayState (bridges, metrics, authority, ...)
        relay.session_records()     # {session_id: [records...]} read from log_dir (after the session ended)

    async with running_relay_process(tmp_path, upstream=sim.realtime_url, env={"RELAY_DRAIN_SECONDS": "1"}) as proc:
        proc.base_url, proc.ws_url, proc.pid; await proc.wait_for_log("relay.session_ended"); proc.terminate()
        proc.log_lines (parsed JSON stdout records), await proc.wait() -> exit code

    client = await RawWebSocket.connect("127.0.0.1", relay.port, headers=..., rcvbuf=4096)  # reads only when
    await client.send_text(...); await client.read_frame(); await client.read_until_close(); client.close()  # told to

`settings` are overrides by setting name (values as a flag or TOML would give them); `upstream`, `log_dir` and
`data_dir` default to the simulator and `tmp_path`; no RELAY_* variable is read (upstream credentials still come
from the process environment, as in production). `sim_speed` defaults to 0 (unpaced); `sim_knobs` are simulator
knob defaults; `sim_api_key` makes the simulator require that key. `upstream_query` is appended to the simulator's
realtime URL (knobs such as `refuse=503`), which the relay keeps as the configured URL's own query (docs/forwarding.md).
The simulator is built with `relay.simulator.create_app` plus a middleware that counts realtime handshakes, and
otherwise runs exactly as `start_simulator` runs it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from relay.server.app import STATE, RelayState, create_app
from relay.settings import Settings, load_settings
from relay.simulator import RunningSimulator, SimulatorOptions
from relay.simulator import create_app as create_sim_app
from tests.support.timing import seconds

REALTIME_PATH = "/v1/realtime"


@dataclass
class HandshakeCounter:
    """Counts realtime WebSocket handshakes reaching the simulator (the relay opened an upstream socket)."""

    count: int = 0
    paths: list[str] = field(default_factory=list)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == REALTIME_PATH:
            self.count += 1
            self.paths.append(request.path_qs)
        response: web.StreamResponse = await handler(request)
        return response


@dataclass
class RunningRelay:
    """A relay app serving on a real loopback socket, in front of `sim`."""

    base_url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT/v1/realtime
    port: int
    settings: Settings
    app: web.Application
    sim: RunningSimulator
    handshakes: HandshakeCounter

    @property
    def state(self) -> RelayState:
        return self.app[STATE]

    @property
    def sim_handshakes(self) -> int:
        return self.handshakes.count

    @property
    def log_dir(self) -> Path:
        return Path(self.settings.log_dir)

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)

    def auth_headers(self, token: str | None = None) -> dict[str, str]:
        """`Authorization: Bearer` with `token`, or the first static client token; {} when auth is off."""
        if token is None:
            if not self.settings.client_tokens:
                return {}
            token = self.settings.client_tokens[0].reveal()
        return {"Authorization": f"Bearer {token}"}

    def log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("*/*.jsonl"))

    def session_records(self) -> dict[str, list[dict[str, Any]]]:
        """Every session's event-log records written so far, by session id (each file parsed line by line).

        A record is written once its newline is: text after the last newline is a record still being written (a
        20 MB one takes a while) and is left for the next read."""
        out: dict[str, list[dict[str, Any]]] = {}
        for path in self.log_files():
            # Split on "\n" only: str.splitlines() also splits inside records at U+0085, U+2028... (raw in JSON).
            *lines, _being_written = path.read_bytes().split(b"\n")
            out[path.stem] = [json.loads(line) for line in lines if line]
        return out


async def start_counted_simulator(options: SimulatorOptions) -> tuple[RunningSimulator, HandshakeCounter]:
    """The real simulator on 127.0.0.1 port 0, with a handshake counter in front of its routes."""
    counter = HandshakeCounter()
    app = create_sim_app(options)
    app.middlewares.append(counter.middleware)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return RunningSimulator(app=app, runner=runner, host="127.0.0.1", port=int(runner.addresses[0][1])), counter


def relay_settings(tmp_path: Path, upstream: str, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings for a test relay: files under tmp_path, `upstream`, then `overrides` (as flags), no env."""
    flags: dict[str, Any] = {
        "upstream": upstream,
        "log_dir": str(tmp_path / "logs"),
        "data_dir": str(tmp_path / "data"),
    }
    flags.update(overrides or {})
    return load_settings(flags=flags, env={}).settings


@asynccontextmanager
async def running_relay(
    tmp_path: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    sim_speed: float = 0.0,
    sim_flavour: str = "yandex",
    sim_api_key: str | None = None,
    sim_knobs: Mapping[str, Any] | None = None,
    upstream_query: str = "",
) -> AsyncIterator[RunningRelay]:
    """Start the simulator and a relay app on 127.0.0.1:0; stop both (and the relay's event log) on exit."""
    sim, counter = await start_counted_simulator(
        SimulatorOptions(flavour=sim_flavour, speed=sim_speed, api_key=sim_api_key, knobs=dict(sim_knobs or {}))
    )
    try:
        upstream = sim.realtime_url + (f"?{upstream_query}" if upstream_query else "")
        effective = relay_settings(tmp_path, upstream, settings)
        app = create_app(effective)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = int(runner.addresses[0][1])
            yield RunningRelay(
                base_url=f"http://127.0.0.1:{port}",
                ws_url=f"ws://127.0.0.1:{port}{REALTIME_PATH}",
                port=port,
                settings=effective,
                app=app,
                sim=sim,
                handshakes=counter,
            )
        finally:
            await runner.cleanup()
    finally:
        await sim.close()


# ---- the relay as a subprocess (`realtime-relay serve`) ----------------------------------------------------


@dataclass
class RelayProcess:
    """A `realtime-relay serve` subprocess; its stdout (JSON log lines) is collected as it comes."""

    process: asyncio.subprocess.Process
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    raw_stdout: list[bytes] = field(default_factory=list)
    port: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reading: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._reading.set()

    def pause_stdout(self) -> None:
        """Stop reading the relay's stdout, as a stalled log collector does: once the pipe is full, its writes wait."""
        self._reading.clear()

    def resume_stdout(self) -> None:
        self._reading.set()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{REALTIME_PATH}"

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while (await self._reading.wait()) and (line := await self.process.stdout.readline()):
            self.raw_stdout.append(line)
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    self.log_lines.append(record)
            self._changed.set()
        self._changed.set()

    async def wait_for_log(
        self, event: str, predicate: Callable[[dict[str, Any]], bool] = lambda r: True, timeout: float | None = None
    ) -> dict[str, Any]:
        """The first daemon stdout record whose `msg` is `event` that satisfies `predicate` (waits for it)."""
        return (await self.wait_for_logs(event, predicate, count=1, timeout=timeout))[0]

    async def wait_for_logs(
        self,
        event: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda r: True,
        *,
        count: int,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """The first `count` stdout records named `event` that satisfy `predicate` (waits for them).

        `timeout` is used as given (callers scale theirs with `seconds()`); without one, 10 s scaled."""
        async with asyncio.timeout(seconds(10.0) if timeout is None else timeout):
            while True:
                found = [r for r in self.log_lines if r.get("msg") == event and predicate(r)]
                if len(found) >= count:
                    return found[:count]
                if self.process.stdout is not None and self.process.stdout.at_eof():
                    raise AssertionError(f"the relay exited before logging {count} x {event}")
                self._changed.clear()
                await self._changed.wait()

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float | None = None) -> int:
        """The exit code; `timeout` as given (callers scale theirs with `seconds()`), without one 15 s scaled."""
        async with asyncio.timeout(seconds(15.0) if timeout is None else timeout):
            return await self.process.wait()

    def rss_kib(self, field_name: str = "VmRSS") -> int:
        """Resident memory of the process from /proc (VmRSS now, or VmHWM: the peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field_name} not in /proc/{self.pid}/status")


def relay_command() -> list[str]:
    return [sys.executable, "-m", "relay"]


@asynccontextmanager
async def running_relay_process(
    tmp_path: Path,
    *,
    upstream: str | None = "sim",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    wait_listening: bool = True,
    preexec_fn: Callable[[], object] | None = None,
) -> AsyncIterator[RelayProcess]:
    """`python -m relay serve --port 0 --log-format json` with files under tmp_path; killed on exit if alive.

    `upstream=None` passes no --upstream (the default upstream; without credentials that means the simulator).

    `env` is added to a copy of the environment from which every RELAY_* and YANDEX_* variable was removed.
    `preexec_fn` runs in the child before `serve` starts (e.g. to lower its RLIMIT_NOFILE).
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}
    clean.update(env or {})
    command = [
        *relay_command(),
        "serve",
        "--port",
        "0",
        *(("--upstream", upstream) if upstream is not None else ()),
        "--log-format",
        "json",
        "--log-dir",
        str(tmp_path / "logs"),
        "--data-dir",
        str(tmp_path / "data"),
        *args,
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean,
        cwd=str(tmp_path),
        preexec_fn=preexec_fn,
    )
    running = RelayProcess(process)
    reader = asyncio.create_task(running._read())
    try:
        if wait_listening:
            listening = await running.wait_for_log("relay.listening", timeout=seconds(20.0))
            running.port = int(listening["port"])
        yield running
    finally:
        # Read stdout again first: a test that failed while it held the collector paused would otherwise wait here
        # forever (asyncio reports the exit only once the pipe, paused at its buffer's limit, has been drained).
        running.resume_stdout()
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), seconds(15.0))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader, 5.0)


# ---- a WebSocket client that can stop reading ---------------------------------------------------------------


class RawWebSocket:
    """A minimal RFC 6455 client on a plain socket, so a test controls exactly when (if ever) it reads."""

    def __init__(self, sock: socket.socket, leftover: bytes, response_head: str) -> None:
        self.sock = sock
        self.buffer = leftover
        self.response_head = response_head

    @property
    def status(self) -> int:
        return int(self.response_head.split(" ", 2)[1])

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str = REALTIME_PATH,
        headers: Mapping[str, str] | None = None,
        rcvbuf: int | None = None,
    ) -> RawWebSocket:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connect so the window the peer sees is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return cls(sock, rest, head.decode("latin-1"))

    async def send_frame(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if length < 4096 else _mask(payload, mask)
        await asyncio.get_running_loop().sock_sendall(self.sock, header + mask + masked)

    async def send_text(self, text: str) -> None:
        await self.send_frame(text.encode(), 0x1)

    async def _fill(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        while len(self.buffer) < n:
            chunk = await loop.sock_recv(self.sock, 1 << 16)
            if not chunk:
                raise EOFError("connection closed")
            self.buffer += chunk

    async def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame (server frames are unmasked and, here, unfragmented)."""
        await self._fill(2)
        first, second = self.buffer[0], self.buffer[1]
        length, offset = second & 0x7F, 2
        if length == 126:
            await self._fill(4)
            length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif length == 127:
            await self._fill(10)
            length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
        await self._fill(offset + length)
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return first & 0x0F, payload

    async def read_until_close(self) -> tuple[int | None, str, int]:
        """Read every frame up to the close frame: (close code or None on EOF, close reason, data frames read)."""
        frames = 0
        while True:
            try:
                opcode, payload = await self.read_frame()
            except (EOFError, ConnectionError):
                return None, "", frames
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:].decode("utf-8", "replace"), frames
            frames += 1

    def close(self) -> None:
        self.sock.close()


def _mask(payload: bytes, mask: bytes) -> bytes:
    import numpy as np

    data = np.frombuffer(payload, dtype=np.uint8)
    key = np.resize(np.frombuffer(mask, dtype=np.uint8), len(data))
    return (data ^ key).tobytes()


def mint_client_token(base_url: str, static_token: str) -> str:
    """`POST /v1/realtime/client_secrets` with a static token, as a backend does (blocking: call it in a thread
    from async code)."""
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/v1/realtime/client_secrets",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {static_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=seconds(10)) as response:
        return str(json.loads(response.read())["value"])

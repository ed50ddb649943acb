"""`python -m bench.splice_floor serve --upstream ws://H:P/... --port P ...`: the floor under any asyncio relay.

A byte-for-byte TCP splice between each client and the upstream, built on asyncio protocols: no HTTP parsing,
no WebSocket framing, no JSON, no log. What it costs per round trip is what the event loop and the four socket
syscalls (read and write on each side) cost on this machine; no relay written for asyncio in CPython can spend
less. It answers `GET /readyz` itself (the harness polls it) and ignores every other relay flag. Bench-only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import cast
from urllib.parse import urlsplit

LIVE: set[Splice] = set()


class Half(asyncio.Protocol):
    """The upstream side of one splice: bytes from the upstream go to the client."""

    def __init__(self, splice: Splice) -> None:
        self.splice = splice

    def data_received(self, data: bytes) -> None:
        client = self.splice.client
        if client is not None:
            client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.splice.close()


class Splice(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.pending = bytearray()
        self.started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)
            return
        self.pending += data
        if self.started:
            return
        if self.pending.startswith(b"GET /readyz"):
            body = json.dumps({"sessions": len(LIVE)}).encode()
            assert self.client is not None
            self.client.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            self.client.close()
            return
        if len(self.pending) >= 4:
            self.started = True
            LIVE.add(self)
            asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(lambda: Half(self), self.host, self.port)
        except OSError:
            self.close()
            return
        self.upstream = cast(asyncio.Transport, transport)
        self.upstream.write(bytes(self.pending))
        self.pending.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        LIVE.discard(self)
        for transport in (self.client, self.upstream):
            if transport is not None and not transport.is_closing():
                transport.close()


async def serve(upstream: str, port: int) -> None:
    target = urlsplit(upstream)
    host, up_port = target.hostname or "127.0.0.1", target.port or 80
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Splice(host, up_port), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.splice_floor")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args, _ignored = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(serve(args.upstream, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

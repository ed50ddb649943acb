"""`python -m bench.aiohttp_upstream_relay serve ...`: the relay CLI with its upstream link swapped for an aiohttp
client WebSocket, to measure what moving `relay/upstream.py` off websockets would buy (a perf proposal; the
relay's own files are untouched: the swap is a patch of `relay.bridge.UpstreamLink` in this process only).

The stand-in keeps `UpstreamLink`'s interface and error mapping (handshake refusal -> UpstreamUnavailable with the
status; a drop -> UpstreamDisconnected), no message size cap, no keepalive pings, no compression.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping

import aiohttp

from relay.errors import UpstreamDisconnected, UpstreamUnavailable


class AiohttpUpstreamLink:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, connect_seconds: float) -> None:
        self._session = session
        self._ws = ws
        self.connect_seconds = connect_seconds
        self._closing: asyncio.Future[None] | None = None

    @classmethod
    async def connect(cls, url: str, headers: Mapping[str, str], *, open_timeout: float) -> AiohttpUpstreamLink:
        started = time.monotonic()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=open_timeout))
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(
                    url,
                    headers=dict(headers),
                    max_msg_size=0,
                    autoping=True,
                    heartbeat=None,
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
                ),
                open_timeout,
            )
        except aiohttp.WSServerHandshakeError as exc:
            await session.close()
            message = f"upstream refused the handshake: HTTP {exc.status} {exc.message}"
            raise UpstreamUnavailable(message, status=exc.status) from None
        except TimeoutError:
            await session.close()
            raise UpstreamUnavailable(f"upstream did not answer within {open_timeout:g} s") from None
        except (OSError, aiohttp.ClientError) as exc:
            await session.close()
            raise UpstreamUnavailable(f"upstream unreachable: {exc.__class__.__name__}: {exc}") from None
        return cls(session, ws, time.monotonic() - started)

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            raise UpstreamDisconnected(f"upstream closed: {exc}", code=self._ws.close_code) from None

    async def recv(self) -> str | bytes | None:
        message = await self._ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            return str(message.data)
        if message.type == aiohttp.WSMsgType.BINARY:
            return bytes(message.data)
        code = self._ws.close_code
        closing = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
        if message.type in closing and code in (1000, 1001):
            return None
        raise UpstreamDisconnected(f"upstream dropped the connection ({code})", code=code or 1006)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self._ws.close(code=code, message=reason.encode())
        finally:
            await self._session.close()

    def abort(self) -> None:
        # No public abort on aiohttp's client socket: closing the session drops its connections.
        self._closing = asyncio.ensure_future(self._session.close())


def main() -> int:
    import relay.bridge

    relay.bridge.UpstreamLink = AiohttpUpstreamLink  # type: ignore[attr-defined,assignment]
    from relay.cli import main as relay_main

    return relay_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())

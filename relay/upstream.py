"""The upstream adapter: one client WebSocket per session (CONTRACT C3), on aiohttp.

Owns only socket I/O and the mapping of failures onto `UpstreamUnavailable` (handshake) and `UpstreamDisconnected`
(mid-session drop, or any close but a normal 1000). No message size cap (a retrieved item may carry minutes of
audio), no keepalive pings of its own (Yandex was seen not to answer them in time; the server's pings are still
answered), no compression. Also builds the upstream URL from the configured one and the client's query
(`upstream_url`), which is pure.

Why aiohttp and not websockets (the stack's first choice): `make bench` measured 6-17% less relay CPU per round
trip with this link in flood, the websockets client spending more per frame (its per-frame mask key is an
os.urandom call) than aiohttp, which the relay already uses for the client side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from relay.errors import UpstreamDisconnected, UpstreamUnavailable


def upstream_url(base: str, model: str | None, client_query: Iterable[tuple[str, str]] = (), forward: Iterable[str] = ()) -> str:
    """The configured URL keeps its own query; `model` is added or replaced; listed client params are added."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "model"]
    allowed = set(forward) - {"model", "relay_events"}
    query += [(k, v) for k, v in client_query if k in allowed]
    if model:
        query.append(("model", model))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def redact_url(url: str) -> str:
    """The URL for logs: no userinfo, and every query value but `model` masked (an operator may put a secret there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = [(k, v if k == "model" else "****") for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*/:"), ""))


_CLOSING = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class UpstreamLink:
    """A connected upstream socket. `recv` returns text frames, or None after a normal (1000) close."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, connect_seconds: float) -> None:
        self._http = http  # one per link: closing it is also how a stuck connection is aborted
        self._ws = ws
        self.connect_seconds = connect_seconds
        self._aborting: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, headers: Mapping[str, str], *, open_timeout: float) -> UpstreamLink:
        started = time.monotonic()
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)
        try:
            async with asyncio.timeout(open_timeout):
                ws = await http.ws_connect(
                    url,
                    headers=dict(headers),
                    max_msg_size=0,
                    autoping=True,
                    heartbeat=None,
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
                )
        except aiohttp.WSServerHandshakeError as exc:
            await http.close()
            raise UpstreamUnavailable(
                f"upstream refused the handshake: HTTP {exc.status} {exc.message}", status=exc.status
            ) from None
        except TimeoutError:
            await http.close()
            raise UpstreamUnavailable(f"upstream did not answer within {open_timeout:g} s") from None
        except (OSError, aiohttp.ClientError, ValueError) as exc:
            await http.close()
            raise UpstreamUnavailable(f"upstream unreachable: {exc.__class__.__name__}: {exc}") from None
        except BaseException:
            await http.close()
            raise
        return cls(http, ws, time.monotonic() - started)

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
        if message.type in _CLOSING and code == 1000:
            return None  # only 1000 is a normal close (C4); 1001 "going away" is a disconnect
        raise UpstreamDisconnected(f"upstream dropped the connection ({code or 'no close frame'})", code=code or 1006)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self._ws.close(code=code, message=reason.encode()[:120])
        finally:
            await self._http.close()

    def abort(self) -> None:
        """Drop the connection without a close handshake (closing the link's HTTP session drops its sockets)."""
        if self._aborting is None:
            self._aborting = asyncio.ensure_future(self._http.close())

"""The upstream adapter: one websockets client connection per session (CONTRACT C3).

Owns only socket I/O and the mapping of websockets' failures onto `UpstreamUnavailable` (handshake) and
`UpstreamDisconnected` (mid-session drop). No message size cap (a retrieved item may carry minutes of audio) and
no keepalive pings (Yandex was seen not to answer them in time). Also builds the upstream URL from the
configured one and the client's query (`upstream_url`), which is pure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidStatus
from websockets.version import version as websockets_version

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


class UpstreamLink:
    """A connected upstream socket. `recv` returns text frames, or None after a normal close."""

    def __init__(self, connection: ClientConnection, connect_seconds: float) -> None:
        self._connection = connection
        self.connect_seconds = connect_seconds

    @classmethod
    async def connect(cls, url: str, headers: Mapping[str, str], *, open_timeout: float) -> UpstreamLink:
        started = time.monotonic()
        try:
            connection = await connect(
                url,
                additional_headers=dict(headers),
                max_size=None,
                max_queue=64,
                ping_interval=None,
                compression=None,
                open_timeout=open_timeout,
                close_timeout=1.0,
                proxy=None,
                user_agent_header=f"realtime-relay websockets/{websockets_version}",
            )
        except InvalidStatus as exc:
            response = exc.response
            raise UpstreamUnavailable(
                f"upstream refused the handshake: HTTP {response.status_code} {response.reason_phrase}",
                status=response.status_code,
            ) from None
        except TimeoutError:
            raise UpstreamUnavailable(f"upstream did not answer within {open_timeout:g} s") from None
        except (OSError, InvalidHandshake, asyncio.IncompleteReadError) as exc:
            raise UpstreamUnavailable(f"upstream unreachable: {exc.__class__.__name__}: {exc}") from None
        return cls(connection, time.monotonic() - started)

    async def send(self, text: str) -> None:
        try:
            await self._connection.send(text)
        except ConnectionClosed as exc:
            raise UpstreamDisconnected(f"upstream closed: {exc}", code=exc.rcvd.code if exc.rcvd else None) from None

    async def recv(self) -> str | bytes | None:
        try:
            return await self._connection.recv()
        except ConnectionClosed as exc:
            if isinstance(exc, ConnectionClosedOK) and exc.rcvd is not None and exc.rcvd.code == 1000:
                return None  # only 1000 is a normal close (C4); 1001 "going away" is a disconnect
            raise UpstreamDisconnected(
                f"upstream dropped the connection ({exc.rcvd.code if exc.rcvd else 'no close frame'})",
                code=exc.rcvd.code if exc.rcvd else 1006,
            ) from None

    @property
    def close_code(self) -> int | None:
        return self._connection.close_code

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.close(code, reason)

    def abort(self) -> None:
        self._connection.transport.abort()

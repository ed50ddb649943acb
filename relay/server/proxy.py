"""The `serve` side's proxy of `/v1/conversations` and everything under it to the REST base (see docs/history.md,
"The REST proxy of `serve`", and docs/lifecycle.md, "The REST proxy").

Boundary: one aiohttp handler body. It forwards the method (GET, POST and DELETE only: anything else is 405
before the operator's key goes anywhere), the path below `/v1`, the raw query (repeated
`include[]` and all, byte for byte) and the streamed request body to `rest_base`, with the relay's credentials
in place of the client's; it streams the status, headers and body back. Client authentication happens before
this (the server mounts it behind the same auth as the WebSocket). On the way up only the headers in
`FORWARDED_UP` pass (content negotiation, body framing, OpenAI's request metadata); on the way down hop-by-hop
headers, `Set-Cookie` and the API's own `Access-Control-*` are dropped (the relay decides CORS itself).
Bodies are not decompressed, so `Content-Encoding` and `Content-Length` stay true. Never
retries: a client's own retry policy decides. An unreachable REST base -> 502, no answer in time -> 504, both
with an OpenAI-shaped error body; once the headers are sent, a stream broken at either end (the API's, or a client
that left) cuts the client's connection and is logged as a warning, never as a server error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote

import aiohttp
import structlog
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from relay.server.replies import openai_error

PROXY_PREFIX: Final = "/v1"
PROXIED_ROOT: Final = "/v1/conversations"
DEFAULT_PROXY_TIMEOUT: Final = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
STREAM_CHUNK_BYTES: Final = 64 * 1024

# RFC 9110 7.6.1 hop-by-hop fields, plus the ones that must never cross the relay in either direction.
HOP_BY_HOP: Final = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
NOT_FORWARDED_UP: Final = HOP_BY_HOP | {"host", "authorization", "cookie", "content-length", "expect"}
NOT_FORWARDED_DOWN: Final = HOP_BY_HOP | {"set-cookie"}
# The API's CORS answer is not the relay's: the relay sends its own for allowed_origins.
NOT_FORWARDED_DOWN_PREFIXES: Final = ("access-control-",)
PROXIED_METHODS: Final = frozenset({"GET", "POST", "DELETE"})
# The client headers that reach the API with the operator's key; everything else stays behind.
FORWARDED_UP: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-type",
        "content-encoding",
        "user-agent",
        "idempotency-key",
        "openai-beta",
        "openai-organization",
        "openai-project",
        "x-request-id",
        "x-client-request-id",
        "if-match",
        "if-none-match",
    }
)
# aiohttp would add its own defaults for these when the client sent none; an `Accept-Encoding` the client never
# sent could make the API compress a body that is then passed through undecoded to a client that cannot read it.
CLIENT_ONLY_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

_log = structlog.get_logger()


def _connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    """Fields named in `Connection: a, b` are hop-by-hop for this message too (RFC 9110 7.6.1)."""
    return {token.strip().lower() for value in headers.getall(hdrs.CONNECTION, []) for token in value.split(",") if token.strip()}


def _filtered(
    headers: CIMultiDictProxy[str],
    dropped: frozenset[str],
    only: frozenset[str] | None = None,
    dropped_prefixes: tuple[str, ...] = (),
) -> CIMultiDict[str]:
    """The fields of `headers` not in `dropped`, not starting with one of `dropped_prefixes`, not listed by the
    message's `Connection`, and (with `only`) named in `only`."""
    also = _connection_listed(headers)
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in dropped or lowered in also or lowered.startswith(dropped_prefixes):
            continue
        if only is not None and lowered not in only:
            continue
        kept.add(name, value)
    return kept


def upstream_url(request: web.Request, rest_base: str) -> URL | None:
    """The REST base URL for this request, or None when its path is not under `/v1/conversations`.

    Works on the raw (still percent-encoded) path so ids reach the API exactly as the client encoded them;
    dot segments are refused so a client can never climb out of `/conversations` with the relay's key.
    """
    raw_path = request.rel_url.raw_path
    if not (raw_path == PROXIED_ROOT or raw_path.startswith(PROXIED_ROOT + "/")):
        return None
    tail = raw_path[len(PROXY_PREFIX) :]
    # Decoded first: an upstream (or a proxy in front of it) that decodes %2F or treats "\\" as "/" before
    # resolving dot segments must not get a chance to.
    decoded = unquote(tail).replace("\\", "/")
    # Servlet-style servers drop a segment's ";parameters" before resolving dot segments, so "..;x" climbs too.
    if any(segment.split(";", 1)[0] in (".", "..") for segment in decoded.split("/")):
        return None
    url = rest_base.rstrip("/") + tail
    query = request.rel_url.raw_query_string
    if query:
        url += "?" + query
    return URL(url, encoded=True)


async def proxy_conversations(
    request: web.Request,
    *,
    http: aiohttp.ClientSession,
    rest_base: str,
    auth_header: Mapping[str, str],
    client_timeout: aiohttp.ClientTimeout = DEFAULT_PROXY_TIMEOUT,
) -> web.StreamResponse:
    """Forward `request` to the REST base with `auth_header` as its only credentials; stream the answer."""
    if request.method not in PROXIED_METHODS:
        refused = openai_error(405, f"{request.method} is not proxied", "method_not_allowed")
        refused.headers["Allow"] = ", ".join(sorted(PROXIED_METHODS))
        return refused
    target = upstream_url(request, rest_base)
    if target is None:
        return openai_error(404, f"No such endpoint: {request.path}", "not_found")
    headers = _filtered(request.headers, NOT_FORWARDED_UP, FORWARDED_UP)
    headers.update(auth_header)
    length = request.content_length
    body: aiohttp.StreamReader | None = None
    if request.body_exists:
        body = request.content
        if length is not None:
            # Kept so the API sees the same framing; aiohttp would otherwise send the stream chunked.
            headers[hdrs.CONTENT_LENGTH] = str(length)
    try:
        async with http.request(
            request.method,
            target,
            headers=headers,
            data=body,
            allow_redirects=False,
            auto_decompress=False,
            timeout=client_timeout,
            skip_auto_headers=CLIENT_ONLY_HEADERS,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(_filtered(upstream.headers, NOT_FORWARDED_DOWN, dropped_prefixes=NOT_FORWARDED_DOWN_PREFIXES))
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(STREAM_CHUNK_BYTES):
                    await response.write(chunk)
                await response.write_eof()
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                # Either end went away mid-answer: the API's stream broke (ClientError, a read timeout) or the
                # client left (a plain ConnectionError when its socket dies while a write waits to drain). Headers
                # are gone already: the only honest signal left is a cut connection, and leaving `async with`
                # lets go of the API's answer.
                _log.warning("relay.rest_proxy_broken", method=request.method, path=request.path, error=exc.__class__.__name__)
                if request.transport is not None:
                    request.transport.abort()
            return response
    except TimeoutError:
        _log.warning("relay.rest_proxy_failed", method=request.method, path=request.path, error="timeout")
        return openai_error(504, "The Conversations REST API did not answer in time.", "upstream_timeout", "server_error")
    except aiohttp.ClientError as exc:
        _log.warning("relay.rest_proxy_failed", method=request.method, path=request.path, error=exc.__class__.__name__)
        return openai_error(
            502, f"The Conversations REST API is unreachable: {exc.__class__.__name__}.", "upstream_unavailable", "server_error"
        )

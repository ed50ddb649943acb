"""Who may call which `serve` route (see docs/security.md): the per-request checks every route goes through.

Boundary: request -> allowed or refused, nothing else. `requires_auth` wraps a route with the `allowed_origins` check
and client auth, and admits minted tokens only where they are scoped to (`minted=False` routes refuse them); it
leaves the caller's `Grant` on the request under `GRANT`. `cors` and `cors_headers` answer cross-origin pages for
the origins in `allowed_origins` only. `client_remote` names the client behind trusted proxies, and
`may_read_session_files` decides any per-session file route. The Host/Origin rule of a relay with auth off is the
`relay.server.access.loopback_guard` middleware, which the app factory mounts in front of these.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from relay.server import access
from relay.server.access import Handler
from relay.server.auth import Grant, token_from_request
from relay.server.replies import openai_error
from relay.server.state import STATE

log = structlog.get_logger()

GRANT: web.RequestKey[Grant] = web.RequestKey("relay_grant", Grant)  # set on token-guarded routes when auth is on

# Routes a page on another origin may call (CORS): the client module and its siblings, the auth probe, saved
# audio and the conversations proxy. WebSocket upgrades need no CORS; `allowed_origins` still applies to them.
_CORS_PREFIXES = ("/static/", "/relay/", "/v1/conversations")
_CORS_ALLOW_HEADERS = "Authorization, Content-Type"
_CORS_ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"


def authorized(request: web.Request) -> bool:
    return _grant(request) is not False


def _grant(request: web.Request) -> Grant | bool | None:
    """The request's grant; None when auth is off (everyone may); False for a missing or bad token."""
    state = request.app[STATE]
    if not state.auth_required:
        return None
    token = token_from_request(request.headers, offered_protocols(request))
    grant = state.authority.grant(token)
    return False if grant is None else grant


def offered_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def origin_allowed(request: web.Request) -> bool:
    """No Origin (server-side callers), no list, a listed origin, or the relay's own page."""
    allowed = request.app[STATE].settings.allowed_origins
    origin = request.headers.get("Origin")
    return not allowed or origin is None or origin in allowed or access.is_own_origin(origin, request.headers.get("Host"))


def refuse_foreign_origin(request: web.Request) -> web.Response | None:
    """The 403 (logged) for an Origin outside `allowed_origins`, else None. Server-side callers send no Origin."""
    if origin_allowed(request):
        return None
    log.warning("relay.origin_refused", origin=request.headers.get("Origin"), path=request.path)
    return openai_error(403, "origin not allowed", "origin_not_allowed")


def _cors_origin(request: web.Request) -> str | None:
    """The Origin to echo in Access-Control-Allow-Origin, or None when the request gets no CORS headers."""
    origin = request.headers.get("Origin")
    if origin is None or not request.path.startswith(_CORS_PREFIXES):
        return None
    # Never by default: a page on another origin is served only when the operator listed that origin.
    return origin if origin in request.app[STATE].settings.allowed_origins else None


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Cross-origin embedding (README): preflights are answered here, before auth and routing."""
    origin = _cors_origin(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if origin is None:
            return web.Response(status=403)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": _CORS_ALLOW_METHODS,
                "Access-Control-Allow-Headers": _CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    return await handler(request)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for streamed responses (the REST proxy, files) as well as plain ones."""
    origin = _cors_origin(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"


def requires_auth(handler: Handler, *, minted: bool = True, session_files: bool = False) -> Handler:
    """Guard a route with client auth; `minted=False` admits static tokens only (minted ones are scoped).

    `session_files` (the per-session file routes): a minted token past its expiry is still admitted while a
    session it opened runs on this relay, since expiry limits new sessions only and a running session's page
    keeps playing its saved audio; `may_read_session_files` then limits it to the sessions it opened.
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        if (refused := refuse_foreign_origin(request)) is not None:
            return refused
        grant = _grant(request)
        if grant is False and session_files:
            grant = _grant_of_a_running_session(request)
        if grant is False:
            # Never log the token itself.
            log.warning("relay.auth_failed", path=request.path, remote=client_remote(request))
            return openai_error(401, "missing or invalid client token", "invalid_api_key")
        assert grant is not True
        if grant is not None and grant.minted and not minted:
            log.warning("relay.auth_scope_refused", path=request.path, remote=client_remote(request))
            return openai_error(403, "a minted client token cannot use this route", "token_scope")
        if grant is not None:
            request[GRANT] = grant
        return await handler(request)

    return guarded


def presented_minted_grant(request: web.Request, *, expired_ok: bool = False) -> Grant | None:
    """The grant of the minted token the request presents (header or subprotocol), whatever auth requires;
    None when it presents none or one that does not verify (`expired_ok`: past its expiry still verifies)."""
    token = token_from_request(request.headers, offered_protocols(request))
    return request.app[STATE].authority.minted_grant(token, expired_ok=expired_ok) if token else None


def _grant_of_a_running_session(request: web.Request) -> Grant | bool:
    """The grant of an expired minted token that still has a session running here, else False."""
    grant = presented_minted_grant(request, expired_ok=True)
    if grant is None or request.app[STATE].token_sessions.get(access.token_digest(grant.token), 0) <= 0:
        return False
    return grant


def client_remote(request: web.Request) -> str | None:
    """The client's address: the peer, or the X-Forwarded-For hop named by a trusted proxy (forwarded_allow_ips)."""
    return access.client_address(
        request.remote, request.headers.get("X-Forwarded-For"), request.app[STATE].proxies
    )


def may_read_session_files(request: web.Request, session_id: str) -> bool:
    """Whether this request may read a per-session file (saved audio, recordings) of `session_id`.

    Auth off or a static token: yes. A minted token: only for sessions it opened, as recorded in the session
    folder, so the answer is the same on every replica sharing data_dir. `session_id` must already be checked.
    """
    grant = request.get(GRANT)
    if grant is None or not grant.minted:
        return True
    folder = access.session_folder(request.app[STATE].settings.data_dir, session_id)
    return access.session_opener_matches(folder, grant.token)

"""The `serve` routes other than the realtime socket: their handlers, not where they are mounted (that is the app
factory, `relay.server.app.create_app`).

Boundary: one handler per route, each answering from the request and `STATE`. `POST /v1/realtime/client_secrets`
mints a scoped token (static tokens only, body bounded before it is buffered); `GET /relay/auth` probes a token;
`/relay/sessions/{sid}/items/{item}.wav` and `/relay/sessions/{sid}/recording.wav` serve a session's files under
`data_dir` within the token's scope (see docs/security.md); `/healthz`, `/readyz` and `/metrics` report (see
docs/lifecycle.md); `/` serves the page; `/v1/conversations...` hands over to `relay.server.proxy`.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any, Final

import orjson
import structlog
from aiohttp import hdrs, web

from relay.core.items import SESSION_ID_RE, safe_item_id
from relay.credentials import Credentials
from relay.errors import ConfigError
from relay.recording import RECORDING_FILE
from relay.server.auth import TokenTooLarge, token_from_request
from relay.server.guards import authorized, client_remote, may_read_session_files, origin_allowed, refuse_foreign_origin
from relay.server.replies import json_reply, openai_error
from relay.server.state import STATE

log = structlog.get_logger()

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"  # relay/static/
# `client_secrets` bodies are small JSON objects; a larger one is refused before it is buffered.
MAX_CLIENT_SECRETS_BODY: Final = 32 * 1024


async def client_secrets(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    # The same `allowed_origins` check as every other token-guarded route: a page on a foreign origin holding a
    # static token must not mint tokens either.
    if (refused := refuse_foreign_origin(request)) is not None:
        return refused
    token = token_from_request(request.headers, ())
    if state.auth_required and (token is None or not state.authority.is_static(token)):
        log.warning("relay.auth_failed", path=request.path, remote=request.remote)
        return openai_error(401, "client_secrets needs a static client token", "invalid_api_key")
    ttl: int | None = None
    pinned: dict[str, Any] | None = None
    if request.can_read_body:
        if (request.content_length or 0) > MAX_CLIENT_SECRETS_BODY:
            return openai_error(413, f"the body is over {MAX_CLIENT_SECRETS_BODY} bytes", "body_too_large")
        try:
            # A body trickled in a byte at a time would hold the connection (and a slot) for as long as the
            # client likes: it gets as long as a request's headers do.
            async with asyncio.timeout(state.settings.header_timeout_seconds):
                raw = await _read_at_most(request, MAX_CLIENT_SECRETS_BODY)
        except TimeoutError:
            log.warning("relay.request_body_timeout", path=request.path, remote=client_remote(request))
            return openai_error(408, "the body did not arrive in time", "request_timeout")
        if raw is None:
            return openai_error(413, f"the body is over {MAX_CLIENT_SECRETS_BODY} bytes", "body_too_large")
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return openai_error(400, "the body is not valid JSON", "invalid_json")
            if not isinstance(body, dict):
                return openai_error(400, "the body must be a JSON object", "invalid_json")
            expires = body.get("expires_after")
            if expires is not None:
                if not isinstance(expires, dict):
                    return openai_error(400, "expires_after must be an object", "invalid_value")
                seconds = expires.get("seconds")  # absent: the default lifetime, as OpenAI's endpoint does
                if seconds is not None:
                    if not isinstance(seconds, int) or isinstance(seconds, bool):
                        return openai_error(400, "expires_after.seconds must be an integer", "invalid_value")
                    ttl = seconds
            session = body.get("session")
            if session is not None:
                if not isinstance(session, dict):
                    return openai_error(400, "session must be an object", "invalid_value")
                pinned = session
    try:
        minted = state.authority.mint(ttl, session=pinned)
    except TokenTooLarge as exc:
        return openai_error(413, str(exc), "token_too_large")
    except ValueError as exc:
        return openai_error(400, str(exc), "invalid_value")
    return json_reply(200, {"value": minted.value, "expires_at": minted.expires_at})


async def _read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (read no further: a chunked body cannot make us buffer it)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


async def auth_probe(request: web.Request) -> web.StreamResponse:
    if not origin_allowed(request) or not authorized(request):
        return web.Response(status=401)
    return web.Response(status=204)


def _no_such(what: str) -> web.Response:
    """The one 404 of the session-file routes: a bad id, an unknown one, another session's and a missing file
    get the same answer."""
    return openai_error(404, f"no such {what}", "not_found")


# A suffix range of zero bytes can never be satisfied (RFC 9110, 14.1.1).
_EMPTY_SUFFIX_RANGE: Final = re.compile(r"\s*bytes\s*=\s*-0+\s*", re.IGNORECASE)


async def _session_file(request: web.Request, session_id: str, name: str, what: str) -> web.StreamResponse:
    """One file of a session folder: ids already matched whole by the caller; the token's scope checked (a
    minted token reads only the sessions it opened, docs/security.md); nothing outside data_dir ever served.
    Every refusal is the same 404 as a missing file, so a token learns nothing of other sessions. FileResponse
    answers a single Range, so a browser can seek; several ranges (no multipart answers here) or a unit other than
    bytes get the whole file with 200, as RFC 9110 lets a server that ignores Range do, and an empty suffix range
    or a malformed byte range gets 416."""
    not_found = _no_such(what)
    if not may_read_session_files(request, session_id):
        log.warning("relay.auth_scope_refused", path=request.path, remote=client_remote(request))
        return not_found
    root = (Path(request.app[STATE].settings.data_dir) / "sessions").resolve()
    path = (root / session_id / name).resolve()
    if root not in path.parents or not path.is_file():
        return not_found
    headers = {"Content-Type": "audio/wav", "Cache-Control": "no-store"}
    wanted = request.headers.get(hdrs.RANGE)
    if wanted is None:
        return web.FileResponse(path, headers=headers)
    one_byte_range = "," not in wanted and wanted[:6].lower() == "bytes="
    if _EMPTY_SUFFIX_RANGE.fullmatch(wanted) or (one_byte_range and not _readable_range(request)):
        size = path.stat().st_size
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}", "Cache-Control": "no-store"})
    if one_byte_range:
        return web.FileResponse(path, headers=headers)
    return await _whole_file(request, path, headers, not_found)


def _readable_range(request: web.Request) -> bool:
    """Whether aiohttp reads the request's one byte range. Asked here: FileResponse answers a malformed one with
    416 too, but logs a traceback doing it."""
    try:
        request.http_range  # noqa: B018 - read for the ValueError it raises
    except ValueError:
        return False
    return True


_CHUNK_BYTES: Final = 256 * 1024


async def _whole_file(request: web.Request, path: Path, headers: dict[str, str], not_found: web.Response) -> web.StreamResponse:
    """The whole file with 200, its Range header ignored. Streamed here: a FileResponse would read the request's
    Range again when aiohttp finishes the response, and log a traceback for the one it could not honour."""
    loop = asyncio.get_running_loop()
    try:
        file = await loop.run_in_executor(None, path.open, "rb")
    except OSError:  # gone (retention, the session's end) since it was found
        return not_found
    with file:
        size = os.fstat(file.fileno()).st_size  # what the headers promise, even if the file grows (a live recording)
        response = web.StreamResponse(headers={**headers, "Accept-Ranges": "bytes"})
        response.content_length = size
        try:
            await response.prepare(request)
            left = 0 if request.method == hdrs.METH_HEAD else size
            while left > 0:
                chunk = await loop.run_in_executor(None, file.read, min(_CHUNK_BYTES, left))
                if not chunk:  # it shrank under the download: the body is short, the connection cannot go on
                    response.force_close()
                    break
                await response.write(chunk)
                left -= len(chunk)
            await response.write_eof()
        except ConnectionError:  # the client left mid-download: nothing to answer, nothing to log
            pass
    return response


async def saved_audio(request: web.Request) -> web.StreamResponse:
    """An item's saved WAV (docs/retrieve-after-done.md)."""
    session_id = request.match_info["session_id"]
    item_id = request.match_info["item_id"]
    if not SESSION_ID_RE.fullmatch(session_id) or not safe_item_id(item_id):
        return _no_such("saved audio")
    return await _session_file(request, session_id, f"{item_id}.wav", "saved audio")


async def session_recording(request: web.Request) -> web.StreamResponse:
    """A session's recording (docs/recording.md), under the same id and scope rules as saved audio."""
    session_id = request.match_info["session_id"]
    if not SESSION_ID_RE.fullmatch(session_id):
        return _no_such("recording")
    return await _session_file(request, session_id, RECORDING_FILE, "recording")


async def no_such_session_file(request: web.Request) -> web.StreamResponse:
    """Any other path under /relay/sessions/ (an empty item id, one with a character no route takes): the same
    404 as an unknown id, not the server's plain one, so an id's shape tells nothing."""
    return _no_such("saved audio")


async def healthz(request: web.Request) -> web.StreamResponse:
    return json_reply(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if state.draining:
        return json_reply(503, {"status": "draining", "sessions": state.live_sessions()})
    return json_reply(200, {"status": "ready", "sessions": state.live_sessions()})


async def metrics(request: web.Request) -> web.StreamResponse:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return web.Response(text="realtime-relay: the page is not installed; the API is at /v1/realtime\n")
    return web.FileResponse(page)


async def conversations_proxy(request: web.Request) -> web.StreamResponse:
    from relay.server.proxy import proxy_conversations

    state = request.app[STATE]
    assert state.http is not None
    try:
        credentials = Credentials.load(state.settings)  # re-read per request: a rotated token is picked up
    except ConfigError as exc:  # the credentials file went bad while serving: the client gets a plain answer
        log.error("relay.rest_proxy_credentials_unusable", error=str(exc))  # where and why: for the operator only
        return openai_error(
            500,
            "the relay's upstream credentials are unusable; its log says why",
            "upstream_credentials_unusable",
            "server_error",
        )
    return await proxy_conversations(
        request, http=state.http, rest_base=state.rest_base, auth_header=credentials.authorization_header()
    )

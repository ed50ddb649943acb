"""The `GET /v1/realtime` route: one client socket <-> one upstream session (see docs/lifecycle.md).

Boundary: from an authorised upgrade (the `Grant` left by `requires_auth`) to a running `SessionBridge`. It holds
the per-token session count (`token_max_sessions`), turns upgrades away while draining (503 + Retry-After),
accepts the socket within the client message limit, chooses the session's policy (a minted token's pinned session
under the operator's pins) and environment, enforces `max_sessions`, and records which minted token opened the
session so its files stay readable with it. The session itself is the bridge's; this module has no session logic.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from relay.bridge import SessionBridge, new_session_id
from relay.core import events as ev
from relay.core.frames import deep_merge
from relay.links.base import UpstreamTarget
from relay.links.client import WebSocketClient
from relay.outcome import EndReason
from relay.server import access
from relay.server.auth import Grant
from relay.server.guards import GRANT, client_remote, offered_protocols, presented_minted_grant
from relay.server.replies import openai_error
from relay.server.state import STATE
from relay.wiring import session_environment, session_policy, upstream_target

log = structlog.get_logger()


async def realtime(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    grant = request.get(GRANT)
    if grant is None and not state.auth_required:
        # Auth is off, so nobody needs a token; one minted here (client_secrets answers anyone then) still
        # carries what it was minted with: its pinned session and its session limit.
        grant = presented_minted_grant(request)
    token_key = access.token_digest(grant.token) if grant is not None and grant.minted else None
    if token_key is not None:
        if state.token_sessions[token_key] >= state.settings.token_max_sessions:
            limit = state.settings.token_max_sessions
            log.warning("relay.token_sessions_exceeded", remote=client_remote(request), limit=limit)
            return openai_error(429, f"this token already has {limit} sessions open", "too_many_sessions")
        state.token_sessions[token_key] += 1  # held from here, so concurrent upgrades cannot both slip through
    released = False

    def release_token() -> None:
        """The token's session is over (or never started): its place is free again. Once."""
        nonlocal released
        if token_key is not None and not released:
            released = True
            state.token_sessions[token_key] -= 1
            if state.token_sessions[token_key] <= 0:
                del state.token_sessions[token_key]

    try:
        return await _realtime(request, grant, release_token)
    finally:
        release_token()


async def _realtime(request: web.Request, grant: Grant | None, on_ended: Callable[[], None]) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.settings
    if state.draining:
        return web.Response(
            status=503, text="relay is draining", headers={"Retry-After": str(max(1, int(settings.drain_seconds)))}
        )
    offered = offered_protocols(request)
    ws = web.WebSocketResponse(
        protocols=("realtime",) if "realtime" in offered else (),
        # aiohttp refuses a message of exactly max_msg_size; a frame of exactly the limit is allowed (docs/forwarding.md).
        max_msg_size=settings.max_client_message_bytes + 1,
        autoping=True,
        heartbeat=None,
        timeout=5.0,  # a close handshake that does not finish in 5 s is abandoned (docs/lifecycle.md)
        compress=False,
    )
    await ws.prepare(request)
    state.sockets.add(ws)
    # After close 1009 up to 4x the limit of the oversized frame is read and dropped (see docs/client-input.md).
    client = WebSocketClient(
        ws,
        settings.max_client_backlog_bytes,
        transport=request.transport,
        oversize_discard_bytes=4 * settings.max_client_message_bytes,
    )
    query = request.query
    client_model = query.get("model")
    relay_events = query.get("relay_events", "") in ("1", "true", "yes")
    session_id = new_session_id()
    started_info: dict[str, Any] = {
        "client_model": client_model,
        "remote": client_remote(request),
        "relay_events": relay_events,
        "user_agent": request.headers.get("User-Agent"),
    }

    def target() -> UpstreamTarget:
        return upstream_target(
            settings,
            state.upstream_base,
            simulator=state.simulator is not None,
            client_model=client_model,
            client_query=query.items(),
        )

    policy = session_policy(settings, relay_events=relay_events, tools=state.tools)
    if grant is not None and grant.session:
        # The session posted to client_secrets is pinned for this token's sessions; the operator's pins win.
        policy = dataclasses.replace(policy, pinned_session=deep_merge(grant.session, policy.pinned_session))
    env = session_environment(settings, state.event_log, metrics=state.metrics, kept_audio=state.kept_audio)
    bridge = SessionBridge(
        client,
        target,
        policy,
        env,
        session_id=session_id,
        started_info=started_info,
        max_session_seconds=settings.max_session_seconds,
    )
    spool = state.spool.session(env.files.folder(bridge.session_id)) if state.spool is not None else None
    bridge.core.spool_owner = spool
    try:
        if state.live_sessions() >= settings.max_sessions:
            await bridge.refuse(
                EndReason.TOO_MANY_SESSIONS, ev.CODE_TOO_MANY_SESSIONS, "the relay is at max_sessions; try again later", 1013
            )
            return ws
        state.add_bridge(bridge)
        bridge.on_ended = on_ended
        try:
            if grant is not None and grant.minted:
                # Per-session files stay readable with the opening token on any replica sharing data_dir.
                try:
                    await asyncio.to_thread(
                        access.record_session_opener, access.session_folder(settings.data_dir, session_id), grant.token
                    )
                except OSError as exc:  # the session goes on; only its files stay closed to the token
                    log.warning("relay.session_opener_not_recorded", session_id=session_id, error=str(exc))
            await bridge.run()
        finally:
            state.discard_bridge(bridge)
    finally:
        await client.stop_writer()
        if spool is not None and state.spool is not None:  # nothing of its kept audio outlives the session
            await state.spool.release(spool)
        state.heap.session_ended()
    return ws

"""Drive one session: a client side <-> `RelaySession` <-> the upstream, with the event log as the tap.

One task reads the client; upstream messages arrive by callback from the upstream link's read path. Each is fed
to the pure core, then `_flush` carries out its decisions in one place (upstream frames, client frames, log
records, WAVs to save, retrieve timers), synchronously: both sockets are written at once (each side bounds what
may wait for its peer), so a frame crosses the relay without a task wake-up. Whatever ends first
(the client, the upstream, a failure seen inside a callback, an outside stop) decides the outcome; then pending
retrieves get their short grace, both sockets close and `relay.session_ended` is written.
The client side is a small protocol so that `serve` (a WebSocket) and `mic` (the local audio loop) share all of
this. I/O here is limited to awaiting the two sides and handing WAV writes to a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import random
import secrets
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from audio import pcm as pcmlib
from relay.core import events as ev
from relay.core.keptaudio import KeptAudioBudget
from relay.core.outbox import AudioToSave
from relay.core.policy import SessionPolicy
from relay.core.resume import ResumePolicy, backoff_delays, is_resumable
from relay.core.session import RelaySession
from relay.core.toolset import ToolCall, ToolOutcome
from relay.credentials import Credentials, qualify_model, resolve_model
from relay.errors import ConfigError, UpstreamDisconnected, UpstreamUnavailable
from relay.eventlog.writer import EventLog, SessionEventLog
from relay.links.upstream import UpstreamLink, redact_url, upstream_url
from relay.metrics import RelayMetrics
from relay.recording import RECORDING_SAVED, RecordingOptions, SessionRecorder, recording_path, recording_url
from relay.settings import Settings
from relay.tools.config import load_tools
from relay.tools.runner import SessionTools

log = structlog.get_logger()

# An upstream that stops reading while this much waits for it has stalled: the session ends as disconnected.
UPSTREAM_BACKLOG_LIMIT_BYTES = 32 * 1024 * 1024
CLOSE_GRACE_S = 1.0  # the longest the relay waits on anything once a session is ending (C4: within 1 s)


def new_session_id() -> str:
    return "sess_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")


class EndReason(enum.StrEnum):
    CLIENT_CLOSED = "client_closed"
    UPSTREAM_CLOSED = "upstream_closed"
    UPSTREAM_DISCONNECTED = "upstream_disconnected"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    CLIENT_TOO_SLOW = "client_too_slow"
    DRAIN = "drain"
    TOO_MANY_SESSIONS = "too_many_sessions"
    EXPIRED = "expired"
    ERROR = "error"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 us, and there is one per client frame
class ClientFrame:
    """What the client side produced: a text frame, a binary frame (its size), or the end (close code)."""

    text: str | None = None
    binary_size: int | None = None
    closed: bool = False
    close_code: int | None = None


class _EndedBeforeConnect(Exception):
    """The client left, or the relay was told to stop, while the upstream handshake was still running."""

    def __init__(self, reason: EndReason, close_code: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


class ClientSide(Protocol):
    """The client half of a session: a WebSocket for `serve`, the local audio loop for `mic`."""

    async def receive(self) -> ClientFrame: ...

    def send(self, text: str) -> bool:
        """Queue a frame without waiting; False when the client's backlog is over its bound (too slow)."""
        ...

    async def close(self, code: int, reason: str, *, grace: float) -> int | None:
        """Send what is queued (within `grace` seconds), then close with `code`; returns the close code used.

        Must finish in bounded time: a close handshake the peer does not complete within 5 s aborts the
        connection (C4)."""
        ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class UpstreamTarget:
    url: str
    headers: Mapping[str, str]
    connect_timeout: float


@dataclass
class SessionOutcome:
    session_id: str
    reason: EndReason
    client_close_code: int | None
    upstream_close_code: int | None
    counts: dict[str, int]
    log_dropped: int


@dataclass
class BridgeEnvironment:
    """Process-wide things a session uses; shared by every session of a server."""

    event_log: EventLog
    data_dir: Path
    retrieve_timeout: float
    metrics: RelayMetrics | None = None
    audio_url: Callable[[str, str], str] = field(
        default=lambda session_id, item_id: f"/relay/sessions/{session_id}/items/{item_id}.wav"
    )
    # Audio kept for fallback saves, bounded across sessions: pass the process's one budget (`serve` does).
    kept_audio: KeptAudioBudget = field(default_factory=KeptAudioBudget)
    # Session recording (docs/recording.md): None = off.
    recording: RecordingOptions | None = None


def session_policy(settings: Settings, *, relay_events: bool) -> SessionPolicy:
    """The operator's settings the core needs, for one session (`serve` and `mic` alike)."""
    return SessionPolicy(
        retrieve_after_done=settings.retrieve_after_done,
        clamp_truncate=settings.clamp_truncate,
        pinned_session=dict(settings.pinned_session),
        blocked_client_events=frozenset(settings.blocked_client_events),
        max_item_audio_seconds=settings.max_item_audio_seconds,
        relay_events=relay_events,
        tools=load_tools(settings),
        resume=ResumePolicy(
            attempts=settings.upstream_resume_attempts,
            buffer_seconds=settings.resume_buffer_seconds,
            history_max_bytes=settings.resume_history_max_bytes,
            gap_max_bytes=settings.max_client_backlog_bytes,
        )
        if settings.upstream_resume
        else None,
    )


def upstream_target(
    settings: Settings,
    base_url: str,
    *,
    simulator: bool,
    client_model: str | None = None,
    client_query: Iterable[tuple[str, str]] = (),
) -> UpstreamTarget:
    """Where a session connects, with which credentials and model (C3). Reads the credentials afresh: call it on
    every connect so a rotated token is used. The client's model counts only with `allow_client_model`; the
    embedded simulator needs no folder-qualified model."""
    credentials = Credentials.load(settings)
    if settings.allow_client_model and client_model:
        model = qualify_model(client_model, credentials.folder_id)
    elif simulator and not settings.model:
        model = "sim"
    else:
        model = resolve_model(settings, credentials)
    url = upstream_url(base_url, model, client_query, settings.forward_query_params)
    return UpstreamTarget(url, credentials.authorization_header(), settings.upstream_connect_timeout_seconds)


class SessionBridge:
    def __init__(
        self,
        client: ClientSide,
        target: UpstreamTarget | Callable[[], UpstreamTarget],
        policy: SessionPolicy,
        env: BridgeEnvironment,
        *,
        session_id: str | None = None,
        started_info: Mapping[str, Any] | None = None,
        max_session_seconds: float = 0.0,
    ) -> None:
        self.client = client
        self._target = target
        self.env = env
        self.session_id = session_id or new_session_id()
        self.core = RelaySession(policy, env.kept_audio)
        self.log: SessionEventLog = env.event_log.open_session(self.session_id)
        self._started_info = dict(started_info or {})
        self._max_session_seconds = max_session_seconds
        self._upstream: UpstreamLink | None = None
        # Set by `_fail` (client too slow, upstream stalled or dropped, a relay bug): the session must end.
        self._failure: asyncio.Future[Any] | None = None
        # Retrieve timers by item id; each leaves when it fires or when its answer comes (per-turn state is freed).
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._stop: asyncio.Future[EndReason] | None = None
        # Client frames read while the upstream handshake runs, and a receive still in flight when it ends.
        self._early_frames: deque[ClientFrame] = deque()
        self._pending_receive: asyncio.Task[ClientFrame] | None = None
        self.outcome: SessionOutcome | None = None
        self._tools = (
            SessionTools(policy.tools, self.session_id, self._tool_finished, on_metrics=self._count_tool)
            if policy.tools is not None
            else None
        )
        # Upstream resume: set while a new upstream is being rebuilt (done when the core says so), and once every
        # attempt after a drop has failed (the session then ends as disconnected).
        self._restored: asyncio.Future[None] | None = None
        self._resume_exhausted = False
        self.recorder: SessionRecorder | None = None  # observes the session once the upstream is connected

    # ---- control from outside -------------------------------------------------------------------------
    def request_stop(self, reason: EndReason) -> None:
        """Ask the session to end (drain, expiry); the first request wins."""
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(reason)

    # ---- the run --------------------------------------------------------------------------------------
    async def refuse(self, reason: EndReason, code: str, message: str, close_code: int) -> SessionOutcome:
        """End the session before any upstream socket is opened (C4 `too_many_sessions`): error, close, log."""
        with structlog.contextvars.bound_contextvars(session_id=self.session_id):
            self.core.log_relay(ev.RELAY_SESSION_STARTED, {**self._started_info, "refused": code, "upstream_url": None})
            self._tell_client(code, message)
            self._flush()
            self.core.session_closing()
            client_code = await self.client.close(close_code, code, grace=CLOSE_GRACE_S)
            return await self._finish(reason, client_code)

    async def run(self) -> SessionOutcome:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        with structlog.contextvars.bound_contextvars(session_id=self.session_id):
            reason = EndReason.ERROR
            client_code: int | None = None
            try:
                target: UpstreamTarget | None = None
                try:
                    try:
                        target = self._resolve_target()
                    finally:
                        upstream_url = redact_url(target.url) if target is not None else None
                        self.core.log_relay(ev.RELAY_SESSION_STARTED, {**self._started_info, "upstream_url": upstream_url})
                        self._flush()
                    self._upstream = await self._connect_watching_client(target)
                except _EndedBeforeConnect as ended:
                    self.core.session_closing()
                    if ended.reason == EndReason.DRAIN:
                        ended.close_code = await self.client.close(1001, "relay shutting down", grace=CLOSE_GRACE_S)
                    return await self._finish(ended.reason, ended.close_code)
                except UpstreamUnavailable as exc:
                    log.warning("relay.upstream_unavailable", status=exc.status, error=str(exc))
                    self._tell_client(ev.CODE_UPSTREAM_UNAVAILABLE, str(exc))
                    self._flush()
                    self.core.session_closing()
                    client_code = await self.client.close(1013, "upstream unavailable", grace=CLOSE_GRACE_S)
                    reason = EndReason.UPSTREAM_UNAVAILABLE
                    return await self._finish(reason, client_code)
                if self.env.metrics is not None:
                    self.env.metrics.observe_connect(self._upstream.connect_seconds)
                self.core.upstream_connected(round(self._upstream.connect_seconds * 1000.0, 3))
                self._start_recording()
                self._flush()
                reason, client_code = await self._pump()
            except Exception:
                log.exception("relay.session_failed")
                reason = EndReason.ERROR
                self.core.session_closing()
                with contextlib.suppress(Exception):
                    client_code = await self.client.close(1011, "relay error", grace=CLOSE_GRACE_S)
            return await self._finish(reason, client_code)

    async def _connect_watching_client(self, target: UpstreamTarget) -> UpstreamLink:
        """Connect upstream while still reading the client: a client that leaves (or a drain) during the handshake
        cancels it, so no upstream session is opened for nobody (C4). Frames that arrive meanwhile are kept, in
        order, for the client pump."""
        assert self._stop is not None
        connect = asyncio.create_task(
            UpstreamLink.connect(
                target.url, target.headers, open_timeout=target.connect_timeout, backlog_limit=UPSTREAM_BACKLOG_LIMIT_BYTES
            )
        )
        early_bytes = 0
        try:
            while not connect.done():
                if self._pending_receive is None and early_bytes <= UPSTREAM_BACKLOG_LIMIT_BYTES:
                    # Past the bound the client is simply not read until the upstream answers (TCP backpressure).
                    self._pending_receive = asyncio.create_task(self.client.receive())
                watched: set[asyncio.Future[Any]] = {connect, self._stop}
                if self._pending_receive is not None:
                    watched.add(self._pending_receive)
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if self._pending_receive is not None and self._pending_receive.done() and not connect.done():
                    frame = self._pending_receive.result()
                    self._pending_receive = None
                    if frame.closed:
                        raise _EndedBeforeConnect(EndReason.CLIENT_CLOSED, frame.close_code)
                    self._early_frames.append(frame)
                    early_bytes += len(frame.text or "")
                if self._stop.done() and not connect.done():
                    raise _EndedBeforeConnect(self._stop.result(), None)
        except BaseException:
            await self._cancel(connect)
            raise
        return connect.result()

    def _resolve_target(self) -> UpstreamTarget:
        """Where and how to connect; credentials are re-read on every connect (C2), so a file gone bad fails here."""
        if not callable(self._target):
            return self._target
        try:
            return self._target()
        except ConfigError as exc:
            log.error("relay.upstream_credentials_unusable", error=str(exc))
            raise UpstreamUnavailable(f"upstream credentials unusable: {exc}") from None

    async def _pump(self) -> tuple[EndReason, int | None]:
        assert self._upstream is not None and self._stop is not None
        upstream = self._upstream
        self._failure = asyncio.get_running_loop().create_future()
        from_client = asyncio.create_task(self._pump_client(), name=f"{self.session_id}:client")
        from_upstream = asyncio.create_task(upstream.wait_closed(), name=f"{self.session_id}:upstream")
        # The upstream's close frame ends forwarding at once: client frames read until its TCP close (a round
        # trip later) have nowhere to go, so they are neither forwarded nor logged.
        upstream.attach(self._on_upstream_message, on_close_frame=self.core.session_closing)
        expiry: asyncio.TimerHandle | None = None
        if self._max_session_seconds > 0:
            expiry = asyncio.get_running_loop().call_later(self._max_session_seconds, self.request_stop, EndReason.EXPIRED)
        try:
            while True:
                await asyncio.wait({from_client, from_upstream, self._failure, self._stop}, return_when=asyncio.FIRST_COMPLETED)
                drop = self._resumable_drop(from_upstream, from_client)
                if drop is None:
                    break
                from_upstream = await self._resume(drop, from_upstream, from_client)
        finally:
            if expiry is not None:
                expiry.cancel()
        # From here on nothing more is forwarded (C4: frames read after the close are neither forwarded nor logged).
        self.core.session_closing()
        # A failure carries the most precise reason, so it is looked at first.
        first: asyncio.Future[Any] = next(f for f in (self._failure, from_upstream, from_client, self._stop) if f.done())
        result: Any = first.exception() if first.exception() is not None else first.result()
        if isinstance(result, UpstreamDisconnected):  # a drop seen by the reader or by a write, or a stall
            await self._cancel(from_client)
            await self._stop_reading_upstream(from_upstream)
            log.warning("relay.upstream_disconnected", error=str(result), code=result.code)
            self._tell_client(ev.CODE_UPSTREAM_DISCONNECTED, str(result))
            self._flush()
            return EndReason.UPSTREAM_DISCONNECTED, await self.client.close(1014, "upstream disconnected", grace=CLOSE_GRACE_S)
        if result == EndReason.CLIENT_TOO_SLOW:
            await self._cancel(from_client)
            await self._stop_reading_upstream(from_upstream)
            return await self._close_too_slow()
        if first is self._failure or first is from_upstream:
            await self._cancel(from_client)
            if isinstance(result, BaseException):
                await self._stop_reading_upstream(from_upstream)
                raise result
            return EndReason.UPSTREAM_CLOSED, await self.client.close(1000, "upstream closed", grace=CLOSE_GRACE_S)
        if first is from_client:
            await self._cancel(from_client)
            if isinstance(result, ClientFrame):  # the client closed
                await self._await_pending_retrieves(from_upstream)
                return EndReason.CLIENT_CLOSED, result.close_code
            await self._stop_reading_upstream(from_upstream)
            raise result if isinstance(result, BaseException) else RuntimeError(f"client pump ended: {result!r}")
        # An outside stop: drain or expiry.
        stop_reason: EndReason = result
        if stop_reason == EndReason.EXPIRED:
            self._tell_client(ev.CODE_SESSION_EXPIRED, "the session reached max_session_seconds", "invalid_request_error")
            self._flush()
        await self._cancel(from_client)
        await self._await_pending_retrieves(from_upstream)
        code = 1001 if stop_reason == EndReason.DRAIN else 1000
        return stop_reason, await self.client.close(
            code, "relay shutting down" if code == 1001 else "session expired", grace=CLOSE_GRACE_S
        )

    # ---- upstream resume (docs/resume.md) ----------------------------------------------------------------
    def _resumable_drop(self, from_upstream: asyncio.Task[Any], from_client: asyncio.Task[Any]) -> UpstreamDisconnected | None:
        """The drop to resume from, if the session should survive what just ended (the client and an outside stop
        come first; a normal close, a relay bug or a slow client end the session as before)."""
        assert self._failure is not None and self._stop is not None
        if self.core.resume is None or self._resume_exhausted or self._stop.done() or from_client.done():
            return None
        for ended in (self._failure, from_upstream):
            if ended.done():
                error = ended.exception()
                if isinstance(error, UpstreamDisconnected) and is_resumable(error.code):
                    return error
                return None
        return None

    async def _resume(
        self, drop: UpstreamDisconnected, from_upstream: asyncio.Task[Any], from_client: asyncio.Task[Any]
    ) -> asyncio.Task[Any]:
        """Reconnect after a drop while the client stays connected: up to the configured attempts, with jittered
        backoff, each bounded by the connect timeout (handshake, then the restore). Returns the new upstream's
        `wait_closed` task; when the resume fails or the session ends meanwhile, a task that never ends, with the
        reason left where `_pump` looks (the failure, the client's end, the stop)."""
        assert self._stop is not None and self.core.resume is not None
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        await self._stop_reading_upstream(from_upstream)
        if self._upstream is not None:
            self._upstream.abort()
            self._upstream = None
        if self._failure is None or self._failure.done():
            self._failure = loop.create_future()
        log.warning("relay.upstream_interrupted", code=drop.code, error=str(drop))
        self.core.upstream_dropped(drop.code, str(drop))
        self._flush()
        ends: set[asyncio.Future[Any]] = {from_client, self._failure, self._stop}
        delays = backoff_delays(self.core.resume.policy.attempts, random.random)
        for attempt, delay in enumerate(delays, start=1):
            done, _ = await asyncio.wait(ends, timeout=delay)
            if not done:
                upstream = await self._resume_attempt(attempt, ends)
                if upstream is not None:
                    downtime_ms = (time.monotonic() - started) * 1000.0
                    log.info("relay.upstream_resumed", attempt=attempt, downtime_ms=round(downtime_ms, 3))
                    self.core.finish_restore(attempt, downtime_ms)
                    self._flush()
                    self._count_resume("ok")
                    return upstream
            if any(end.done() for end in ends):  # the client left, a drain, expiry, a slow client: ends as usual
                self.core.resume_failed(attempt, (time.monotonic() - started) * 1000.0, "session_ending")
                self._flush()
                self._count_resume("abandoned")
                return asyncio.create_task(asyncio.Event().wait())
        downtime_ms = (time.monotonic() - started) * 1000.0
        log.warning("relay.upstream_resume_failed", attempts=len(delays), downtime_ms=round(downtime_ms, 3))
        self.core.resume_failed(len(delays), downtime_ms, "attempts_exhausted")
        self._flush()
        self._count_resume("failed")
        self._resume_exhausted = True
        self._fail(UpstreamDisconnected(f"{drop}; every resume attempt failed", code=drop.code))
        return asyncio.create_task(asyncio.Event().wait())

    async def _resume_attempt(self, attempt: int, ends: set[asyncio.Future[Any]]) -> asyncio.Task[Any] | None:
        """One reconnect: handshake, then the restore, within the connect timeout. Returns the new upstream's
        `wait_closed` task once it has the session; None when this attempt failed or the session is ending."""
        try:
            target = self._resolve_target()
        except UpstreamUnavailable as exc:
            self.core.restore_abandoned(attempt, str(exc))
            self._flush()
            return None
        deadline = time.monotonic() + target.connect_timeout
        connect = asyncio.create_task(
            UpstreamLink.connect(
                target.url, target.headers, open_timeout=target.connect_timeout, backlog_limit=UPSTREAM_BACKLOG_LIMIT_BYTES
            )
        )
        try:
            await asyncio.wait({connect, *ends}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not connect.done():  # the session is ending (or this task is cancelled): no socket for nobody
                await self._cancel(connect)
        if connect.cancelled():
            return None
        if connect.exception() is not None:
            error = connect.exception()
            log.warning("relay.upstream_resume_attempt_failed", attempt=attempt, error=str(error))
            self.core.restore_abandoned(attempt, str(error))
            self._flush()
            if not isinstance(error, UpstreamUnavailable):
                raise error  # type: ignore[misc]  # a relay bug: the session's failure path reports it
            return None
        upstream = connect.result()
        if self.env.metrics is not None:
            self.env.metrics.observe_connect(upstream.connect_seconds)
        self._upstream = upstream
        self._restored = asyncio.get_running_loop().create_future()
        closed = asyncio.create_task(upstream.wait_closed(), name=f"{self.session_id}:upstream")
        self.core.begin_restore(attempt, round(upstream.connect_seconds * 1000.0, 3))
        upstream.attach(self._on_upstream_message, on_close_frame=self.core.session_closing)
        self._flush()
        try:
            watched: set[asyncio.Future[Any]] = {self._restored, closed, *ends}
            await asyncio.wait(watched, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
            if self._restored.done() and not closed.done() and not any(end.done() for end in ends):
                return closed
            why = "the session is ending" if any(end.done() for end in ends) else "restore not answered in time"
            if closed.done():
                error = closed.exception()
                why = str(error) if error is not None else "the new upstream closed during the restore"
        finally:
            self._restored = None
        upstream.detach()
        upstream.abort()
        self._upstream = None
        await self._cancel(closed)
        log.warning("relay.upstream_resume_attempt_failed", attempt=attempt, error=why)
        self.core.restore_abandoned(attempt, why)
        self._flush()
        return None

    def _count_resume(self, result: str) -> None:
        if self.env.metrics is not None:
            self.env.metrics.resumes[result] += 1

    async def _close_too_slow(self) -> tuple[EndReason, int | None]:
        """C4: drop the backlog, close the upstream at once, close 1008, abort the TCP connection after 5 s."""
        log.warning("relay.client_too_slow")
        self._count_client_error(ev.CODE_CLIENT_TOO_SLOW)
        await self._close_upstream()
        # The client side bounds its own close handshake and aborts the connection past it (ClientSide.close).
        return EndReason.CLIENT_TOO_SLOW, await self.client.close(1008, ev.CODE_CLIENT_TOO_SLOW, grace=0.0)

    async def _pump_client(self) -> Any:
        core = self.core
        pending, self._pending_receive = self._pending_receive, None
        while True:
            if self._early_frames:
                frame = self._early_frames.popleft()
            elif pending is not None:
                frame, pending = await pending, None
            else:
                frame = await self.client.receive()
            if frame.closed:
                return frame
            try:
                if frame.text is not None:
                    core.receive_client_text(frame.text)
                elif frame.binary_size is not None:
                    core.receive_client_binary(frame.binary_size)
            except Exception as exc:  # a relay bug: this frame is answered relay_error, the session goes on
                core.internal_error(frame.text, repr(exc), traceback.format_exc())
            self._flush()

    def _on_upstream_message(self, message: str | bytes) -> None:
        """Called by the upstream link from its read callback, in arrival order. A relay bug while the core handles
        one upstream frame is contained like one in a client frame (docs/client-input.md): `relay.internal_error`
        is logged with the traceback and the session goes on. Only a failure of carrying out decisions (a flush)
        ends the session, through `_fail`."""
        try:
            if isinstance(message, bytes):
                # The protocol is JSON text; a binary upstream frame is noted and not forwarded.
                self.core.log_relay(ev.RELAY_UPSTREAM_BINARY_FRAME, {"bytes": len(message)})
            else:
                self.core.receive_server_text(message)
        except Exception as exc:  # a relay bug in the core: this frame may be lost, the session goes on
            self.core.upstream_internal_error(repr(exc), traceback.format_exc())
        try:
            self._flush()
            if self._restored is not None and not self._restored.done() and self.core.restore_finished:
                self._restored.set_result(None)
        except Exception as exc:
            self._fail(exc)
            raise

    def _fail(self, cause: EndReason | BaseException) -> None:
        """End the session from where no task can simply return (a read callback, a flush, a timer): a slow
        client, a stalled or dropped upstream, a relay bug. The first cause wins; nothing more is forwarded."""
        failure = self._failure
        if failure is None or failure.done():
            return
        if isinstance(cause, BaseException):
            failure.set_exception(cause)
        else:
            failure.set_result(cause)
        self.core.session_closing()

    async def _stop_reading_upstream(self, from_upstream: asyncio.Task[Any]) -> None:
        if self._upstream is not None:
            self._upstream.detach()
        await self._cancel(from_upstream)

    async def _await_pending_retrieves(self, from_upstream: asyncio.Task[Any]) -> None:
        """Pending retrieves get min(retrieve_timeout, 1 s) before the upstream closes (C5)."""
        if not from_upstream.done() and self.core.pending_retrieves:
            deadline = min(self.env.retrieve_timeout, CLOSE_GRACE_S)
            end = time.monotonic() + deadline
            while self.core.pending_retrieves and not from_upstream.done() and time.monotonic() < end:
                await asyncio.wait({from_upstream}, timeout=min(0.02, max(0.0, end - time.monotonic())))
        await self._stop_reading_upstream(from_upstream)

    @staticmethod
    async def _cancel(task: asyncio.Task[Any]) -> None:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _close_upstream(self) -> int | None:
        if self._upstream is None:
            return None
        self._upstream.detach()
        try:
            await asyncio.wait_for(self._upstream.close(1000), CLOSE_GRACE_S)
        except (TimeoutError, Exception):
            self._upstream.abort()
        return self._upstream.close_code

    async def _finish(self, reason: EndReason, client_code: int | None) -> SessionOutcome:
        if self._pending_receive is not None:
            await self._cancel(self._pending_receive)
        if self._tools is not None:
            await self._tools.aclose()  # tools still running are cancelled and recorded as such
        self.core.session_closed()
        upstream_code = await self._close_upstream()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._flush()
        if self._background:
            await asyncio.wait(self._background, timeout=10.0)
            for task in list(self._background):  # nothing may log after relay.session_ended
                log.error("relay.background_task_abandoned", task=task.get_name())
                await self._cancel(task)
        self._flush()
        if self.recorder is not None:
            self.core.log_relay(RECORDING_SAVED, await self.recorder.finish())
        if self.env.metrics is not None:
            self.env.metrics.closes[str(client_code)] += 1
        self.core.log_relay(
            ev.RELAY_SESSION_ENDED,
            {
                "client_close_code": client_code,
                "upstream_close_code": upstream_code,
                "reason": str(reason),
                "counts": {**self.core.counts, "relay": self.core.counts["relay"] + 1},
                "log_dropped": self.log.dropped,
                "resumes": self.core.resume.resumes if self.core.resume is not None else 0,
            },
        )
        self._flush()
        await self.log.aclose()
        self.outcome = SessionOutcome(
            self.session_id, reason, client_code, upstream_code, dict(self.core.counts), self.log.dropped
        )
        return self.outcome

    # ---- the one place where the core's decisions are carried out ----------------------------------------
    def _flush(self) -> None:
        """Carry out what the core decided, now. A client over its backlog bound or an upstream that stopped
        reading ends the session through `_fail`."""
        core = self.core
        # Both sockets first: the log records (encoded on this thread, see relay.eventlog.writer) come after.
        for text in core.to_client():
            if not self.client.send(text):
                self._fail(EndReason.CLIENT_TOO_SLOW)
                break
        frames = core.to_upstream()
        upstream = self._upstream
        if frames and upstream is not None:
            try:
                for text in frames:
                    upstream.send(text)
            except UpstreamDisconnected as exc:
                if self._restored is None:  # during a restore, the attempt's own watch of the new link sees it
                    self._fail(exc)
        metrics = self.env.metrics
        recorder = self.recorder
        for entry in core.to_log():
            self.log.append(entry)
            if recorder is not None:
                recorder.observe(entry)
            if metrics is not None:
                metrics.count_event(entry.dir, entry.type, entry.bytes)
                if entry.type == ev.RELAY_CLIENT_ERROR:
                    metrics.client_errors[str(entry.event.get("code"))] += 1
                elif entry.type == ev.RELAY_RETRIEVE_FAILED:
                    metrics.retrieves[str(entry.event.get("reason"))] += 1
        for save in core.to_save():
            task = asyncio.create_task(self._save(save))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._arm_timers()
        if core.tools is not None and self._tools is not None:
            self._start_tools()

    def _start_recording(self) -> None:
        options = self.env.recording
        if options is None:
            return
        self.recorder = SessionRecorder(
            recording_path(self.env.data_dir, self.session_id),
            recording_url(self.session_id),
            options,
            started_mono=self.log.started_mono,
            report=self._recording_report,
            output_format=lambda: self.core.output_format,
        )
        self.recorder.start()

    def _recording_report(self, record_type: str, event: dict[str, Any]) -> None:
        self.core.log_relay(record_type, event)
        self._flush()

    def _arm_timers(self) -> None:
        for item_id in self.core.to_disarm():
            timer = self._timers.pop(item_id, None)
            if timer is not None:
                timer.cancel()
        items = self.core.to_arm()
        if items:
            loop = asyncio.get_running_loop()
            for item_id in items:
                old = self._timers.pop(item_id, None)
                if old is not None:
                    old.cancel()
                self._timers[item_id] = loop.call_later(self.env.retrieve_timeout, self._retrieve_timed_out, item_id)

    # ---- server-side tools (relay.tools.runner runs them; relay.tools.state decides) -----------------------
    def _start_tools(self) -> None:
        assert self.core.tools is not None and self._tools is not None
        for call in self.core.tools.to_start():
            self._tools.start(call)
        for generation, seconds in self.core.tools.to_arm():
            self._tools.arm_hold(seconds, functools.partial(self._tool_hold_expired, generation))

    def _tool_finished(self, call: ToolCall, outcome: ToolOutcome) -> None:
        self.core.tool_call_finished(call, outcome)
        self._flush()

    def _tool_hold_expired(self, generation: int) -> None:
        self.core.tool_hold_expired(generation)
        self._flush()

    def _count_tool(self, name: str, result: str, seconds: float) -> None:
        if self.env.metrics is not None:
            self.env.metrics.observe_tool(name, result, seconds)

    def _retrieve_timed_out(self, item_id: str) -> None:
        self._timers.pop(item_id, None)
        self.core.retrieve_timed_out(item_id)
        self._flush()

    async def _save(self, save: AudioToSave) -> None:
        folder = self.env.data_dir / "sessions" / self.session_id
        path = folder / f"{save.item_id}.wav"
        if path.resolve().parent != folder.resolve():  # the core refuses such ids already; never trust one id check
            log.error("relay.audio_save_refused", item_id=save.item_id)
            return
        try:
            pcm16, rate = await asyncio.to_thread(_write_item_wav, path, save)
        except (OSError, ValueError) as exc:
            log.error("relay.audio_save_failed", item_id=save.item_id, error=str(exc))
            return
        if self.env.metrics is not None:
            self.env.metrics.retrieves["ok" if save.source == "retrieved" else "stream"] += 1
        self.core.audio_saved(
            {
                "item_id": save.item_id,
                "path": str(path),
                "url": self.env.audio_url(self.session_id, save.item_id),
                "duration_ms": round(pcmlib.duration_ms(len(pcm16), rate), 3),
                "audio_bytes": len(pcm16),
                "rate": rate,
                "source": save.source,
            }
        )
        self._flush()

    def _tell_client(self, code: str, message: str, error_type: str = "server_error") -> None:
        """A relay-made `error` event for the client (queued; the next flush sends it), counted by code."""
        self._count_client_error(code)
        self.core.send_client_error(code, message, error_type=error_type)

    def _count_client_error(self, code: str) -> None:
        if self.env.metrics is not None:
            self.env.metrics.client_errors[code] += 1


def _write_item_wav(path: Path, save: AudioToSave) -> tuple[bytes, int]:
    """Decode the item's wire audio to PCM16 and write the WAV (runs on a worker thread)."""
    if save.format.type == "audio/pcmu":
        pcm16, rate = pcmlib.ulaw_decode(save.pcm), 8000
    elif save.format.type == "audio/pcma":
        pcm16, rate = pcmlib.alaw_decode(save.pcm), 8000
    else:
        pcm16, rate = save.pcm[: len(save.pcm) - len(save.pcm) % 2], save.format.rate
    pcmlib.write_wav(path, pcm16, rate)
    return pcm16, rate

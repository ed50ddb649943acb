"""Drive one session: a client side <-> `RelaySession` (the pure core) <-> the upstream, the event log as the tap.

The flow is feed -> drain -> act. A client frame (read by one task through `relay.client_reader`) or an upstream
frame (handed over by the upstream link's read callback) is fed to the core; then `_flush`, the one place where the
core's decisions are carried out, drains it and acts at once, synchronously: frames to the client, frames to the
upstream, log records, WAVs to save (`relay.saving`, on a worker thread), retrieve timers, tools, the recording.
A frame therefore crosses the relay without a task wake-up; each side bounds what may wait for its peer.
Whatever ends first (the client, the upstream, a failure seen inside a callback through `_fail`, an outside stop)
decides the outcome; a resumable upstream drop is survived instead (`relay.upstream_side`, `relay.reconnect`).
Then pending retrieves get their short grace, both sockets close and `relay.session_ended` is written.

Boundary: one session's lifecycle, nothing process-wide. It is given its parts (`relay.wiring` builds them from
settings: the policy, where to connect, the environment with the event log, the files and their URLs, metrics)
and builds none of them; `serve` and `mic` differ only in the `ClientSide` (relay.links.base) they hand in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from relay.client_reader import ClientReader, EndedBeforeConnect
from relay.core import events as ev
from relay.core.keptaudio import KeptAudioBudget
from relay.core.outbox import AudioToSave
from relay.core.policy import SessionPolicy
from relay.core.session import RelaySession
from relay.errors import UpstreamDisconnected, UpstreamUnavailable
from relay.eventlog.session_log import SessionEventLog
from relay.eventlog.writer import EventLog
from relay.links.base import ClientFrame, ClientSide, UpstreamTarget
from relay.links.upstream import redact_url
from relay.links.writebatch import OncePerBurst, WriteScope
from relay.metrics import RelayMetrics
from relay.outcome import EndReason, SessionOutcome
from relay.reconnect import cancel_and_wait
from relay.recording import RECORDING_SAVED, RecordingOptions, SessionRecorder
from relay.retrieve_timers import RetrieveTimers
from relay.saving import NotSaved, SessionFiles, save_item_audio
from relay.tools.runner import SessionTools
from relay.upstream_side import UPSTREAM_BACKLOG_LIMIT_BYTES, SessionUpstream

log = structlog.get_logger()

CLOSE_GRACE_S = 1.0  # the longest the relay waits on anything once a session is ending (docs/lifecycle.md: 1 s)
LOG_CLOSE_WAIT_S = 5.0  # how long a finished session waits for its last records to be written
# Client left: its upstream is closed within 1 s (docs/lifecycle.md); pending retrieves get the first 0.7 s of it.
UPSTREAM_GONE_WITHIN_S, RETRIEVE_GRACE_S = 0.9, 0.7


def new_session_id() -> str:
    return "sess_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")


@dataclass
class BridgeEnvironment:
    """Process-wide things a session uses; shared by every session of a server."""

    event_log: EventLog
    files: SessionFiles  # where a session's WAVs go and the URLs they are served under (`relay.wiring` builds it)
    retrieve_timeout: float
    metrics: RelayMetrics | None = None
    # Audio kept for fallback saves, bounded across sessions: pass the process's one budget (`serve` does).
    kept_audio: KeptAudioBudget = field(default_factory=KeptAudioBudget)
    recording: RecordingOptions | None = None  # session recording (docs/recording.md); None = off


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
        self.env = env
        self.session_id = session_id or new_session_id()
        self.core = RelaySession(policy, env.kept_audio)
        self.log: SessionEventLog = env.event_log.open_session(self.session_id)
        self._started_info = dict(started_info or {})
        self._max_session_seconds = max_session_seconds
        self._upstream = SessionUpstream(
            self.core, self.session_id, target, env.metrics,
            on_message=self._on_upstream_message, flush=self._flush, fail=self._fail,
        )
        # Set by `_fail` (client too slow, upstream stalled or dropped, a relay bug): the session must end.
        self._failure: asyncio.Future[Any] | None = None
        self._retrieve_timers = RetrieveTimers(env.retrieve_timeout, functools.partial(self._feed, self.core.retrieve_timed_out))
        self._background: set[asyncio.Task[Any]] = set()
        self._ending_since: float | None = None  # when the client left, or the relay began ending the session
        self._stop: asyncio.Future[EndReason] | None = None
        self._reader = ClientReader(client, early_limit_bytes=UPSTREAM_BACKLOG_LIMIT_BYTES)
        self.outcome: SessionOutcome | None = None
        self.ended = False  # relay.session_ended is logged (its last records may not be written yet)
        self.on_ended: Callable[[], None] = lambda: None  # called then: what it held (a max_sessions place) is free
        self._tools = (
            SessionTools(
                policy.tools,
                self.session_id,
                functools.partial(self._feed, self.core.tool_call_finished),
                on_metrics=env.metrics.observe_tool if env.metrics is not None else None,
            )
            if policy.tools is not None
            else None
        )
        self.recorder: SessionRecorder | None = None  # observes the session once the upstream is connected
        # What frames decided is carried out once per burst: per upstream read, per run of client frames read.
        self._after_upstream_read = OncePerBurst(self._flush_upstream_read)
        self._after_client_frames = OncePerBurst(self._flush_client_frames)

    # ---- control from outside -------------------------------------------------------------------------
    def request_stop(self, reason: EndReason) -> None:
        """Ask the session to end (drain, expiry); the first request wins."""
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(reason)

    # ---- the run --------------------------------------------------------------------------------------
    async def refuse(self, reason: EndReason, code: str, message: str, close_code: int) -> SessionOutcome:
        """End the session before any upstream socket is opened (`too_many_sessions`, docs/lifecycle.md): error, close, log."""
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
                        target = self._upstream.resolve_target()
                    finally:
                        upstream_url = redact_url(target.url) if target is not None else None
                        self.core.log_relay(ev.RELAY_SESSION_STARTED, {**self._started_info, "upstream_url": upstream_url})
                        self._flush()
                    # A client that leaves (or a drain) during the handshake cancels it (docs/lifecycle.md).
                    link = await self._reader.read_while(self._upstream.open(target), self._stop)
                    self._upstream.link = link  # read from once the pump runs
                except EndedBeforeConnect as ended:
                    self.core.session_closing()
                    ended_reason: EndReason = EndReason.CLIENT_CLOSED if ended.stop_reason is None else ended.stop_reason
                    if ended_reason == EndReason.DRAIN:
                        ended.close_code = await self.client.close(1001, "relay shutting down", grace=CLOSE_GRACE_S)
                    return await self._finish(ended_reason, ended.close_code)
                except UpstreamUnavailable as exc:
                    log.warning("relay.upstream_unavailable", status=exc.status, error=str(exc))
                    self._tell_client(ev.CODE_UPSTREAM_UNAVAILABLE, str(exc))
                    self._flush()
                    self.core.session_closing()
                    client_code = await self.client.close(1013, "upstream unavailable", grace=CLOSE_GRACE_S)
                    reason = EndReason.UPSTREAM_UNAVAILABLE
                    return await self._finish(reason, client_code)
                if self.env.metrics is not None:
                    self.env.metrics.observe_connect(link.connect_seconds)
                self.core.upstream_connected(round(link.connect_seconds * 1000.0, 3))
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

    async def _pump(self) -> tuple[EndReason, int | None]:
        assert self._upstream.link is not None and self._stop is not None
        upstream = self._upstream.link
        self._failure = asyncio.get_running_loop().create_future()
        reading = self._reader.read(self._on_client_text, self._on_client_binary)  # to the client's end
        from_client = asyncio.create_task(reading, name=f"{self.session_id}:client")
        from_upstream = asyncio.create_task(upstream.wait_closed(), name=f"{self.session_id}:upstream")
        self._upstream.adopt(upstream)
        expiry: asyncio.TimerHandle | None = None
        if self._max_session_seconds > 0:
            expiry = asyncio.get_running_loop().call_later(self._max_session_seconds, self.request_stop, EndReason.EXPIRED)
        try:
            while True:
                await asyncio.wait({from_client, from_upstream, self._failure, self._stop}, return_when=asyncio.FIRST_COMPLETED)
                stopping = self._stop.done() or from_client.done()
                drop = self._upstream.resume.resumable_drop((self._failure, from_upstream), stopping)
                if drop is None:
                    break
                # Let go of the dropped upstream, then reconnect while the client stays (docs/resume.md).
                await self._upstream.let_go(from_upstream)
                if self._failure.done():
                    self._failure = asyncio.get_running_loop().create_future()
                from_upstream = await self._upstream.resume.resume(drop, {from_client, self._failure, self._stop})
        finally:
            if expiry is not None:
                expiry.cancel()
        # From here on nothing more is forwarded: frames read after the close are neither forwarded nor logged.
        self.core.session_closing()
        # A failure carries the most precise reason, so it is looked at first.
        first: asyncio.Future[Any] = next(f for f in (self._failure, from_upstream, from_client, self._stop) if f.done())
        result: Any = first.exception() if first.exception() is not None else first.result()
        if isinstance(result, UpstreamDisconnected):  # a drop seen by the reader or by a write, or a stall
            await cancel_and_wait(from_client)
            await self._upstream.stop_reading(from_upstream)
            log.warning("relay.upstream_disconnected", error=str(result), close_code=result.code)
            self._tell_client(ev.CODE_UPSTREAM_DISCONNECTED, str(result))
            self._flush()
            return EndReason.UPSTREAM_DISCONNECTED, await self.client.close(1014, "upstream disconnected", grace=CLOSE_GRACE_S)
        if result == EndReason.CLIENT_TOO_SLOW:
            await cancel_and_wait(from_client)
            await self._upstream.stop_reading(from_upstream)
            return await self._close_too_slow()
        if first is self._failure or first is from_upstream:
            await cancel_and_wait(from_client)
            if isinstance(result, BaseException):
                await self._upstream.stop_reading(from_upstream)
                raise result
            return EndReason.UPSTREAM_CLOSED, await self.client.close(1000, "upstream closed", grace=CLOSE_GRACE_S)
        if first is from_client:
            await cancel_and_wait(from_client)
            if isinstance(result, ClientFrame):  # the client closed
                await self._await_pending_retrieves(from_upstream)
                return EndReason.CLIENT_CLOSED, result.close_code
            await self._upstream.stop_reading(from_upstream)
            raise result if isinstance(result, BaseException) else RuntimeError(f"client pump ended: {result!r}")
        # An outside stop: drain or expiry.
        stop_reason: EndReason = result
        if stop_reason == EndReason.EXPIRED:
            self._tell_client(ev.CODE_SESSION_EXPIRED, "the session reached max_session_seconds", "invalid_request_error")
            self._flush()
        await cancel_and_wait(from_client)
        await self._await_pending_retrieves(from_upstream)
        code = 1001 if stop_reason == EndReason.DRAIN else 1000
        return stop_reason, await self.client.close(
            code, "relay shutting down" if code == 1001 else "session expired", grace=CLOSE_GRACE_S
        )

    async def _close_too_slow(self) -> tuple[EndReason, int | None]:
        """A client too slow (docs/lifecycle.md): drop the backlog, close the upstream at once, close 1008; the client
        side bounds its own close handshake and resets the connection past it (ClientSide.close)."""
        log.warning("relay.client_too_slow")
        self._count_client_error(ev.CODE_CLIENT_TOO_SLOW)
        await self._upstream.close(CLOSE_GRACE_S)
        return EndReason.CLIENT_TOO_SLOW, await self.client.close(1008, ev.CODE_CLIENT_TOO_SLOW, grace=0.0)

    def _on_client_text(self, text: str) -> None:
        try:
            self.core.receive_client_text(text)
        except Exception as exc:  # a relay bug: this frame is answered relay_error, the session goes on
            self.core.internal_error(text, repr(exc), traceback.format_exc())
        # Frames already read come without a wait; what they decided is carried out when the task next waits.
        self._after_client_frames.request()

    def _on_client_binary(self, size: int) -> None:
        try:
            self.core.receive_client_binary(size)
        except Exception as exc:
            self.core.internal_error(None, repr(exc), traceback.format_exc())
        self._after_client_frames.request()

    def _flush_client_frames(self) -> None:
        """Carry out what a run of client frames decided; their writes go out together as it returns. Only a
        failure of carrying them out ends the session, through `_fail`."""
        with WriteScope():
            try:
                self._flush()
            except Exception as exc:
                self._fail(exc)

    def _on_upstream_message(self, message: str | bytes) -> None:
        """Called by the upstream link from its read callback, in arrival order. A relay bug while the core handles
        one upstream frame is contained like one in a client frame (docs/client-input.md): `relay.internal_error`
        is logged with the traceback and the session goes on. What the read's frames decided is carried out once,
        when the read ends: in a burst of frames, one flush instead of one per frame."""
        try:
            if isinstance(message, bytes):
                # The protocol is JSON text; a binary upstream frame is noted and not forwarded.
                self.core.log_relay(ev.RELAY_UPSTREAM_BINARY_FRAME, {"bytes": len(message)})
            else:
                self.core.receive_server_text(message)
        except Exception as exc:  # a relay bug in the core: this frame may be lost, the session goes on
            self.core.upstream_internal_error(repr(exc), traceback.format_exc())
        self._after_upstream_read.request()

    def _flush_upstream_read(self) -> None:
        """The end of an upstream read: carry out what its frames decided. Only a failure of carrying them out
        ends the session, through `_fail` (the core stops forwarding then)."""
        try:
            self._flush()
            self._upstream.resume.upstream_frame_handled()
        except Exception as exc:
            self._fail(exc)

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

    async def _await_pending_retrieves(self, from_upstream: asyncio.Task[Any]) -> None:
        """Pending retrieves get min(retrieve_timeout, 1 s) before the upstream closes (docs/retrieve-after-done.md)."""
        self._ending_since = time.monotonic()
        if not from_upstream.done() and self.core.pending_retrieves:
            deadline = min(self.env.retrieve_timeout, RETRIEVE_GRACE_S)
            end = time.monotonic() + deadline
            while self.core.pending_retrieves and not from_upstream.done() and time.monotonic() < end:
                await asyncio.wait({from_upstream}, timeout=min(0.02, max(0.0, end - time.monotonic())))
        await self._upstream.stop_reading(from_upstream)

    async def _finish(self, reason: EndReason, client_code: int | None) -> SessionOutcome:
        await self._reader.aclose()
        if self._tools is not None:
            await self._tools.aclose()  # tools still running are cancelled and recorded as such
        self.core.session_closed()
        since = self._ending_since
        left = CLOSE_GRACE_S if since is None else UPSTREAM_GONE_WITHIN_S - (time.monotonic() - since)
        upstream_code = await self._upstream.close(max(0.05, left))
        self._retrieve_timers.cancel_all()
        self._flush()
        if self._background:
            await asyncio.wait(self._background, timeout=10.0)
            for task in list(self._background):  # nothing may log after relay.session_ended
                log.error("relay.background_task_abandoned", task=task.get_name())
                await cancel_and_wait(task)
        self._flush()
        if self.recorder is not None:
            self._feed(self.core.log_relay, RECORDING_SAVED, await self.recorder.finish())  # carried out (and counted) now
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
        self.ended = True
        self.on_ended()
        await self.log.aclose(within=LOG_CLOSE_WAIT_S)
        self.outcome = SessionOutcome(self.session_id, reason, client_code, upstream_code, {**self.core.counts}, self.log.dropped)
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
        upstream = self._upstream.link
        if frames and upstream is not None:
            try:
                for text in frames:
                    upstream.send(text)
            except UpstreamDisconnected as exc:
                if not self._upstream.resume.restoring:  # during a restore, the attempt's own watch of the new link sees it
                    self._fail(exc)
        entries = core.to_log()
        if entries:  # each consumer takes the flush's entries in one call (in a flood, a burst of frames)
            self.log.extend(entries)
            if self.recorder is not None:
                self.recorder.observe(entries)
            if self.env.metrics is not None:
                self.env.metrics.count_events(entries)
        for save in core.to_save():
            task = asyncio.create_task(self._save(save))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._retrieve_timers.apply(core.to_disarm(), core.to_arm())
        if core.tools is not None and self._tools is not None:
            self._start_tools()

    def _start_recording(self) -> None:
        options = self.env.recording
        if options is None:
            return
        self.recorder = SessionRecorder(
            self.env.files.recording_path(self.session_id),
            self.env.files.recording_url(self.session_id),
            options,
            started_mono=self.log.started_mono,
            report=functools.partial(self._feed, self.core.log_relay),
            output_format=lambda: self.core.output_format,
        )
        self.recorder.start()

    # ---- server-side tools (relay.tools.runner runs them; relay.core.tools decides) -----------------------
    def _start_tools(self) -> None:
        assert self.core.tools is not None and self._tools is not None
        for call in self.core.tools.to_start():
            self._tools.start(call)
        for generation, seconds in self.core.tools.to_arm():
            self._tools.arm_hold(seconds, functools.partial(self._feed, self.core.tool_hold_expired, generation))

    def _feed(self, happening: Callable[..., None], *args: Any) -> None:
        """Feed the core what happened outside a frame (a tool finished or its hold expired, the recorder reports),
        then carry out what it decided."""
        happening(*args)
        self._flush()

    async def _save(self, save: AudioToSave) -> None:
        saved = await save_item_audio(self.env.files, self.session_id, save)
        if isinstance(saved, NotSaved):  # a full or failing disk: the session's log says which item has no WAV
            self._feed(self.core.log_relay, ev.RELAY_AUDIO_NOT_SAVED, saved.record())
            return
        if self.env.metrics is not None:
            self.env.metrics.retrieves["ok" if save.source == "retrieved" else "stream"] += 1
        self._feed(self.core.audio_saved, saved)

    def _tell_client(self, code: str, message: str, error_type: str = "server_error") -> None:
        """A relay-made `error` event for the client (queued; the next flush sends it), counted by code."""
        self._count_client_error(code)
        self.core.send_client_error(code, message, error_type=error_type)

    def _count_client_error(self, code: str) -> None:
        if self.env.metrics is not None:
            self.env.metrics.client_errors[code] += 1


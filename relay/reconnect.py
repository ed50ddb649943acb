"""Surviving an upstream drop (docs/resume.md): the reconnect loop the bridge runs while the client stays connected.

Boundary: `UpstreamResume` decides whether a drop is resumable, reconnects with jittered backoff (each attempt
bounded by the connect timeout: the handshake, then the restore the core replays) and reports every step to the
core (`relay.core.resume` holds the replay state and writes the records). It owns only the reconnect state: the
restore in progress and whether every attempt has failed. The bridge stays the one place where decisions are
carried out and sessions fail: this class reaches it only through the callbacks it is given (flush, fail, where
to connect, connect, take a new upstream link).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from relay.core.resume import backoff_delays, is_resumable
from relay.core.session import RelaySession
from relay.errors import UpstreamDisconnected, UpstreamUnavailable
from relay.links.base import UpstreamTarget
from relay.links.upstream import UpstreamLink
from relay.metrics import RelayMetrics

log = structlog.get_logger()


class UpstreamResume:
    """The reconnect loop of one session. `adopt(link)` makes `link` the session's upstream (None: no upstream);
    a link it is given is read from at once, so the core must be told about it first."""

    def __init__(
        self,
        core: RelaySession,
        session_id: str,
        metrics: RelayMetrics | None,
        *,
        flush: Callable[[], None],
        fail: Callable[[BaseException], None],
        resolve_target: Callable[[], UpstreamTarget],
        connect: Callable[[UpstreamTarget], Coroutine[Any, Any, UpstreamLink]],
        adopt: Callable[[UpstreamLink | None], None],
    ) -> None:
        self.core = core
        self.session_id = session_id
        self._metrics = metrics
        self._flush = flush
        self._fail = fail
        self._resolve_target = resolve_target
        self._connect = connect
        self._adopt = adopt
        # Set while a new upstream is being rebuilt (done when the core says so), and once every attempt after a
        # drop has failed (the session then ends as disconnected).
        self._restored: asyncio.Future[None] | None = None
        self._exhausted = False

    @property
    def restoring(self) -> bool:
        """A new upstream is being rebuilt: a failed write to it is seen by the attempt, not the session."""
        return self._restored is not None

    def upstream_frame_handled(self) -> None:
        """Called after each upstream read's frames are flushed: a restore the core calls finished completes the
        attempt."""
        if self._restored is not None and not self._restored.done() and self.core.restore_finished:
            self._restored.set_result(None)

    def resumable_drop(self, ended: tuple[asyncio.Future[Any], ...], stopping: bool) -> UpstreamDisconnected | None:
        """The drop to resume from, if the session should survive what just ended (`ended`: the failure, then the
        upstream's end, in that order; `stopping`: the client left or an outside stop came, which come first).
        A normal close, a relay bug or a slow client end the session as before."""
        if self.core.resume is None or self._exhausted or stopping:
            return None
        for future in ended:
            if future.done():
                error = future.exception()
                if isinstance(error, UpstreamDisconnected) and is_resumable(error.code):
                    return error
                return None
        return None

    async def resume(self, drop: UpstreamDisconnected, ends: set[asyncio.Future[Any]]) -> asyncio.Task[Any]:
        """Reconnect after a drop (the old upstream already let go): up to the configured attempts, with jittered
        backoff. Returns the new upstream's `wait_closed` task; when the resume fails or the session ends
        meanwhile (one of `ends` is done), a task that never ends, with the reason left where the bridge looks
        (the failure, the client's end, the stop)."""
        assert self.core.resume is not None
        started = time.monotonic()
        log.warning("relay.upstream_interrupted", close_code=drop.code, error=str(drop))
        self.core.upstream_dropped(drop.code, str(drop))
        self._flush()
        delays = backoff_delays(self.core.resume.policy.attempts, random.random)
        made = 0  # attempts that reached a connect: a session that ends during a backoff wait made no more
        for attempt, delay in enumerate(delays, start=1):
            done, _ = await asyncio.wait(ends, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                made = attempt
                upstream = await self._attempt(attempt, ends)
                if upstream is not None:
                    downtime_ms = (time.monotonic() - started) * 1000.0
                    log.info("relay.upstream_resumed", attempt=attempt, downtime_ms=round(downtime_ms, 3))
                    self.core.finish_restore(attempt, downtime_ms)
                    self._flush()
                    self._count("ok")
                    return upstream
            if any(end.done() for end in ends):  # the client left, a drain, expiry, a slow client: ends as usual
                self.core.resume_failed(made, (time.monotonic() - started) * 1000.0, "session_ending")
                self._flush()
                self._count("abandoned")
                return asyncio.create_task(asyncio.Event().wait())
        downtime_ms = (time.monotonic() - started) * 1000.0
        log.warning("relay.upstream_resume_failed", attempts=len(delays), downtime_ms=round(downtime_ms, 3))
        self.core.resume_failed(len(delays), downtime_ms, "attempts_exhausted")
        self._flush()
        self._count("failed")
        self._exhausted = True
        self._fail(UpstreamDisconnected(f"{drop}; every resume attempt failed", code=drop.code))
        return asyncio.create_task(asyncio.Event().wait())

    async def _attempt(self, attempt: int, ends: set[asyncio.Future[Any]]) -> asyncio.Task[Any] | None:
        """One reconnect: handshake, then the restore, within the connect timeout. Returns the new upstream's
        `wait_closed` task once it has the session; None when this attempt failed or the session is ending."""
        try:
            target = self._resolve_target()
        except UpstreamUnavailable as exc:
            self.core.restore_abandoned(attempt, str(exc))
            self._flush()
            return None
        deadline = time.monotonic() + target.connect_timeout
        connect = asyncio.create_task(self._connect(target))
        try:
            await asyncio.wait({connect, *ends}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not connect.done():  # the session is ending (or this task is cancelled): no socket for nobody
                await cancel_and_wait(connect)
        if connect.cancelled():  # the session ended during the handshake: the attempt still shows in the log
            self.core.restore_abandoned(attempt, "the session is ending")
            self._flush()
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
        if self._metrics is not None:
            self._metrics.observe_connect(upstream.connect_seconds)
        self._restored = asyncio.get_running_loop().create_future()
        closed = asyncio.create_task(upstream.wait_closed(), name=f"{self.session_id}:upstream")
        self.core.begin_restore(attempt, round(upstream.connect_seconds * 1000.0, 3))
        self._adopt(upstream)
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
        self._adopt(None)
        await cancel_and_wait(closed)
        log.warning("relay.upstream_resume_attempt_failed", attempt=attempt, error=why)
        self.core.restore_abandoned(attempt, why)
        self._flush()
        return None

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.resumes[result] += 1


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` if it still runs and wait for it; whatever it ends with is dropped (the caller has moved on)."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task

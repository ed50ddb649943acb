"""The upstream half of a session: the current upstream link, and opening, reading, resuming and closing it.

Boundary: owns which `UpstreamLink` (relay.links.upstream) the session uses, re-reads where to connect on every
connect (a credentials file gone bad fails there as `upstream_unavailable`, see docs/security.md), and runs the
reconnect loop after a drop (relay.reconnect). It sends nothing by itself: the bridge writes frames to `link` in
its flush and ends the session; what arrives is handed to the bridge's `on_message`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from relay.core.session import RelaySession
from relay.errors import ConfigError, UpstreamUnavailable
from relay.links.base import UpstreamTarget
from relay.links.upstream import UpstreamLink
from relay.links.upstream_listener import DROPPED
from relay.metrics import RelayMetrics
from relay.reconnect import UpstreamResume, cancel_and_wait

log = structlog.get_logger()

# An upstream that stops reading while this much waits for it has stalled: the session ends as disconnected.
UPSTREAM_BACKLOG_LIMIT_BYTES = 32 * 1024 * 1024


class SessionUpstream:
    """`target` is fixed, or called on every connect so rotated credentials are used."""

    def __init__(
        self,
        core: RelaySession,
        session_id: str,
        target: UpstreamTarget | Callable[[], UpstreamTarget],
        metrics: RelayMetrics | None,
        *,
        on_message: Callable[[str | bytes], None],
        flush: Callable[[], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        self.core = core
        self.link: UpstreamLink | None = None
        self.lost_close_code: int | None = None
        self._target = target
        self._on_message = on_message
        self.resume = UpstreamResume(
            core, session_id, metrics,
            flush=flush, fail=fail, resolve_target=self.resolve_target, connect=self.open, adopt=self.adopt,
        )

    def resolve_target(self) -> UpstreamTarget:
        """Where and how to connect; credentials are re-read on every connect, so a file gone bad fails here."""
        if not callable(self._target):
            return self._target
        try:
            return self._target()
        except ConfigError as exc:
            log.error("relay.upstream_credentials_unusable", error=str(exc))
            raise UpstreamUnavailable(f"upstream credentials unusable: {exc}") from None

    @staticmethod
    async def open(target: UpstreamTarget) -> UpstreamLink:
        """The one way a session's upstream socket is opened (the first connect and every resume attempt)."""
        return await UpstreamLink.connect(
            target.url, target.headers, open_timeout=target.connect_timeout, backlog_limit=UPSTREAM_BACKLOG_LIMIT_BYTES
        )

    def adopt(self, link: UpstreamLink | None) -> None:
        """Make `link` the session's upstream and read from it (None: there is none for now). The upstream's close
        frame ends forwarding at once (`session_closing`): client frames read until its TCP close (a round trip
        later) have nowhere to go, so they are neither forwarded nor logged."""
        self.link = link
        if link is not None:
            link.attach(self._on_message, on_close_frame=self.core.session_closing)

    async def stop_reading(self, from_upstream: asyncio.Task[Any]) -> None:
        if self.link is not None:
            self.link.detach()
        await cancel_and_wait(from_upstream)

    async def let_go(self, from_upstream: asyncio.Task[Any]) -> None:
        """Drop the link after it was lost (before a resume): stop reading it, abort it."""
        await self.stop_reading(from_upstream)
        if self.link is not None:
            self.lost_close_code = self.link.close_code  # what the session reports if no new link replaces it
            self.link.abort()
            self.link = None

    async def close(self, grace: float) -> int | None:
        """Close the link (1000) within `grace` seconds, else abort it; the upstream's close code (with no link
        left after a drop, the dropped one's)."""
        if self.link is None:
            return self.lost_close_code
        self.link.detach()
        try:
            await asyncio.wait_for(self.link.close(1000), grace)
        except (TimeoutError, Exception):
            self.link.abort()
        code = self.link.close_code
        # None only when the link was aborted before its end was seen: the upstream sent no close frame, 1006.
        return DROPPED if code is None else code

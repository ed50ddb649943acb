"""The retrieve timers of one session: one event-loop timer per item whose `conversation.item.retrieve` waits for
its answer, armed and disarmed as the core decides (`RelaySession.to_arm()` / `to_disarm()`). A timer that fires
leaves and hands its item to the caller, which feeds the core (docs/retrieve-after-done.md: a retrieve unanswered
within `retrieve_timeout` fails as `timeout` and the item is saved from the stream). A timer also leaves when its
answer comes, so per-turn state is freed. I/O: `loop.call_later` only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable


class RetrieveTimers:
    def __init__(self, timeout: float, expired: Callable[[str], None]) -> None:
        self._timeout = timeout
        self._expired = expired
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def apply(self, disarm: Iterable[str], arm: Iterable[str]) -> None:
        """Cancel the timers of `disarm`, then (re)start one for each of `arm`."""
        for item_id in disarm:
            self._cancel(item_id)
        for item_id in arm:
            self._cancel(item_id)
            self._timers[item_id] = asyncio.get_running_loop().call_later(self._timeout, self._fire, item_id)

    def cancel_all(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _cancel(self, item_id: str) -> None:
        timer = self._timers.pop(item_id, None)
        if timer is not None:
            timer.cancel()

    def _fire(self, item_id: str) -> None:
        del self._timers[item_id]
        self._expired(item_id)

"""relay.retrieve_timers: a retrieve's timer fires once after the timeout unless its answer disarms it first; arming
an item again restarts its timer; the session's end cancels every timer. Real event-loop timers, short timeouts."""

from __future__ import annotations

import asyncio

from relay.retrieve_timers import RetrieveTimers

TIMEOUT = 0.05


async def test_an_armed_item_expires_once_after_the_timeout() -> None:
    expired: list[str] = []
    timers = RetrieveTimers(TIMEOUT, expired.append)
    timers.apply([], ["item_1"])
    await asyncio.sleep(TIMEOUT / 2)
    assert expired == []
    await asyncio.sleep(TIMEOUT * 2)
    assert expired == ["item_1"]
    timers.apply(["item_1"], [])  # its answer after the timeout: nothing left to cancel, nothing fires again
    await asyncio.sleep(TIMEOUT * 2)
    assert expired == ["item_1"]


async def test_an_item_disarmed_before_the_timeout_never_expires() -> None:
    expired: list[str] = []
    timers = RetrieveTimers(TIMEOUT, expired.append)
    timers.apply([], ["item_1", "item_2"])
    timers.apply(["item_1"], [])
    await asyncio.sleep(TIMEOUT * 3)
    assert expired == ["item_2"]


async def test_arming_an_item_again_restarts_its_timer() -> None:
    expired: list[str] = []
    timers = RetrieveTimers(TIMEOUT * 2, expired.append)
    timers.apply([], ["item_1"])
    await asyncio.sleep(TIMEOUT * 1.5)
    timers.apply([], ["item_1"])  # a second retrieve of the same item
    await asyncio.sleep(TIMEOUT * 1.5)
    assert expired == []  # the first timer would have fired by now
    await asyncio.sleep(TIMEOUT * 2)
    assert expired == ["item_1"]


async def test_the_sessions_end_cancels_every_timer() -> None:
    expired: list[str] = []
    timers = RetrieveTimers(TIMEOUT, expired.append)
    timers.apply([], ["item_1", "item_2"])
    timers.cancel_all()
    await asyncio.sleep(TIMEOUT * 3)
    assert expired == []

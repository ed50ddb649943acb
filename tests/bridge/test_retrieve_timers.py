"""relay.retrieve_timers: a retrieve's timer fires once, no sooner than the timeout, unless its answer disarms it
first; arming an item again restarts its timer; the session's end cancels every timer. Real event-loop timers; each
test checks what it can without racing the machine: a lower bound on when a timer fired, or that a cancelled one
stayed silent past its deadline."""

from __future__ import annotations

import asyncio

from relay.retrieve_timers import RetrieveTimers
from tests.support.timing import seconds

TIMEOUT = 0.05
# A timer may fire this much before its deadline by the loop's clock (asyncio's clock resolution), never earlier.
EARLY = 0.001


async def expired_items(expired: list[str], count: int) -> None:
    """Wait until `count` items have expired."""
    async with asyncio.timeout(seconds(2)):
        while len(expired) < count:
            await asyncio.sleep(TIMEOUT / 10)


async def test_an_armed_item_expires_once_no_sooner_than_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    expired: list[str] = []
    timers = RetrieveTimers(TIMEOUT, expired.append)
    armed_at = loop.time()
    timers.apply([], ["item_1"])
    await expired_items(expired, 1)
    assert loop.time() - armed_at >= TIMEOUT - EARLY
    timers.apply(["item_1"], [])  # its answer after the timeout: nothing left to cancel, nothing fires again
    await asyncio.sleep(TIMEOUT * 2)
    assert expired == ["item_1"]


async def test_an_item_disarmed_before_the_timeout_never_expires() -> None:
    expired: list[str] = []
    timers = RetrieveTimers(TIMEOUT, expired.append)
    timers.apply([], ["item_1", "item_2"])
    timers.apply(["item_1"], [])
    await expired_items(expired, 1)  # item_1's deadline, the same as item_2's, has passed too
    await asyncio.sleep(TIMEOUT)
    assert expired == ["item_2"]


async def test_arming_an_item_again_restarts_its_timer() -> None:
    loop = asyncio.get_running_loop()
    expired: list[str] = []
    timers = RetrieveTimers(TIMEOUT, expired.append)
    timers.apply([], ["item_1"])
    await asyncio.sleep(TIMEOUT / 2)
    rearmed_at = loop.time()
    timers.apply([], ["item_1"])  # a second retrieve of the same item
    await expired_items(expired, 1)
    assert loop.time() - rearmed_at >= TIMEOUT - EARLY  # counted from the second arming, not the first
    await asyncio.sleep(TIMEOUT)
    assert expired == ["item_1"]  # once


async def test_the_sessions_end_cancels_every_timer() -> None:
    expired: list[str] = []
    timers = RetrieveTimers(TIMEOUT, expired.append)
    timers.apply([], ["item_1", "item_2"])
    timers.cancel_all()
    await asyncio.sleep(TIMEOUT * 3)
    assert expired == []

"""`WriteBatch`: chunks added during one loop iteration reach the peer together, in order, right after it; `size`
counts what is held; an explicit `write` sends at once (what must precede another write); `clear` forgets; a
closing transport takes nothing and raises nothing. `at_burst_end`: at the end of a `WriteScope`, else in the next
loop turn; `OncePerBurst`: one run per burst however often it is asked for. Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest

from relay.links.writebatch import OncePerBurst, WriteBatch, WriteScope, at_burst_end
from tests.support.timing import seconds


@pytest.fixture
async def pair() -> AsyncIterator[tuple[asyncio.Transport, asyncio.StreamReader]]:
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(reader)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer = await accepted.get()
    yield cast(asyncio.Transport, writer.transport), peer
    writer.transport.abort()
    server.close()
    await server.wait_closed()


async def test_chunks_of_one_iteration_arrive_in_order_right_after_it(pair: tuple[asyncio.Transport, asyncio.StreamReader]) -> None:
    transport, peer = pair
    batch = WriteBatch(transport)
    for chunk in (b"one ", b"two ", b"", b"three\n"):
        batch.add(chunk)
    assert batch.size == len(b"one two three\n")
    assert transport.get_write_buffer_size() == 0  # nothing written yet: the iteration is not over
    assert await asyncio.wait_for(peer.readline(), seconds(5)) == b"one two three\n"
    assert batch.size == 0


async def test_an_explicit_write_sends_at_once_and_the_scheduled_one_then_finds_nothing(
    pair: tuple[asyncio.Transport, asyncio.StreamReader],
) -> None:
    transport, peer = pair
    batch = WriteBatch(transport)
    batch.add(b"first\n")
    batch.write()
    transport.write(b"second\n")  # what the caller writes after the batch
    assert await asyncio.wait_for(peer.readline(), seconds(5)) == b"first\n"
    assert await asyncio.wait_for(peer.readline(), seconds(5)) == b"second\n"
    await asyncio.sleep(0)  # the scheduled write runs, with nothing left
    batch.add(b"third\n")
    assert await asyncio.wait_for(peer.readline(), seconds(5)) == b"third\n"


async def test_cleared_chunks_are_never_sent_and_a_closing_transport_takes_nothing(
    pair: tuple[asyncio.Transport, asyncio.StreamReader],
) -> None:
    transport, peer = pair
    batch = WriteBatch(transport)
    batch.add(b"\x00\xff garbage that must not go\n")
    batch.clear()
    assert batch.size == 0
    batch.add(b"kept\n")
    assert await asyncio.wait_for(peer.readline(), seconds(5)) == b"kept\n"
    batch.add(b"late\n")
    transport.close()
    await asyncio.sleep(0)  # the scheduled write meets a closing transport: no error
    assert await asyncio.wait_for(peer.read(), seconds(5)) == b""


async def test_without_a_transport_chunks_are_dropped_quietly() -> None:
    batch = WriteBatch(None)
    batch.add(b"nowhere")
    batch.write()
    assert batch.size == 0


async def test_inside_a_write_scope_batches_are_written_when_it_ends_not_a_loop_iteration_later(
    pair: tuple[asyncio.Transport, asyncio.StreamReader],
) -> None:
    transport, peer = pair
    first, second = WriteBatch(transport), WriteBatch(transport)
    with WriteScope():
        first.add(b"a")
        second.add(b"b")
        first.add(b"c")
        with WriteScope():  # an inner scope writes its own batches at its end
            inner = WriteBatch(transport)
            inner.add(b"(inner)")
        assert first.size == 2 and second.size == 1
    # Written synchronously at the scope's end, in the order the batches were first filled.
    assert first.size == second.size == inner.size == 0
    transport.write(b"\n")
    assert await asyncio.wait_for(peer.readline(), seconds(5)) == b"(inner)acb\n"
    batch = WriteBatch(transport)
    batch.add(b"outside\n")  # outside any scope: the loop's next iteration writes it
    assert batch.size == len(b"outside\n")
    assert await asyncio.wait_for(peer.readline(), seconds(5)) == b"outside\n"


async def test_at_burst_end_runs_at_the_end_of_a_write_scope_or_else_in_the_next_loop_turn() -> None:
    ended: list[str] = []

    def pending(name: str) -> Callable[[], None]:
        return lambda: ended.append(name)

    with WriteScope():
        at_burst_end(pending("in scope"))
        assert ended == []
    assert ended == ["in scope"]
    at_burst_end(pending("outside"))
    assert ended == ["in scope"]
    await asyncio.sleep(0)
    assert ended == ["in scope", "outside"]


async def test_a_call_at_the_end_of_a_burst_may_add_calls_to_that_same_burst_which_run_after_it() -> None:
    ended: list[str] = []

    def flush() -> None:  # what the bridge does at the end of an upstream read: its writes join the burst
        ended.append("flush")
        at_burst_end(lambda: ended.append("client batch"))

    with WriteScope():
        at_burst_end(flush)
        at_burst_end(lambda: ended.append("upstream frames"))
    assert ended == ["flush", "upstream frames", "client batch"]
    await asyncio.sleep(0)
    assert ended == ["flush", "upstream frames", "client batch"]  # nothing was left for a later loop turn


async def test_a_call_asked_for_many_times_in_a_burst_runs_once_at_its_end_and_may_be_asked_for_again_after() -> None:
    runs: list[int] = []
    once = OncePerBurst(lambda: runs.append(len(runs)))
    with WriteScope():
        for _ in range(3):
            once.request()
        assert runs == []
    assert runs == [0]
    once.request()  # outside a scope: the next loop turn ends the burst
    once.request()
    assert runs == [0]
    await asyncio.sleep(0)
    assert runs == [0, 1]


async def test_a_call_that_asks_for_itself_again_runs_again_in_that_same_burst() -> None:
    runs: list[str] = []

    def call() -> None:
        runs.append("run")
        if len(runs) == 1:
            once.request()  # what the call caused needs carrying out too

    once = OncePerBurst(call)
    with WriteScope():
        once.request()
    assert runs == ["run", "run"]


async def test_a_call_that_raises_at_the_end_of_a_burst_does_not_keep_the_others_from_running() -> None:
    ended: list[str] = []

    def broken() -> None:
        raise RuntimeError("a bug in one call")

    once = OncePerBurst(lambda: ended.append("once"))
    with pytest.raises(RuntimeError, match="a bug in one call"):
        with WriteScope():
            at_burst_end(broken)
            at_burst_end(lambda: ended.append("write"))
            once.request()
    assert ended == ["write", "once"]
    with WriteScope():
        once.request()  # not left waiting for a burst end that already passed
    assert ended == ["write", "once", "once"]

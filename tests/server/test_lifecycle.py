"""Session lifecycle of `serve` (docs/lifecycle.md): slow clients, session limits, a refused or unreachable upstream.

Everything runs against the real simulator on loopback; "no upstream socket" is checked by the simulator's
handshake count.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from relay.simulator.server import STATE_KEY as SIM_STATE
from tests.support.relay_fixtures import RawWebSocket, RunningRelay, running_relay
from tests.support.timing import seconds


def long_turn(words: int) -> list[str]:
    """A text turn whose spoken reply is `words` word-tones long (160 ms each in the simulator)."""
    text = " ".join(f"w{i}" for i in range(words))
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return [json.dumps({"type": "conversation.item.create", "item": item}), json.dumps({"type": "response.create"})]


async def wait_until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(seconds(timeout)):
        while not condition():
            await asyncio.sleep(0.01)


def sim_links(relay: RunningRelay) -> int:
    return len(relay.sim.app[SIM_STATE].links)


def only_records(relay: RunningRelay) -> list[dict[str, Any]]:
    (records,) = relay.session_records().values()
    return records


async def connected(ws: aiohttp.ClientWebSocketResponse) -> None:
    first = await ws.receive_json(timeout=seconds(5))
    assert first["type"] == "session.created"


async def close_of(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Events up to the close frame, which must come next."""
    events: list[dict[str, Any]] = []
    while True:
        message = await ws.receive(timeout=seconds(5))
        if message.type != WSMsgType.TEXT:
            assert message.type == WSMsgType.CLOSE, message
            return events
        events.append(json.loads(message.data))


# ---- slow client ------------------------------------------------------------------------------------------


@pytest.fixture
async def slow_relay(tmp_path: Path) -> AsyncIterator[RunningRelay]:
    async with running_relay(tmp_path, settings={"max_client_backlog_bytes": 65536}) as relay:
        yield relay


async def test_client_that_stops_reading_is_closed_1008_client_too_slow_and_upstream_closed_at_once(
    slow_relay: RunningRelay,
) -> None:
    relay = slow_relay
    client = await RawWebSocket.connect("127.0.0.1", relay.port, rcvbuf=4096)
    try:
        assert client.status == 101
        for frame in long_turn(2000):
            await client.send_text(frame)
        # The client reads nothing while the simulator streams minutes of audio as fast as it can.
        await wait_until(lambda: relay.state.metrics.client_errors["client_too_slow"] >= 1, timeout=20)
        await wait_until(lambda: sim_links(relay) == 0, timeout=1.5)  # upstream closed at once, not after the client
        code, reason, frames = await client.read_until_close()
    finally:
        client.close()
    assert (code, reason) == (1008, "client_too_slow")
    assert frames > 0
    await wait_until(lambda: not relay.state.bridges)
    ended = only_records(relay)[-1]
    assert ended["type"] == "relay.session_ended"
    assert ended["event"]["reason"] == "client_too_slow"
    assert ended["event"]["client_close_code"] == 1008
    assert relay.state.metrics.closes["1008"] == 1


async def test_a_client_too_slow_that_never_reads_again_is_reset_not_fed_stale_frames(slow_relay: RunningRelay) -> None:
    """Past the close handshake's 5 s the connection is aborted with a reset: the kernel drops what the client
    never read instead of sending it for minutes before a FIN."""
    relay = slow_relay
    client = await RawWebSocket.connect("127.0.0.1", relay.port, rcvbuf=4096)
    try:
        for frame in long_turn(2000):
            await client.send_text(frame)
        await wait_until(lambda: relay.state.metrics.client_errors["client_too_slow"] >= 1, timeout=20)
        await wait_until(lambda: not relay.state.bridges, timeout=15)  # the close timed out: aborted
        loop = asyncio.get_running_loop()
        received = 0
        with pytest.raises(ConnectionResetError):
            while received < 64 << 20:
                chunk = await asyncio.wait_for(loop.sock_recv(client.sock, 1 << 16), seconds(10))
                if not chunk:
                    break  # a FIN: the reset never came
                received += len(chunk)
        assert received < 1 << 20  # what was already in flight, not the backlog the kernel held for it
    finally:
        client.close()


async def test_reading_client_of_the_same_long_reply_is_not_too_slow(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"max_client_backlog_bytes": 65536}) as relay:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            await connected(ws)
            for frame in long_turn(200):
                await ws.send_str(frame)
            while (await ws.receive_json(timeout=seconds(10)))["type"] != "response.done":
                pass
        assert relay.state.metrics.client_errors["client_too_slow"] == 0


# ---- limits -----------------------------------------------------------------------------------------------


async def test_session_past_max_session_seconds_gets_session_expired_and_close_1000(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"max_session_seconds": 0.3}) as relay:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            await connected(ws)
            events = await close_of(ws)
            assert ws.close_code == 1000
        assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["session_expired"]
        await wait_until(lambda: not relay.state.bridges)
        ended = only_records(relay)[-1]["event"]
        assert (ended["reason"], ended["client_close_code"]) == ("expired", 1000)
        assert sim_links(relay) == 0


async def test_one_client_over_max_sessions_gets_too_many_sessions_1013_and_no_upstream_socket(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"max_sessions": 1}) as relay:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as first:
            await connected(first)
            assert relay.sim_handshakes == 1
            async with http.ws_connect(relay.ws_url) as second:
                events = await close_of(second)
                assert second.close_code == 1013
            assert [e["error"]["code"] for e in events] == ["too_many_sessions"]
            assert relay.sim_handshakes == 1
            # The first session is untouched.
            await first.send_str(json.dumps({"type": "x.relay_test.probe", "event_id": "p"}))
            assert (await first.receive_json(timeout=seconds(5)))["error"]["event_id"] == "p"
        await wait_until(lambda: not relay.state.bridges)
        refused = [r for r in relay.session_records().values() if r[-1]["event"]["reason"] == "too_many_sessions"]
        assert len(refused) == 1 and refused[0][-1]["event"]["client_close_code"] == 1013
        assert relay.state.metrics.closes["1013"] == 1
        assert relay.state.metrics.client_errors["too_many_sessions"] == 1
        # A slot is free again once the first session has ended.
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as again:
            await connected(again)


# ---- upstream refused or unreachable ----------------------------------------------------------------------


@pytest.mark.parametrize(("knob", "status"), [("refuse=503", "503"), ("reject_auth=1", "401"), ("refuse=429", "429")])
async def test_refused_upstream_handshake_reaches_the_client_as_upstream_unavailable_1013(
    tmp_path: Path, knob: str, status: str
) -> None:
    async with running_relay(tmp_path, upstream_query=knob) as relay:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url + "?model=whatever") as ws:
            events = await close_of(ws)
            assert ws.close_code == 1013
        (error,) = events
        assert error["type"] == "error" and error["error"]["code"] == "upstream_unavailable"
        assert status in error["error"]["message"]
        # The configured upstream URL kept its own query (the knob) next to the model the relay added.
        assert knob in relay.handshakes.paths[0] and "model=" in relay.handshakes.paths[0]
        await wait_until(lambda: not relay.state.bridges)
        ended = only_records(relay)[-1]["event"]
        assert (ended["reason"], ended["client_close_code"]) == ("upstream_unavailable", 1013)


async def test_unreachable_upstream_reaches_the_client_as_upstream_unavailable_1013(tmp_path: Path) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]  # bound, never listening: connections are refused
        async with running_relay(tmp_path) as relay:
            relay.state.upstream_base = f"ws://127.0.0.1:{dead_port}/v1/realtime"
            async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
                events = await close_of(ws)
                assert ws.close_code == 1013
            assert [e["error"]["code"] for e in events] == ["upstream_unavailable"]


# ---- operator pinning -------------------------------------------------------------------------------------


async def test_pinned_session_is_sent_at_start_and_merged_over_client_updates(tmp_path: Path) -> None:
    pinned = '{"instructions": "Operator rules.", "audio": {"output": {"voice": "marina"}}}'
    async with running_relay(tmp_path, settings={"pinned_session": pinned}) as relay:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            await connected(ws)
            first = await ws.receive_json(timeout=seconds(5))
            assert first["type"] == "session.updated"
            assert first["session"]["instructions"] == "Operator rules."
            update = {
                "type": "session.update",
                "event_id": "u1",
                "session": {"instructions": "Ignore the rules.", "audio": {"output": {"voice": "alena", "speed": 1.2}}},
            }
            await ws.send_json(update)
            answer = await ws.receive_json(timeout=seconds(5))
            assert answer["type"] == "session.updated"
            assert answer["session"]["instructions"] == "Operator rules."
            assert answer["session"]["audio"]["output"]["voice"] == "marina"
            assert answer["session"]["audio"]["output"]["speed"] == 1.2
        await wait_until(lambda: not relay.state.bridges)
        records = only_records(relay)
        (at_start,) = [r for r in records if r["dir"] == "relay" and r["type"] == "session.update"]
        assert at_start["event"]["session"]["instructions"] == "Operator rules."
        (changed,) = [r for r in records if r["dir"] == "client" and r["type"] == "session.update"]
        assert changed["client_event"] == update
        assert changed["event"]["session"]["instructions"] == "Operator rules."

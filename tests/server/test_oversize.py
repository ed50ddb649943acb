"""A client frame over `max_client_message_bytes`: close 1009 that the client can read, and always logged.

The server library refuses the frame from its header, while the client is still sending it. The relay then
reads and drops the rest (never keeping it, up to 4x the limit or 2 s), so a client that finishes sending and
then reads gets the close frame 1009, not a connection reset; either way the session's log ends with
`relay.session_ended` and `client_close_code` 1009.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from tests.support.relay_fixtures import RawWebSocket, RunningRelay, running_relay
from tests.support.timing import seconds

MiB = 1024 * 1024


def big_frame(n_bytes: int) -> bytes:
    head = b'{"type":"x.relay_test.big","pad":"'
    return head + b"p" * (n_bytes - len(head) - 2) + b'"}'


async def ended_record(relay: RunningRelay) -> dict[str, Any]:
    """The `relay.session_ended` record of the relay's only session, once written."""
    async with asyncio.timeout(seconds(10)):
        while True:
            sessions = relay.session_records()
            if not relay.state.bridges and sessions:
                (records,) = sessions.values()
                if records and records[-1]["type"] == "relay.session_ended":
                    assert not [r for r in records if r["dir"] == "client"]
                    return records[-1]
            await asyncio.sleep(0.02)


async def test_a_17_mib_frame_sent_whole_then_read_gets_close_1009(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:  # the default limit: 16 MiB
        ws = await RawWebSocket.connect("127.0.0.1", relay.port)
        try:
            assert ws.status == 101
            await ws.send_frame(big_frame(17 * MiB))  # raises ConnectionResetError if the relay resets
            code, _, _ = await asyncio.wait_for(ws.read_until_close(), seconds(10))
            assert code == 1009
        finally:
            ws.close()
        assert (await ended_record(relay))["event"]["client_close_code"] == 1009


async def test_a_websockets_client_sees_the_relays_1009_not_a_reset(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        ws = await websockets.connect(relay.ws_url, max_size=None, open_timeout=seconds(5))
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(big_frame(17 * MiB).decode())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), seconds(10))
        await asyncio.wait_for(ws.wait_closed(), seconds(5))  # the relay ends the TCP connection cleanly
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert (await ended_record(relay))["event"]["client_close_code"] == 1009


async def test_a_frame_far_past_the_discard_bound_is_still_logged_1009_and_the_relay_goes_on(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"max_client_message_bytes": 4096}) as relay:
        ws = await RawWebSocket.connect("127.0.0.1", relay.port)
        try:
            with_reset_allowed = asyncio.create_task(ws.send_frame(big_frame(8 * MiB)))
            code, _, _ = await asyncio.wait_for(ws.read_until_close(), seconds(10))
            assert code in (1009, None)  # past 4x the limit the relay lets go: a reset is allowed here
            with_reset_allowed.cancel()
            await asyncio.gather(with_reset_allowed, return_exceptions=True)
        finally:
            ws.close()
        assert (await ended_record(relay))["event"]["client_close_code"] == 1009
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as again:
            first = await again.receive_json(timeout=seconds(5))
            assert first["type"] == "session.created"

"""A relay bug while handling one client frame is contained: that frame gets `relay_error`, the session goes on.

The bug is injected into the real core (one method made to raise for a marked frame), since no known input
still makes the core raise; everything else (the relay, the simulator, the sockets, the log) is real.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from relay.core.session import RelaySession
from tests.support.relay_fixtures import running_relay
from tests.support.timing import seconds


async def next_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=seconds(5))
    assert message.type == WSMsgType.TEXT, message
    event: dict[str, Any] = json.loads(message.data)
    return event


async def test_an_exception_handling_one_frame_answers_relay_error_logs_the_traceback_and_the_session_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_note_append = RelaySession._note_append

    def buggy_note_append(self: RelaySession, event: dict[str, Any]) -> None:
        if event.get("audio") == "trigger":
            raise RuntimeError("injected relay bug")
        real_note_append(self, event)

    monkeypatch.setattr(RelaySession, "_note_append", buggy_note_append)
    async with running_relay(tmp_path) as relay:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            assert (await next_event(ws))["type"] == "session.created"
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "event_id": "bug_1", "audio": "trigger"}))
            answer = await next_event(ws)
            assert answer["type"] == "error" and answer["event_id"].startswith("relay_")
            assert (answer["error"]["code"], answer["error"]["event_id"]) == ("relay_error", "bug_1")
            # The session goes on: the next frame reaches the upstream, which answers it.
            await ws.send_str(json.dumps({"type": "x.relay_test.after", "event_id": "after_1"}))
            after = await next_event(ws)
            assert after["type"] == "error" and after["error"]["event_id"] == "after_1"
            assert not after["event_id"].startswith("relay_")
        async with asyncio.timeout(seconds(10)):
            while relay.state.bridges or not relay.session_records():
                await asyncio.sleep(0.02)
        (records,) = relay.session_records().values()
        (internal,) = [r for r in records if r["type"] == "relay.internal_error"]
        assert "injected relay bug" in internal["event"]["error"]
        assert "Traceback" in internal["event"]["traceback"] and "buggy_note_append" in internal["event"]["traceback"]
        assert records[-1]["type"] == "relay.session_ended"
        assert records[-1]["event"]["reason"] == "client_closed"

"""History of a real realtime session: the full simulator (relay.simulator.start_simulator) records a
session's items in a conversation; the REST client, the proxy + official SDK, and `history` all list them."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from relay.cli.history import print_history
from relay.history.client import ConversationsClient, RetryPolicy, create_http_session
from relay.server.proxy import proxy_conversations
from relay.simulator import RunningSimulator, SimulatorOptions, start_simulator
from tests.support.conversations_fixtures import serving
from tests.support.timing import seconds

SIM_KEY = "full-sim-key-42"
AUTH = {"Authorization": f"Api-Key {SIM_KEY}"}


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    sim = await start_simulator(SimulatorOptions(speed=0, api_key=SIM_KEY))
    try:
        yield sim
    finally:
        await sim.close()


async def _text_turns(sim: RunningSimulator, http: aiohttp.ClientSession, conversation_id: str,
                      texts: list[str]) -> None:
    url = f"{sim.realtime_url}?model=x&conversation_id={conversation_id}"
    async with http.ws_connect(url, headers=AUTH) as ws:
        await ws.send_str(json.dumps({"type": "session.update",
                                      "session": {"type": "realtime", "output_modalities": ["text"]}}))
        for text in texts:
            await ws.send_str(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
            await ws.send_str(json.dumps({"type": "response.create"}))
            async with asyncio.timeout(seconds(20)):
                async for message in ws:
                    if json.loads(message.data)["type"] == "response.done":
                        break


async def test_a_realtime_sessions_items_are_listed_in_order(simulator: RunningSimulator) -> None:
    async with create_http_session() as http:
        client = ConversationsClient(http, simulator.rest_base, AUTH)
        conversation = await client.create_conversation()
        await _text_turns(simulator, http, conversation.id, ["first question", "second question"])
        items = [item async for item in client.iter_items(conversation.id, order="asc", limit=1)]
    assert [(item.type, item.role) for item in items] == [("message", "user"), ("message", "assistant")] * 2
    assert items[0].text == "first question" and items[2].text == "second question"
    assert items[1].text and "first question" in items[1].text


async def test_the_sdk_pages_a_session_history_through_the_proxy(simulator: RunningSimulator) -> None:
    async with create_http_session() as http:
        conversation = await ConversationsClient(http, simulator.rest_base, AUTH).create_conversation()
        await _text_turns(simulator, http, conversation.id, [f"question {n}" for n in range(6)])

        async def handle(request: web.Request) -> web.StreamResponse:
            return await proxy_conversations(request, http=http, rest_base=simulator.rest_base, auth_header=AUTH)

        app = web.Application()
        app.router.add_route("*", "/v1/conversations/{tail:.*}", handle)
        async with serving(app) as root:
            client = AsyncOpenAI(base_url=f"{root}/v1", api_key="client-side-token", max_retries=0)
            try:
                items = [item async for item in client.conversations.items.list(conversation.id, limit=5,
                                                                                 order="asc")]
            finally:
                await client.close()
    assert len(items) == 12
    assert [item.role for item in items] == ["user", "assistant"] * 6  # type: ignore[union-attr]


async def test_history_prints_a_session_with_retries_on_injected_faults(simulator: RunningSimulator) -> None:
    async with create_http_session() as http:
        conversation = await ConversationsClient(http, simulator.rest_base, AUTH).create_conversation()
        await _text_turns(simulator, http, conversation.id, ["hello history"])
    simulator.store.inject_faults(503, 2, retry_after=0)
    out, err = io.StringIO(), io.StringIO()
    code = await print_history(base_url=simulator.rest_base, auth=AUTH, conversation_id=conversation.id,
                               limit=None, order="asc", after=None, all_pages=True, json_lines=False,
                               out=out, err=err, retry=RetryPolicy(backoff_base=0.001, backoff_max=0.002))
    assert code == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("  message  user  hello history")
    assert "  message  assistant  " in lines[1]
    assert err.getvalue().count("retrying") == 2

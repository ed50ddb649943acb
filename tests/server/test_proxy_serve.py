"""The REST proxy as `serve` mounts it (relay.server.app.create_app), in front of the full simulator (docs/history.md).

The relay's upstream is the simulator's realtime URL, so the REST base is derived from it (ws://H/v1/realtime
-> http://H/v1); the relay's credentials come from YANDEX_API_KEY; clients use a static client token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from openai import AsyncOpenAI, AuthenticationError

from relay.server.app import create_app
from relay.settings import Secret, Settings
from relay.simulator import RunningSimulator, SimulatorOptions, start_simulator
from tests.support.conversations_fixtures import serving

SIM_KEY = "serve-upstream-key-9d2e"
CLIENT_TOKEN = "serve-client-token-51b7"


@dataclass
class Served:
    simulator: RunningSimulator
    relay_base: str  # http://127.0.0.1:PORT/v1


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Served]:
    monkeypatch.setenv("YANDEX_API_KEY", SIM_KEY)
    monkeypatch.delenv("YANDEX_IAM_TOKEN", raising=False)
    simulator = await start_simulator(SimulatorOptions(speed=0, api_key=SIM_KEY))
    settings = Settings(upstream=simulator.realtime_url, client_tokens=(Secret(CLIENT_TOKEN),),
                        token_secret=Secret("x" * 32), log_dir=str(tmp_path / "logs"),
                        data_dir=str(tmp_path / "data"), event_log_files=False)
    try:
        async with serving(create_app(settings)) as root:
            yield Served(simulator=simulator, relay_base=f"{root}/v1")
    finally:
        await simulator.close()


def _seed(simulator: RunningSimulator, count: int) -> tuple[str, list[str]]:
    store = simulator.store
    conversation_id = store.create_conversation()["id"]
    ids = [store.add_item(conversation_id, {"type": "message", "role": "user", "status": "completed",
                                            "content": [{"type": "input_text", "text": f"n{n}"}]})["id"]
           for n in range(count)]
    return conversation_id, ids


async def test_the_sdk_pages_a_long_conversation_through_serve(served: Served) -> None:
    conversation_id, ids = _seed(served.simulator, 250)
    client = AsyncOpenAI(base_url=served.relay_base, api_key=CLIENT_TOKEN, max_retries=0)
    try:
        listed = [item.id async for item in client.conversations.items.list(conversation_id, limit=100,
                                                                             order="asc")]
        newest = [item.id async for item in client.conversations.items.list(conversation_id)]
    finally:
        await client.close()
    assert listed == ids
    assert newest == ids[::-1]


async def test_serve_refuses_an_unauthenticated_client(served: Served) -> None:
    conversation_id, _ = _seed(served.simulator, 1)
    anonymous = AsyncOpenAI(base_url=served.relay_base, api_key="not-a-client-token", max_retries=0)
    try:
        with pytest.raises(AuthenticationError):
            await anonymous.conversations.items.list(conversation_id)
    finally:
        await anonymous.close()
    async with aiohttp.ClientSession() as http:
        # The upstream key itself is not a client token either.
        response = await http.get(f"{served.relay_base}/conversations/{conversation_id}/items",
                                  headers={"Authorization": f"Api-Key {SIM_KEY}"})
        assert response.status == 401
        bare = await http.post(f"{served.relay_base}/conversations")
        assert bare.status == 401
    assert served.simulator.store.item_count(conversation_id) == 1
    assert len(served.simulator.store.list_items(conversation_id)["data"]) == 1


async def test_serve_never_shows_the_upstream_key(served: Served) -> None:
    conversation_id, _ = _seed(served.simulator, 3)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {CLIENT_TOKEN}"}) as http:
        for url in (f"{served.relay_base}/conversations/{conversation_id}/items",
                    f"{served.relay_base}/conversations/{conversation_id}/items?limit=0",
                    f"{served.relay_base}/conversations/conv_unknown"):
            response = await http.get(url)
            assert SIM_KEY not in await response.text()
            assert all(SIM_KEY not in value for value in response.headers.values())


async def test_serve_passes_api_errors_through(served: Served) -> None:
    conversation_id, _ = _seed(served.simulator, 1)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {CLIENT_TOKEN}"}) as http:
        too_many = await http.get(f"{served.relay_base}/conversations/{conversation_id}/items?limit=101")
        unknown = await http.get(f"{served.relay_base}/conversations/conv_unknown/items")
        assert too_many.status == 400 and "between 1 and 100" in (await too_many.json())["error"]["message"]
        assert unknown.status == 404 and (await unknown.json())["error"]["code"] == "conversation_not_found"

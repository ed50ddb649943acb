"""The paths a realtime client may use to reach `serve` (README, Commands): `/v1/realtime`, and the older
`/v1/realtime/openai` that Yandex's own example voice agent still connects to. Both are the same route: same
auth, same session, and the upstream is always reached at its configured URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.timing import seconds

STATIC = "static-token-for-tests"
MODEL_QUERY = "?model=gpt://b1gfolder/speech-realtime-250923"


@pytest.fixture
async def relay(tmp_path: Path) -> Any:
    async with running_relay(tmp_path, settings={"client_tokens": STATIC}) as running:
        yield running


async def test_the_old_openai_path_opens_a_session_as_yandex_example_clients_expect(relay: RunningRelay) -> None:
    url = f"ws://127.0.0.1:{relay.port}/v1/realtime/openai{MODEL_QUERY}"
    async with aiohttp.ClientSession() as http:
        # The example's own header, scheme in lower case.
        async with http.ws_connect(url, headers={"Authorization": f"api-key {STATIC}"}) as ws:
            first = await ws.receive_json(timeout=seconds(5))
            assert first["type"] == "session.created"
            await ws.send_json({"type": "session.update", "session": {"instructions": "hi"}})
            updated = await ws.receive_json(timeout=seconds(5))
            assert updated["type"] == "session.updated"
            assert updated["session"]["instructions"] == "hi"
    assert relay.sim_handshakes == 1
    assert relay.handshakes.paths[0].startswith("/v1/realtime?")  # the upstream's own path, not the client's


async def test_the_old_openai_path_needs_a_token_like_v1_realtime(relay: RunningRelay) -> None:
    url = f"ws://127.0.0.1:{relay.port}/v1/realtime/openai{MODEL_QUERY}"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with http.ws_connect(url):
                pass
    assert refused.value.status == 401
    assert relay.sim_handshakes == 0
    assert relay.log_files() == []

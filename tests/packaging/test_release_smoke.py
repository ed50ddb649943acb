"""The installed package as a new user meets it: `serve` with no configuration and an openai SDK turn through it.

.ci/lowest-versions runs this file in a venv holding the lowest dependency versions pyproject.toml allows, so the
floors it declares are checked by a real session, not assumed.
"""

from __future__ import annotations

from pathlib import Path

from openai import AsyncOpenAI

from tests.support.relay_fixtures import running_relay_process


async def test_serve_with_no_configuration_answers_an_sdk_text_turn(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path, upstream=None) as relay:
        client = AsyncOpenAI(api_key="unused", base_url=f"{relay.base_url}/v1")
        async with client.realtime.connect(model="speech-realtime-250923") as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}
            )
            await conn.response.create()
            types = []
            async for event in conn:
                types.append(event.type)
                if event.type == "response.done":
                    assert event.response.status == "completed"
                    break
    assert "response.created" in types
    assert any(t.startswith("response.output_") and t.endswith(".delta") for t in types)

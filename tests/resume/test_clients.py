"""Resume as the other kinds of client see it: the official `openai` SDK, `mic` mode, and `serve` draining on
SIGTERM while a resume is under way (docs/resume.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from openai import AsyncOpenAI

from relay.simulator import SimulatorOptions, start_simulator
from tests.mic.test_session import Session, utterance
from tests.resume.test_session import relay_behind_proxy, user_text
from tests.support.relay_fixtures import running_relay_process
from tests.support.resume_fixtures import dropping_proxy
from tests.support.timing import seconds


async def test_the_openai_sdk_sees_a_failed_response_then_the_session_goes_on(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path, sim_speed=1.0) as (relay, proxy):
        client = AsyncOpenAI(api_key="unused", base_url=f"{relay.base_url}/v1")
        types: list[str] = []
        dones: list[Any] = []
        async with client.realtime.connect(model="speech-realtime-250923") as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.conversation.item.create(item=user_text("my name is Ada")["item"])  # type: ignore[arg-type]
            await conn.response.create()
            async for event in conn:
                types.append(event.type)
                if event.type == "response.output_audio.delta" and len(proxy.sockets) == 1:
                    await (await proxy.connection(0)).drop()
                if event.type == "response.done":
                    dones.append(event)
                    if len(dones) == 1:
                        await conn.conversation.item.create(item=user_text("recall")["item"])  # type: ignore[arg-type]
                        await conn.response.create()
                    else:
                        break
    assert dones[0].response.status == "failed"
    assert dones[0].response.status_details is not None and dones[0].response.status_details.error is not None
    assert dones[0].response.status_details.error.code == "upstream_interrupted"
    assert dones[1].response.status == "completed"
    transcript = dones[1].response.output[0].content[0].transcript  # type: ignore[union-attr]
    assert transcript == 'Earlier you said: "my name is Ada".'
    assert "error" not in types and "session.created" not in types  # the new upstream's stays hidden


async def test_mic_mode_resumes_and_answers_the_next_utterance(tmp_path: Path) -> None:
    sim = await start_simulator(SimulatorOptions(speed=0.0))
    try:
        async with dropping_proxy(sim.realtime_url) as proxy:
            s = Session(tmp_path, upstream=proxy.url)
            await s.until(lambda: s.agent.ready, "session.created")
            s.card.say(utterance(1.0))
            await s.until(lambda: s.shown("assistant done"), "the first reply")
            await (await proxy.connection(0)).drop()
            second = await proxy.connection(1)
            await proxy.until(second, lambda frames: any(f.get("type") == "session.update" for f in frames))
            s.card.say(utterance(1.2, pitch=180.0))
            await s.until(lambda: sum("assistant done" in line for line in s.display.lines) >= 2, "the reply after the drop")
            await s.finish()
    finally:
        await sim.close()
    files = sorted((tmp_path / "logs").glob("*/*.jsonl"))
    records = [orjson.loads(line) for line in files[0].read_bytes().splitlines()]
    types = [r["type"] for r in records]
    assert "relay.upstream_interrupted" in types and "relay.upstream_resumed" in types
    assert records[-1]["event"]["resumes"] == 1
    assert records[-1]["event"]["reason"] == "client_closed"


async def test_sigterm_during_a_resume_closes_the_client_with_1001(tmp_path: Path) -> None:
    sim = await start_simulator(SimulatorOptions(speed=0.0))
    try:
        async with dropping_proxy(sim.realtime_url) as proxy:
            env = {"RELAY_DRAIN_SECONDS": "0.3"}
            async with running_relay_process(tmp_path, upstream=proxy.url, env=env) as proc:
                async with aiohttp.ClientSession() as http, http.ws_connect(proc.ws_url + "?relay_events=1") as ws:
                    first = json.loads((await ws.receive(timeout=seconds(10))).data)
                    assert first["type"] == "session.created"
                    proxy.refuse = 503  # the resume keeps trying: 0.5 s, 1 s, 2 s (+-50%) apart
                    await (await proxy.connection(0)).drop()
                    async with asyncio.timeout(seconds(5)):
                        while proxy.handshakes < 2:
                            await asyncio.sleep(0.01)
                    proc.terminate()
                    seen: list[str] = []
                    async with asyncio.timeout(seconds(5)):
                        while (message := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                            seen.append(json.loads(message.data)["type"])
                assert ws.close_code == 1001
                assert await proc.wait() == 0
    finally:
        await sim.close()
    assert "error" not in seen and "relay.upstream_interrupted" in seen
    files = sorted((tmp_path / "logs").glob("*/*.jsonl"))
    records = [orjson.loads(line) for line in files[0].read_bytes().splitlines()]
    assert records[-1]["type"] == "relay.session_ended"
    assert (records[-1]["event"]["client_close_code"], records[-1]["event"]["reason"]) == (1001, "drain")
    failed = next(r for r in records if r["type"] == "relay.upstream_resume_failed")
    assert failed["event"]["reason"] == "session_ending"

"""Helpers for the simulator's tests: a driver for the pure session and a validating WebSocket client.

Every server event either helper sees is checked with `tests.support.schema_oracle.validate_server_event` and for a
unique `event_id`, so each test flow also proves the events are valid.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from relay.simulator.items import AudioArchive
from relay.simulator.knobs import Knobs
from relay.simulator.session import SimSession
from tests.support.schema_oracle import validate_server_event
from tests.support.timing import seconds


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class EventChecker:
    """Validates events against the oracle and checks event_id uniqueness."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour
        self.seen_ids: set[str] = set()
        self.events: list[dict[str, Any]] = []

    def check(self, event: dict[str, Any]) -> dict[str, Any]:
        validate_server_event(event, self.flavour)
        assert event["event_id"] not in self.seen_ids, f"duplicate event_id {event['event_id']}"
        self.seen_ids.add(event["event_id"])
        self.events.append(event)
        return event


class Driver:
    """Feeds a pure SimSession and returns what it emitted, validated."""

    def __init__(self, flavour: str = "yandex", knobs: Knobs | None = None, **kwargs: Any) -> None:
        self.archive = AudioArchive()
        self.session = SimSession(flavour, "gpt://test/model", knobs, archive=self.archive, **kwargs)  # type: ignore[arg-type]
        self.checker = EventChecker(flavour)
        self.session.start()
        self.created = self._drain()

    def _drain(self) -> list[dict[str, Any]]:
        return [self.checker.check(e) for e in self.session.drain()]

    def send(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.session.receive_event(event)
        return self._drain()

    def send_text(self, text: str) -> list[dict[str, Any]]:
        self.session.receive_text(text)
        return self._drain()

    def append(self, pcm16: bytes, rate: int, chunk_ms: int = 20, finish_responses: bool = True) -> list[dict[str, Any]]:
        """Append audio in chunks; with `finish_responses`, live responses are streamed to their end in between."""
        out: list[dict[str, Any]] = []
        step = rate * chunk_ms // 1000 * 2
        for i in range(0, len(pcm16), step):
            out += self.send({"type": "input_audio_buffer.append", "audio": b64(pcm16[i : i + step])})
            if finish_responses:
                out += self.finish()
        return out

    def step(self) -> list[dict[str, Any]]:
        self.session.step_response()
        return self._drain()

    def finish(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        guard = 0
        while self.session.responding:
            out += self.step()
            guard += 1
            assert guard < 100_000, "response never ends"
        return out


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def first(events: list[dict[str, Any]], type_: str) -> dict[str, Any]:
    for event in events:
        if event["type"] == type_:
            return event
    raise AssertionError(f"no {type_} in {types(events)}")


def audio_of(events: list[dict[str, Any]], item_id: str | None = None) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"])
        for e in events
        if e["type"] == "response.output_audio.delta" and (item_id is None or e["item_id"] == item_id)
    )


class SimClient:
    """A raw WebSocket client of a running simulator that validates everything it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, flavour: str) -> None:
        self.ws = ws
        self.checker = EventChecker(flavour)

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(event))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=seconds(timeout))
        assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type}: {msg.data!r}"
        return self.checker.check(json.loads(msg.data))

    async def until(self, type_: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(seconds(timeout)):
            while True:
                out.append(await self.recv(timeout))
                if out[-1]["type"] == type_:
                    return out

    async def append(self, pcm16: bytes, rate: int, chunk_ms: int = 20) -> None:
        step = rate * chunk_ms // 1000 * 2
        for i in range(0, len(pcm16), step):
            await self.send({"type": "input_audio_buffer.append", "audio": b64(pcm16[i : i + step])})


@asynccontextmanager
async def connect(url: str, flavour: str, **kwargs: Any) -> AsyncIterator[SimClient]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, autoping=True, **kwargs) as ws:
        yield SimClient(ws, flavour)

"""Thousands of client frames through `serve`: valid events, wrong field types, junk, binary, bad UTF-8, oversize.

Every answer is checked against the relay's rules for client input (docs/client-input.md):
- non-JSON, non-object, over-deep JSON -> `error` `invalid_json`; no string `type` -> `missing_type`; binary ->
  `binary_not_supported`; a pinned `session.update` whose `session` is not an object -> `invalid_value` with
  `param: session`; each with the frame's string `event_id` echoed, `type: invalid_request_error`, the error
  event's own `event_id` starting `relay_`; nothing of such a frame is forwarded;
- every other frame, whatever its fields hold, is forwarded and answered by the upstream only;
- the socket stays open through all of it; only invalid UTF-8 (close 1007) and a frame over the size limit
  (close 1009) end it;
- each session's log holds every forwarded frame exactly once, in order, with `seq` gapless.

The frames come from a seeded generator: a fixed seed and a random one, printed on failure so it can be replayed
(`RELAY_TEST_FUZZ_SEED=N`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.timing import seconds

LIMIT = 64 * 1024  # max_client_message_bytes for this test: oversize frames stay cheap
FIXED_SEED = 17
FRAMES = 2500
BATCH = 25  # frames between two probes
RELAY_CODES = {"invalid_json", "missing_type", "binary_not_supported", "invalid_value"}
AUDIO = base64.b64encode(b"\x00\x00" * 480).decode()
CORE_READ_TYPES = [
    "conversation.item.truncate",
    "input_audio_buffer.append",
    "session.update",
    "conversation.item.retrieve",
    "conversation.item.create",
    "conversation.item.delete",
    "input_audio_buffer.clear",
    "input_audio_buffer.commit",
    "response.cancel",
]
FIELDS = ["item_id", "audio_end_ms", "content_index", "audio", "session", "item", "previous_item_id", "event_id"]


@dataclass
class Frame:
    """One frame to send and what the contract says must happen to it."""

    payload: bytes
    binary: bool = False
    relay_code: str | None = None  # the relay's own error code, when it must answer instead of forwarding
    event_id: str | None = None  # the string event_id the answer must echo
    close: int | None = None  # a close the contract ends the socket with
    forwarded_type: str | None = None  # set when the frame must reach the upstream (and the log)


@dataclass
class Generator:
    rng: random.Random
    counter: int = 0
    pinned: bool = True

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth > 3 or r < 0.55:
            return self.rng.choice(
                [
                    None,
                    True,
                    False,
                    0,
                    -1,
                    2**63,
                    1.5,
                    -0.0,
                    1e300,
                    "",
                    "item_1",
                    "x" * self.rng.choice([1, 100, 10_000]),
                    "\u0436\u00e9\U0001f600",
                    AUDIO,
                    "relay_retrieve_item_1",
                ]
            )
        if r < 0.75:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 3))]
        if r < 0.95:
            return {self.rng.choice([*FIELDS, "type", "id", "content"]): self.value(depth + 1) for _ in range(3)}
        return nested(self.rng.choice([50, 300, 511]))

    def _event_id(self) -> str:
        self.counter += 1
        return f"fz_{self.counter}"

    def frame(self) -> Frame:
        r = self.rng.random()
        if r < 0.30:
            return self.valid()
        if r < 0.65:
            return self.mutated()
        if r < 0.72:
            text = self.rng.choice(["not json", "{", "", " ", "NaN", '{"type": "a", "n": NaN}', "[1,", "\u00e9", "{}}"])
            return Frame(text.encode(), relay_code="invalid_json")
        if r < 0.78:
            text = json.dumps(self.rng.choice([[], [{"type": "session.update"}], 1, "session.update", None, True, 2.5]))
            return Frame(text.encode(), relay_code="invalid_json")
        if r < 0.84:
            event_id = self._event_id()
            bad_type = self.rng.choice([None, 5, [], {}, True])
            event = {"event_id": event_id} if self.rng.random() < 0.3 else {"type": bad_type, "event_id": event_id}
            return Frame(json.dumps(event).encode(), relay_code="missing_type", event_id=event_id)
        if r < 0.88:
            return Frame(self.rng.randbytes(self.rng.randint(0, 300)), binary=True, relay_code="binary_not_supported")
        if r < 0.92:
            depth = self.rng.choice([513, 600, 2000])
            text = '{"type":"x","a":' + "[" * depth + "]" * depth + "}"
            return Frame(text.encode(), relay_code="invalid_json")
        if r < 0.96:
            event_id = self._event_id()
            session = self.rng.choice(["x", 5, [], None, True, [{"instructions": "x"}]])
            text = json.dumps({"type": "session.update", "event_id": event_id, "session": session})
            if self.pinned:
                return Frame(text.encode(), relay_code="invalid_value", event_id=event_id)
            return Frame(text.encode(), forwarded_type="session.update")
        if r < 0.98:
            junk = self.rng.choice([b"\xff\xfe", b'{"type":"x","t":"\xc3"}', b"\xed\xa0\x80", b"ok\x80"])
            return Frame(junk, close=1007)
        size = self.rng.randint(LIMIT + 1, 4 * LIMIT)
        head = b'{"type":"x.fuzz.big","pad":"'
        return Frame(head + b"p" * (size - len(head) - 2) + b'"}', close=1009)

    def valid(self) -> Frame:
        event_id = self._event_id()
        event: dict[str, Any] = self.rng.choice(
            [
                {"type": "input_audio_buffer.append", "audio": AUDIO},
                {"type": "input_audio_buffer.clear"},
                {"type": "session.update", "session": {"instructions": "fuzz"}},
                {"type": "conversation.item.retrieve", "item_id": "item_missing"},
                {"type": "conversation.item.truncate", "item_id": "item_missing", "content_index": 0, "audio_end_ms": 9},
                {"type": "conversation.item.delete", "item_id": "item_missing"},
                {"type": "x.fuzz.unknown", "n": 1},
            ]
        )
        event["event_id"] = event_id
        return Frame(json.dumps(event).encode(), forwarded_type=event["type"])

    def mutated(self) -> Frame:
        kind = self.rng.choice(CORE_READ_TYPES)
        event: dict[str, Any] = {"type": kind}
        for name in self.rng.sample(FIELDS, self.rng.randint(1, 4)):
            event[name] = self.value()
        if levels(event) > 512:
            return Frame(json.dumps(event).encode(), relay_code="invalid_json")
        if kind == "session.update" and self.pinned and "session" in event and not isinstance(event["session"], dict):
            event_id = event.get("event_id")
            return Frame(
                json.dumps(event).encode(),
                relay_code="invalid_value",
                event_id=event_id if isinstance(event_id, str) else None,
            )
        return Frame(json.dumps(event).encode(), forwarded_type=kind)


def levels(value: Any) -> int:
    """How deeply containers nest in `value` (the outermost counted)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth - 1):  # the event object holding it adds the last level
        value = [value]
    return value


@dataclass
class Outcome:
    """What one connection saw; compared with the log afterwards."""

    forwarded: list[Frame] = field(default_factory=list)
    relay_errors: int = 0


def check_relay_error(event: dict[str, Any], frame: Frame) -> None:
    assert event["type"] == "error" and str(event.get("event_id", "")).startswith("relay_"), event
    error = event["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == frame.relay_code, (error, frame.payload[:200])
    assert error["event_id"] == frame.event_id
    if frame.relay_code == "invalid_value":
        assert error["param"] == "session"


def is_relay_error(event: dict[str, Any]) -> bool:
    return event.get("type") == "error" and str(event.get("event_id", "")).startswith("relay_")


async def probe(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    """Everything the client receives up to the upstream's answer to a probe sent now."""
    probe_id = f"probe_{n}"
    await ws.send_str(json.dumps({"type": "x.fuzz.probe", "event_id": probe_id}))
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(seconds(10)):
        while True:
            message = await ws.receive()
            assert message.type == WSMsgType.TEXT, f"the socket ended: {message}"
            event = json.loads(message.data)
            assert isinstance(event, dict) and isinstance(event.get("type"), str), event
            assert not event["type"].startswith("relay."), event
            if event["type"] == "error" and event["error"].get("event_id") == probe_id:
                return seen
            seen.append(event)


async def run_connection(relay: RunningRelay, frames: Iterator[Frame], budget: list[int]) -> Outcome:
    """One session: batches of frames, each followed by a probe, until a closing frame or the budget ends."""
    outcome = Outcome()
    async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url, max_msg_size=0) as ws:
        first = await ws.receive_json(timeout=seconds(5))
        assert first["type"] == "session.created"
        n = 0
        while budget[0] > 0:
            batch: list[Frame] = []
            closing: Frame | None = None
            while len(batch) < BATCH and budget[0] > 0:
                frame = next(frames)
                budget[0] -= 1
                if frame.close is not None:
                    closing = frame
                    break
                batch.append(frame)
                if frame.binary:
                    await ws.send_bytes(frame.payload)
                else:
                    await ws.send_frame(frame.payload, WSMsgType.TEXT)
            n += 1
            seen = await probe(ws, n)
            expected = [f for f in batch if f.relay_code is not None]
            got = [e for e in seen if is_relay_error(e)]
            assert len(got) == len(expected), ([e["error"]["code"] for e in got], [f.relay_code for f in expected])
            for event, frame in zip(got, expected, strict=True):
                check_relay_error(event, frame)
            outcome.forwarded += [f for f in batch if f.forwarded_type is not None]
            outcome.forwarded.append(Frame(b"", forwarded_type="x.fuzz.probe"))
            outcome.relay_errors += len(got)
            if closing is not None:
                await ws.send_frame(closing.payload, WSMsgType.TEXT)
                async with asyncio.timeout(seconds(10)):
                    while (message := await ws.receive()).type == WSMsgType.TEXT:
                        assert not is_relay_error(json.loads(message.data))
                assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), message
                assert ws.close_code == closing.close, (ws.close_code, closing.payload[:100])
                return outcome
    return outcome


def check_logs(relay: RunningRelay, outcomes: list[Outcome]) -> None:
    sessions = sorted(relay.session_records().values(), key=lambda records: records[0]["ts"])
    assert len(sessions) == len(outcomes)
    for records, outcome in zip(sessions, outcomes, strict=True):
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1)), "seq has a gap"
        for record in records:  # a client's non-string id stays inside `event` only
            assert all(isinstance(record.get(key, ""), str) for key in ("event_id", "item_id", "response_id")), record
        client = [r for r in records if r["dir"] == "client"]
        assert [r["type"] for r in client] == [f.forwarded_type for f in outcome.forwarded]
        for record, frame in zip(client, outcome.forwarded, strict=True):
            if frame.payload and record.get("client_event") is None:
                assert record["bytes"] == len(frame.payload)
        errors = [r for r in records if r["type"] == "relay.client_error"]
        assert len(errors) == outcome.relay_errors
        assert records[-1]["type"] == "relay.session_ended"


def seeds() -> list[int]:
    chosen = os.environ.get("RELAY_TEST_FUZZ_SEED")
    return [int(chosen)] if chosen else [FIXED_SEED, random.SystemRandom().randrange(2**32)]


@pytest.mark.parametrize("seed", seeds())
async def test_every_client_frame_is_answered_by_the_rules_and_the_log_holds_each_forwarded_one(
    tmp_path: Path, seed: int
) -> None:
    settings = {"max_client_message_bytes": LIMIT, "pinned_session": {"instructions": "pinned by the operator"}}
    try:
        async with running_relay(tmp_path, settings=settings) as relay:
            rng = random.Random(seed)
            generator = Generator(rng)
            frames = iter(generator.frame, None)
            budget = [FRAMES]
            outcomes: list[Outcome] = []
            while budget[0] > 0:
                outcomes.append(await run_connection(relay, frames, budget))
            async with asyncio.timeout(seconds(10)):
                while relay.state.bridges:
                    await asyncio.sleep(0.02)
            check_logs(relay, outcomes)
    except BaseException:
        print(f"fuzz seed {seed}: replay with RELAY_TEST_FUZZ_SEED={seed}")
        raise

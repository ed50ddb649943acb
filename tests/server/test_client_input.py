"""Bad client input on `serve` (docs/client-input.md): answered with an error event, never forwarded, the session goes on.

The simulator answers every forwarded frame of an unknown type with its own `error` (code `invalid_value`,
the client's `event_id`), so "the next message after a frame" tells whether the relay answered it (and kept
it) or forwarded it. The event log is checked as well: it records exactly what crossed the relay.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.timing import seconds

RELAY_CODES = {"invalid_json", "missing_type", "binary_not_supported", "event_blocked"}


@asynccontextmanager
async def session(relay: RunningRelay) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url, headers=relay.auth_headers(), max_msg_size=0) as ws:
            first = await ws.receive_json(timeout=seconds(5))
            assert first["type"] == "session.created"
            yield ws


async def next_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=seconds(5))
    assert message.type == WSMsgType.TEXT, message
    event: dict[str, Any] = json.loads(message.data)
    return event


async def probe(ws: aiohttp.ClientWebSocketResponse, event_id: str) -> None:
    """Send a valid frame of a type the simulator does not implement; its answer proves it went upstream."""
    await ws.send_str(json.dumps({"type": "x.relay_test.probe", "event_id": event_id}))
    answer = await next_event(ws)
    assert answer["type"] == "error"
    assert answer["error"]["code"] == "invalid_value", answer
    assert answer["error"]["event_id"] == event_id


async def text_turn_works(ws: aiohttp.ClientWebSocketResponse) -> None:
    """A real turn: a user text item and a response, up to response.done."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "still there?"}]}
    await ws.send_str(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send_str(json.dumps({"type": "response.create"}))
    while True:
        event = await next_event(ws)
        assert event["type"] != "error", event
        if event["type"] == "response.done":
            assert event["response"]["status"] == "completed"
            return


def assert_relay_error(event: dict[str, Any], code: str, event_id: str | None = None) -> None:
    assert event["type"] == "error"
    assert event["error"]["type"] == "invalid_request_error"
    assert event["error"]["code"] == code
    assert event["error"]["event_id"] == event_id


def records(relay: RunningRelay) -> list[dict[str, Any]]:
    (only,) = relay.session_records().values()
    return only


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RunningRelay]:
    async with running_relay(tmp_path, settings={"max_client_message_bytes": 4096}) as running:
        yield running


@pytest.mark.parametrize("frame", ["not json", "{", '{"type": "x"', "", " ", "NaN", '{"type": "a", "n": NaN}', "\u00e9"])
async def test_non_json_text_gets_invalid_json_and_the_session_keeps_working(relay: RunningRelay, frame: str) -> None:
    async with session(relay) as ws:
        await ws.send_str(frame)
        assert_relay_error(await next_event(ws), "invalid_json")
        await probe(ws, "evt_after")
        await text_turn_works(ws)
    await wait_ended(relay)
    client_frames = [r["type"] for r in records(relay) if r["dir"] == "client"]
    assert client_frames == ["x.relay_test.probe", "conversation.item.create", "response.create"]


@pytest.mark.parametrize("frame", ["[]", '[{"type": "session.update"}]', "1", '"session.update"', "null", "true"])
async def test_json_that_is_not_an_object_gets_invalid_json(relay: RunningRelay, frame: str) -> None:
    async with session(relay) as ws:
        await ws.send_str(frame)
        assert_relay_error(await next_event(ws), "invalid_json")
        await probe(ws, "evt_after")


@pytest.mark.parametrize(
    "event",
    [{"event_id": "e1"}, {"type": 5, "event_id": "e1"}, {"type": None, "event_id": "e1"}, {"type": {"a": 1}, "event_id": "e1"}],
)
async def test_missing_or_non_string_type_gets_missing_type_with_the_event_id_echoed(
    relay: RunningRelay, event: dict[str, Any]
) -> None:
    async with session(relay) as ws:
        await ws.send_str(json.dumps(event))
        assert_relay_error(await next_event(ws), "missing_type", "e1")
        await probe(ws, "evt_after")
    await wait_ended(relay)
    client_error = [r for r in records(relay) if r["type"] == "relay.client_error"]
    assert [(r["event"]["code"], r["event"].get("event_id")) for r in client_error] == [("missing_type", "e1")]


async def test_a_non_string_event_id_is_not_echoed(relay: RunningRelay) -> None:
    async with session(relay) as ws:
        await ws.send_str(json.dumps({"event_id": 7}))
        assert_relay_error(await next_event(ws), "missing_type", None)


def nested(depth: int) -> str:
    """An event object whose nesting (the object itself counted) is exactly `depth` levels."""
    return '{"type": "x.relay_test.deep", "event_id": "deep", "a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


async def test_json_nested_deeper_than_512_levels_gets_invalid_json(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, session(relay) as ws:
        for depth in (513, 600, 5000):
            await ws.send_str(nested(depth))
            assert_relay_error(await next_event(ws), "invalid_json")
        await ws.send_str(nested(512))
        answer = await next_event(ws)
        assert answer["error"]["code"] == "invalid_value" and answer["error"]["event_id"] == "deep"


async def test_binary_frame_gets_binary_not_supported_and_the_session_keeps_working(relay: RunningRelay) -> None:
    async with session(relay) as ws:
        await ws.send_bytes(b'{"type": "response.create"}')
        assert_relay_error(await next_event(ws), "binary_not_supported")
        await probe(ws, "evt_after")
        await text_turn_works(ws)
    await wait_ended(relay)
    client_frames = [r["type"] for r in records(relay) if r["dir"] == "client"]
    assert client_frames == ["x.relay_test.probe", "conversation.item.create", "response.create"]


async def test_invalid_utf8_text_frame_is_closed_with_1007(relay: RunningRelay) -> None:
    async with session(relay) as ws:
        await ws.send_frame(b'{"type": "\xff\xfe"}', WSMsgType.TEXT)
        message = await ws.receive(timeout=seconds(5))
        assert message.type == WSMsgType.CLOSE
        assert message.data == 1007
    await wait_ended(relay)
    ended = records(relay)[-1]
    assert ended["type"] == "relay.session_ended"
    assert ended["event"]["client_close_code"] == 1007
    assert not [r for r in records(relay) if r["dir"] == "client"]


async def test_frame_of_exactly_max_client_message_bytes_is_forwarded(relay: RunningRelay) -> None:
    head = '{"type": "x.relay_test.big", "event_id": "big", "pad": "'
    frame = head + "p" * (4096 - len(head) - 2) + '"}'
    assert len(frame.encode()) == 4096
    async with session(relay) as ws:
        await ws.send_str(frame)
        answer = await next_event(ws)
        assert answer["error"]["code"] == "invalid_value" and answer["error"]["event_id"] == "big"


@pytest.mark.parametrize("kind", [WSMsgType.TEXT, WSMsgType.BINARY])
async def test_frame_over_max_client_message_bytes_is_closed_with_1009(relay: RunningRelay, kind: WSMsgType) -> None:
    head = '{"type": "x.relay_test.big", "event_id": "big", "pad": "'
    frame = head + "p" * (4097 - len(head) - 2) + '"}'
    async with session(relay) as ws:
        await ws.send_frame(frame.encode(), kind)
        message = await ws.receive(timeout=seconds(5))
        assert message.type == WSMsgType.CLOSE
        assert message.data == 1009
    await wait_ended(relay)
    ended = records(relay)[-1]
    assert ended["event"]["client_close_code"] == 1009
    assert ended["event"]["upstream_close_code"] is not None  # the upstream was closed too: no orphan session
    assert not [r for r in records(relay) if r["dir"] == "client"]


async def test_blocked_client_event_gets_event_blocked_and_is_not_forwarded(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"blocked_client_events": "response.create,x.relay_test.blocked"}) as relay:
        async with session(relay) as ws:
            await ws.send_str(json.dumps({"type": "response.create", "event_id": "r1"}))
            assert_relay_error(await next_event(ws), "event_blocked", "r1")
            await ws.send_str(json.dumps({"type": "x.relay_test.blocked"}))
            assert_relay_error(await next_event(ws), "event_blocked", None)
            await probe(ws, "evt_after")
        await wait_ended(relay)
        logged = records(relay)
        assert [r["type"] for r in logged if r["dir"] == "client"] == ["x.relay_test.probe"]
        errors = [r["event"] for r in logged if r["type"] == "relay.client_error"]
        assert [(e["code"], e.get("event_id")) for e in errors] == [("event_blocked", "r1"), ("event_blocked", None)]


async def wait_ended(relay: RunningRelay) -> None:
    """Until the relay has finished every session (its log then holds relay.session_ended)."""
    async with asyncio.timeout(seconds(5)):
        while relay.state.bridges or not relay.log_files() or not _ended(relay):
            await asyncio.sleep(0.01)


def _ended(relay: RunningRelay) -> bool:
    return all(r and r[-1]["type"] == "relay.session_ended" for r in relay.session_records().values())


# ---- property: arbitrary client frames ---------------------------------------------------------------------


def classify(text: str) -> str:
    """What the contract says a text frame is: 'valid', or the error code it earns."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "invalid_json"
    if not isinstance(value, dict):
        return "invalid_json"
    depth = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        depth = max(depth, level)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    if depth > 512:
        return "invalid_json"
    return "valid" if isinstance(value.get("type"), str) else "missing_type"


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
plain_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200)

frames = st.one_of(
    # valid events of types the simulator does not implement (it answers each with an error naming its event_id)
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(lambda d: ("valid", d)),
    # junk text, JSON that is not an object, objects with a bad or missing type, event_id of any kind
    plain_text.filter(lambda t: classify(t) != "valid").map(lambda t: ("text", t)),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: ("text", json.dumps(v))),
    st.fixed_dictionaries({"event_id": json_values}, optional={"type": json_values.filter(lambda v: not isinstance(v, str))}).map(
        lambda d: ("text", json.dumps(d))
    ),
    st.binary(max_size=300).map(lambda b: ("binary", b)),
)


async def run_frames(frame_list: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_relay(Path(tmp)) as relay:
            sent_valid: list[str] = []
            invalid = 0
            async with session(relay) as ws:
                for index, (kind, payload) in enumerate(frame_list):
                    if kind == "valid":
                        event_id = f"evt_{index}"
                        text = json.dumps({**payload, "type": f"x.relay_fuzz.{index}", "event_id": event_id})
                        await ws.send_str(text)
                        sent_valid.append(text)
                        answer = await next_event(ws)
                        assert answer["error"]["code"] == "invalid_value" and answer["error"]["event_id"] == event_id
                        continue
                    invalid += 1
                    if kind == "binary":
                        await ws.send_bytes(payload)
                        expected, echo = "binary_not_supported", None
                    else:
                        await ws.send_str(payload)
                        expected = classify(payload)
                        assert expected != "valid"
                        sent_id = json.loads(payload).get("event_id") if expected == "missing_type" else None
                        echo = sent_id if isinstance(sent_id, str) else None
                    answer = await next_event(ws)
                    assert answer["type"] == "error"
                    assert answer["error"]["code"] == expected
                    assert answer["error"]["event_id"] == echo
                await probe(ws, "evt_final")
                assert not ws.closed
            await wait_ended(relay)
            logged = records(relay)
            forwarded = [r for r in logged if r["dir"] == "client"]
            assert len(forwarded) == len(sent_valid) + 1
            assert [r["bytes"] for r in forwarded[:-1]] == [len(t.encode()) for t in sent_valid]
            assert sum(r["type"] == "relay.client_error" for r in logged) == invalid
            assert logged[-1]["event"]["reason"] == "client_closed"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(frames, min_size=1, max_size=12))
def test_arbitrary_client_frames_never_crash_never_forward_invalid_frames_and_always_answer(
    frame_list: list[tuple[str, Any]],
) -> None:
    asyncio.run(run_frames(frame_list))


async def test_a_lone_surrogate_in_a_user_text_crosses_the_relay_and_its_simulator(tmp_path: Path) -> None:
    """JSON may escape a lone surrogate ("\\udc00": no UTF-8 spells it). The relay forwards it, weighs the item for
    resume without a relay.internal_error, and the simulator answers the turn (and a recall) instead of crashing."""
    async with running_relay(tmp_path) as relay:
        async with session(relay) as ws:
            text = '{"type":"message","role":"user","content":[{"type":"input_text","text":"x\\udc00y recall"}]}'
            await ws.send_str('{"type":"conversation.item.create","item":' + text + "}")
            await ws.send_str(json.dumps({"type": "response.create"}))
            while (event := await next_event(ws))["type"] != "response.done":
                assert event["type"] != "error", event
            assert event["response"]["status"] == "completed"
            await text_turn_works(ws)
        await asyncio.sleep(0.2)
        assert [r for r in records(relay) if r["type"] == "relay.internal_error"] == []

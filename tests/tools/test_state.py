"""The pure server-tool bookkeeping (`relay.core.tools`) fed events directly, and its runner fed the calls it
decides on: garbage from the model (arguments that are not JSON, not an object, not a string), outputs too
long, http handlers that fail or never answer."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.policy import SessionPolicy
from relay.core.session import RelaySession
from relay.core.tools import ToolState
from relay.core.toolset import ToolCall, ToolOutcome, ToolSet, ToolSpec, parse_arguments
from relay.tools.runner import SessionTools, cap_output
from tests.support import tools_handlers
from tests.support.timing import seconds


def spec(name: str, function: Any = tools_handlers.lookup, **extra: Any) -> ToolSpec:
    base: dict[str, Any] = {
        "name": name,
        "description": "",
        "parameters": {"type": "object", "properties": {}},
        "kind": "python",
        "handler": f"python:tests.support.tools_handlers:{name}",
        "timeout_seconds": 1.0,
        "function": function,
    }
    base.update(extra)
    return ToolSpec(**base)


def call_events(name: str, arguments: Any, *, call_id: str = "call_1", item_id: str = "item_1") -> list[dict[str, Any]]:
    item = {"id": item_id, "type": "function_call", "name": name, "call_id": call_id, "arguments": ""}
    done_item = {**item, "arguments": arguments, "status": "completed"}
    return [
        {"type": "response.output_item.added", "response_id": "resp_1", "output_index": 0, "item": item},
        {"type": "conversation.item.added", "previous_item_id": "user_1", "item": item},
        {"type": "response.function_call_arguments.done", "response_id": "resp_1", "item_id": item_id, "call_id": call_id, "arguments": arguments},
        {"type": "response.output_item.done", "response_id": "resp_1", "output_index": 0, "item": done_item},
        {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": [done_item]}},
    ]


def mixed_response() -> ToolState:
    """A state that saw one response call a client tool and a server tool (the response not done yet)."""
    state = ToolState(ToolSet((spec("lookup"),)), relay_events=False)
    client_item = {"id": "item_c", "type": "function_call", "name": "client_fn", "call_id": "call_c", "arguments": "{}"}
    state.on_server_event({"type": "response.output_item.done", "response_id": "resp_1", "item": client_item}, "response.output_item.done")
    for event in call_events("lookup", "{}")[:4]:
        state.on_server_event(event, event["type"])
    return state


def test_the_call_starts_once_and_every_tool_event_is_hidden() -> None:
    state = ToolState(ToolSet((spec("lookup"),)), relay_events=False)
    shown = [state.on_server_event(e, e["type"]) for e in call_events("lookup", '{"q": 1}')]
    assert shown[:4] == [None, None, None, None]
    assert shown[4] is not None and shown[4]["response"]["output"] == []
    (call,) = state.to_start()
    assert call.arguments == {"q": 1} and call.call_id == "call_1" and call.item_id == "item_1"
    state.call_finished(call, ToolOutcome("ok", "fine", 1.0), send=True)
    output, create = state.to_upstream()
    assert output["item"] == {"type": "function_call_output", "call_id": "call_1", "output": "fine"}
    assert create["type"] == "response.create" and create["event_id"].startswith("relay_tool_")
    # The relay's output item is hidden too, and the answer after it points at what the client saw.
    out_item = {"id": "item_2", "type": "function_call_output", "call_id": "call_1", "output": "fine"}
    assert state.on_server_event({"type": "conversation.item.added", "previous_item_id": "item_1", "item": out_item}, "conversation.item.added") is None
    answer = {"type": "conversation.item.added", "previous_item_id": "item_2", "item": {"id": "item_3", "type": "message"}}
    assert state.on_server_event(answer, answer["type"]) == {**answer, "previous_item_id": "user_1"}


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        (42, "must be a JSON string"),
        (None, "must be a JSON string"),
        ({"already": "parsed"}, "must be a JSON string"),
    ],
)
async def test_garbage_arguments_give_an_error_output_without_running_the_handler(arguments: Any, problem: str) -> None:
    tools = ToolSet((spec("explode", tools_handlers.explode),))
    state = ToolState(tools, relay_events=False)
    for event in call_events("explode", arguments):
        state.on_server_event(event, event["type"])
    (call,) = state.to_start()
    assert call.arguments is None and problem in (call.problem or "")
    outcome = await run_one(tools, call)
    assert outcome.result == "error" and problem in json.loads(outcome.output)["error"]


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    ),
    st.sampled_from(
        [
            "response.output_item.added",
            "response.output_item.done",
            "response.function_call_arguments.done",
            "response.function_call_arguments.delta",
            "conversation.item.added",
            "conversation.item.done",
            "response.done",
            "error",
        ]
    ),
    st.sampled_from(["item", "response", "item_id", "call_id", "arguments", "name", "previous_item_id", "error"]),
)
def test_any_value_in_any_field_the_tool_state_reads_never_raises(value: Any, kind: str, key: str) -> None:
    state = ToolState(ToolSet((spec("lookup"),)), relay_events=True)
    for event in call_events("lookup", "{}"):
        state.on_server_event(event, event["type"])
    event = {"type": kind, key: value}
    state.on_server_event(event, kind)
    for client_event in (
        {"type": "session.update", "session": {"tools": value}},
        {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": value}},
        {"type": "conversation.item.create", "item": value},
        {"type": "response.create", "response": value},
        {"type": "response.create", "response": {"input": value}},
        {"type": "response.create", "response": {"input": [value, {"type": "function_call_output", "call_id": value}]}},
    ):
        state.on_client_event(client_event, client_event["type"], None)


def test_a_client_output_for_a_server_call_is_blocked_and_a_client_call_is_not() -> None:
    state = ToolState(ToolSet((spec("lookup"),)), relay_events=False)
    for event in call_events("lookup", "{}"):
        state.on_server_event(event, event["type"])
    forged = {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1", "output": "x"}}
    verdict = state.on_client_event(forged, forged["type"], None)
    assert verdict.action == "reject" and verdict.code == "event_blocked"
    own = {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_client", "output": "x"}}
    assert state.on_client_event(own, own["type"], None).action == "forward"


def test_a_client_output_for_a_server_call_inside_an_out_of_band_response_is_blocked_too() -> None:
    state = ToolState(ToolSet((spec("lookup"),)), relay_events=False)
    for event in call_events("lookup", "{}"):
        state.on_server_event(event, event["type"])
    spoof = {"type": "function_call_output", "call_id": "call_1", "output": "spoof"}
    own = {"type": "function_call_output", "call_id": "call_client", "output": "x"}
    text = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    forged = {"type": "response.create", "response": {"conversation": "none", "input": [text, spoof]}}
    verdict = state.on_client_event(forged, forged["type"], None)
    assert (verdict.action, verdict.code, verdict.param) == ("reject", "event_blocked", "response.input[1].call_id")
    fine = {"type": "response.create", "response": {"conversation": "none", "input": [text, own]}}
    assert state.on_client_event(fine, fine["type"], None).action == "forward"
    unmatched = {"type": "response.create", "response": {"input": [{"type": "function_call_output", "call_id": 7}]}}
    verdict = state.on_client_event(unmatched, unmatched["type"], None)
    assert (verdict.action, verdict.code) == ("reject", "invalid_value")


def test_a_held_response_create_and_the_frames_after_it_are_released_in_order_once_outputs_are_sent() -> None:
    state = mixed_response()
    (call,) = state.to_start()
    verdict = state.on_client_event({"type": "response.create"}, "response.create", None)
    assert verdict.action == "hold"
    state.hold('{"type":"response.create"}')
    state.hold('{"type":"input_audio_buffer.append","audio":""}')
    ((generation, seconds),) = state.to_arm()
    assert seconds == 1.0 and state.holding
    state.call_finished(call, ToolOutcome("ok", "done", 2.0), send=True)
    (output,) = state.to_upstream()  # no response.create of the relay's own: the client's goes on
    assert output["type"] == "conversation.item.create"
    assert state.to_release() == ['{"type":"response.create"}', '{"type":"input_audio_buffer.append","audio":""}']
    assert not state.holding
    state.hold_expired(generation)  # a stale timer changes nothing
    assert state.to_release() == []


def test_a_hold_ends_when_its_timer_expires() -> None:
    state = mixed_response()
    state.hold('{"type":"response.create"}')
    ((generation, _),) = state.to_arm()
    state.hold_expired(generation)
    assert state.to_release() == ['{"type":"response.create"}'] and not state.holding
    assert state.on_client_event({"type": "response.create"}, "response.create", None).action == "forward"


def test_a_cancelled_response_is_not_continued_by_the_relay() -> None:
    state = ToolState(ToolSet((spec("lookup"),)), relay_events=False)
    events = call_events("lookup", "{}")
    events[-1]["response"]["status"] = "cancelled"
    for event in events:
        state.on_server_event(event, event["type"])
    (call,) = state.to_start()
    state.call_finished(call, ToolOutcome("ok", "x", 1.0), send=True)
    assert [f["type"] for f in state.to_upstream()] == ["conversation.item.create"]


def test_errors_answering_the_relays_tool_frames_are_not_the_clients() -> None:
    # The session core swallows every error answering a `relay_` event_id (docs/forwarding.md), tool frames too.
    core = RelaySession(SessionPolicy(tools=ToolSet((spec("lookup"),))))
    core.upstream_connected(1.0)
    core.to_client(), core.to_upstream(), core.to_log()
    ours = {"type": "error", "error": {"event_id": "relay_tool_output_call_1", "code": "x"}}
    theirs = {"type": "error", "error": {"event_id": "client_7", "code": "x"}}
    core.receive_server_text(json.dumps(ours))
    assert core.to_client() == [] and [(e.dir, e.type) for e in core.to_log()][-1] == ("relay", "error")
    core.receive_server_text(json.dumps(theirs))
    assert core.to_client() == [json.dumps(theirs)]


def test_long_outputs_are_cut_on_a_character_boundary_with_a_note() -> None:
    text = "ж" * 1000  # 2 bytes each
    cut = cap_output(text, 301)
    assert len(cut.encode()) <= 301 and "[output cut by the relay: longer than 301 bytes]" in cut
    assert cap_output("short", 301) == "short"


async def run_one(tools: ToolSet, call: ToolCall) -> ToolOutcome:
    finished: asyncio.Future[ToolOutcome] = asyncio.get_running_loop().create_future()
    runner = SessionTools(tools, "sess_test", lambda c, o: finished.set_result(o))
    runner.start(call)
    outcome = await asyncio.wait_for(finished, 10)
    await runner.aclose()
    return outcome


def a_call(name: str, arguments: dict[str, Any] | None = None) -> ToolCall:
    return ToolCall("call_1", name, "item_1", "resp_1", json.dumps(arguments or {}), arguments or {})


def test_a_handler_that_ignores_its_cancellation_does_not_hold_the_process_at_exit() -> None:
    """asyncio.run (serve's and mic's runner) waits at its end for every task of its loop: a timed-out async
    handler that swallows its cancellation must not be one of them, or SIGTERM would never end the process."""
    tools_handlers.STUBBORN_RELEASE.clear()
    tools = ToolSet((spec("stubborn_forever", tools_handlers.stubborn_forever, timeout_seconds=0.2),))
    outcomes: list[ToolOutcome] = []
    runner = threading.Thread(target=lambda: outcomes.append(asyncio.run(run_one(tools, a_call("stubborn_forever")))))
    try:
        runner.start()
        runner.join(timeout=seconds(10))
        assert not runner.is_alive(), "asyncio.run waited for the abandoned handler"
        assert [o.result for o in outcomes] == ["timeout"]
    finally:
        tools_handlers.STUBBORN_RELEASE.set()


async def test_an_async_handler_that_blocks_does_not_stall_the_relays_loop() -> None:
    tools = ToolSet((spec("blocks", tools_handlers.blocks, timeout_seconds=5.0),))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        outcome = await run_one(tools, a_call("blocks", {"ms": 600}))
    finally:
        ticker.cancel()
    assert outcome.result == "ok" and outcome.output == "blocked and done"
    assert ticks >= 10, f"the loop turned {ticks} times while the handler blocked for 0.6 s"


async def test_a_big_output_is_capped_before_it_goes_upstream() -> None:
    tools = ToolSet((spec("big", tools_handlers.big),), max_output_bytes=1000)
    outcome = await run_one(tools, a_call("big", {"n": 5000}))
    assert outcome.result == "ok" and len(outcome.output.encode()) <= 1000 and "output cut" in outcome.output


@pytest.mark.parametrize(
    ("behaviour", "result", "says"),
    [("fail", "error", "answered HTTP 500: database down"), ("hang", "timeout", "did not answer within 0.3 s"), ("refuse", "error", "could not be reached")],
)
async def test_an_http_handler_that_fails_hangs_or_is_unreachable_gives_an_error_output(behaviour: str, result: str, says: str) -> None:
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        if behaviour == "hang":
            await release.wait()
        return web.Response(status=500, text="database down")

    app = web.Application()
    app.router.add_post("/t", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    if behaviour == "refuse":
        await runner.cleanup()
    try:
        http = spec("t", None, kind="http", url=f"http://127.0.0.1:{port}/t", timeout_seconds=0.3)
        outcome = await run_one(ToolSet((http,)), a_call("t"))
    finally:
        release.set()
        await runner.cleanup()
    assert outcome.result == result and says in json.loads(outcome.output)["error"]


def test_parse_arguments_treats_empty_text_as_no_arguments() -> None:
    assert parse_arguments("") == ({}, None)
    assert parse_arguments("  ") == ({}, None)


def test_a_hold_ends_early_when_the_held_frames_grow_past_the_bound() -> None:
    from relay.core.tools import HOLD_MAX_BYTES

    state = ToolState(ToolSet((spec("lookup"),)), relay_events=False)
    state.hold('{"type":"response.create"}')
    chunk = '{"type":"input_audio_buffer.append","audio":"' + "A" * 65536 + '"}'
    for _ in range(HOLD_MAX_BYTES // len(chunk) + 1):
        state.hold(chunk)
    released = state.to_release()
    assert not state.holding and released[0] == '{"type":"response.create"}' and len(released) > 100


def test_a_function_call_item_the_client_created_itself_stays_visible_and_its_own() -> None:
    state = ToolState(ToolSet((spec("lookup"),)), relay_events=False)
    item = {"id": "item_x", "type": "function_call", "name": "lookup", "call_id": "call_x", "arguments": "{}"}
    added = {"type": "conversation.item.added", "previous_item_id": None, "item": item}
    assert state.on_server_event(added, added["type"]) is added
    assert state.to_start() == []
    output = {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_x", "output": "1"}}
    assert state.on_client_event(output, output["type"], None).action == "forward"


async def test_at_most_four_handlers_run_at_once_in_a_session() -> None:
    tools_handlers.GATE.clear()
    tools_handlers.STARTED.clear()
    tools = ToolSet((spec("gated", tools_handlers.gated, timeout_seconds=30),))
    done: list[ToolOutcome] = []
    runner = SessionTools(tools, "sess_test", lambda c, o: done.append(o))
    for n in range(6):
        runner.start(ToolCall(f"call_{n}", "gated", None, None, "{}", {}))
    deadline = asyncio.get_running_loop().time() + 10
    while len(tools_handlers.STARTED) < 4:  # polling handler threads, not standing in for an assertion
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert len(tools_handlers.STARTED) == 4 and runner.running == 6
    tools_handlers.GATE.set()
    while len(done) < 6:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert {o.result for o in done} == {"ok"} and len(tools_handlers.STARTED) == 6
    await runner.aclose()


def test_a_call_cut_off_by_a_cancelled_response_is_owed_no_output_and_holds_nothing() -> None:
    state = mixed_response()
    item = {"id": "item_2", "type": "function_call", "name": "lookup", "call_id": "call_2", "arguments": ""}
    state.on_server_event({"type": "response.output_item.added", "response_id": "resp_1", "item": item}, "response.output_item.added")
    (call,) = state.to_start()  # the first call finished; call_2 never did
    state.call_finished(call, ToolOutcome("ok", "x", 1.0), send=True)
    done = {"type": "response.done", "response": {"id": "resp_1", "status": "cancelled", "output": []}}
    state.on_server_event(done, "response.done")
    assert state.on_client_event({"type": "response.create"}, "response.create", None).action == "forward"


async def test_an_http_handlers_long_body_is_read_only_up_to_the_cap() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64):  # 4 MiB in all, far past the cap
            await response.write(b"y" * 65536)
        return response

    app = web.Application()
    app.router.add_post("/t", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        http = spec("t", None, kind="http", url=f"http://127.0.0.1:{runner.addresses[0][1]}/t", timeout_seconds=5)
        outcome = await run_one(ToolSet((http,), max_output_bytes=2000), a_call("t"))
    finally:
        await runner.cleanup()
    assert outcome.result == "ok" and len(outcome.output.encode()) <= 2000
    assert outcome.output.endswith("[output cut by the relay: longer than 2000 bytes]")


def test_an_output_with_a_lone_surrogate_is_measured_and_cut_like_any_other() -> None:
    from relay.tools.runner import cap_output

    assert cap_output("ok \udc00", 256) == "ok \udc00"
    cut = cap_output("\udc00" * 400, 300)
    assert cut.endswith("bytes]") and len(cut.encode("utf-8", "surrogatepass")) <= 300

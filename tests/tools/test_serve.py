"""Server-side tools through `serve`: the simulator as the model, the official `openai` SDK as the client.

The model (the simulator) calls a tool when a user text says `call <tool> {json}`; the relay runs the handler,
answers with a `function_call_output` and continues the response, so the client sees only the final answer
(with `server_tool_events = "hide"`) or everything (`"forward"`). The event log is read back to check what the
relay sent upstream and in which order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.support import tools_handlers
from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.schema_oracle import validate_server_event
from tests.support.timing import seconds

H = "python:tests.support.tools_handlers:"
CURRENT_TIME = {"name": "current_time", "handler": "python:relay.tools.examples:current_time"}
TOOL_EVENT_TYPES = {
    "response.output_item.added",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "conversation.item.added",
    "conversation.item.created",
    "conversation.item.done",
}


def tool(name: str, handler: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": f"test tool {name}", "handler": handler, **extra}


@asynccontextmanager
async def sdk_session(relay: RunningRelay, *, relay_events: bool = False) -> AsyncIterator[Any]:
    client = AsyncOpenAI(api_key="unused", base_url=relay.base_url + "/v1")
    query = {"relay_events": "1"} if relay_events else {}
    async with client.realtime.connect(model="gpt-realtime", extra_query=query) as connection:
        await connection.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
        yield connection


async def recv(connection: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(connection.recv_bytes(), timeout=seconds(10)))
    return event


async def ask(connection: Any, text: str) -> None:
    await connection.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )
    await connection.send({"type": "response.create"})


def has_message(event: dict[str, Any]) -> bool:
    return event["type"] == "response.done" and any(i.get("type") == "message" for i in event["response"]["output"])


async def until_answer(connection: Any) -> list[dict[str, Any]]:
    """Everything the client gets up to the response.done that carries an assistant message."""
    events: list[dict[str, Any]] = []
    while True:
        events.append(await recv(connection))
        if has_message(events[-1]):
            return events


def answer_text(events: list[dict[str, Any]]) -> str:
    done = events[-1]["response"]["output"]
    return "".join(part.get("text", "") for item in done if item["type"] == "message" for part in item["content"])


def items_of(event: dict[str, Any]) -> list[dict[str, Any]]:
    out = [event["item"]] if isinstance(event.get("item"), dict) else []
    response = event.get("response")
    if isinstance(response, dict):
        out += [i for i in response.get("output") or [] if isinstance(i, dict)]
    return out


def only_session(relay: RunningRelay) -> list[dict[str, Any]]:
    sessions = relay.session_records()
    assert len(sessions) == 1
    return next(iter(sessions.values()))


def tool_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["event"] for r in records if r["type"] == "relay.tool_call"]


def relay_frames(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["dir"] == "relay" and r["type"] == kind and r["event"].get("event_id", "").startswith("relay_")]


async def wait_for(condition: Any, what: str) -> None:
    """Poll a condition of the running relay (no sleep stands in for an assertion)."""
    deadline = asyncio.get_running_loop().time() + seconds(10)
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("flavour", ["yandex", "openai"])
async def test_a_python_tool_call_reaches_the_client_as_the_final_answer_only(tmp_path: Path, flavour: str) -> None:
    async with running_relay(tmp_path, settings={"tools": [CURRENT_TIME]}, sim_flavour=flavour) as relay:
        async with sdk_session(relay) as connection:
            await ask(connection, 'call current_time {"tz": "Europe/Moscow"}')
            events = await until_answer(connection)
            # The user's own item arrived before; the final assistant item follows it for the client.
            assistant_added = next(e for e in events if e["type"] == "conversation.item.added" and e["item"]["role"] == "assistant")
            user_added = next(e for e in events if e["type"] == "conversation.item.added" and e["item"]["role"] == "user")
        async with aiohttp.ClientSession() as http, http.get(relay.base_url + "/metrics") as resp:
            metrics = await resp.text()
    assert "Tool current_time returned:" in answer_text(events) and "Europe/Moscow" in answer_text(events)
    for event in events:
        validate_server_event(event, flavour)  # what the relay changed is still a valid event for the SDK
        for item in items_of(event):
            assert item.get("type") not in ("function_call", "function_call_output"), event
        assert "function_call" not in event["type"]
    assert assistant_added["previous_item_id"] == user_added["item"]["id"]  # not the hidden call or output
    dones = [e for e in events if e["type"] == "response.done"]
    assert len(dones) == 2 and dones[0]["response"]["output"] == []  # the call's response, its call stripped

    records = only_session(relay)
    (call,) = tool_records(records)
    assert call["name"] == "current_time" and call["result"] == "ok" and call["arguments"] == {"tz": "Europe/Moscow"}
    assert json.loads(call["output"])["tz"] == "Europe/Moscow" and call["duration_ms"] >= 0
    (output,) = relay_frames(records, "conversation.item.create")
    (create,) = relay_frames(records, "response.create")
    assert output["event"]["item"] == {"type": "function_call_output", "call_id": call["call_id"], "output": call["output"]}
    assert output["seq"] < create["seq"]
    answer_first = next(r for r in records if r["dir"] == "server" and r["type"] == "response.output_text.delta")
    assert create["seq"] < answer_first["seq"]  # the answer came after the relay's output and continuation
    stripped = next(r for r in records if r["type"] == "response.done" and "server_event" in r)
    assert stripped["dir"] == "server" and stripped["event"]["response"]["output"] == []
    assert stripped["server_event"]["response"]["output"][0]["type"] == "function_call"
    hidden = [r for r in records if r["dir"] == "relay" and r["type"] in TOOL_EVENT_TYPES]
    assert hidden, "hidden tool events are still logged, as dir relay"
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    calls = {(s.labels["tool"], s.labels["result"]): s.value for s in families["relay_tool_calls"].samples if s.name.endswith("_total")}
    assert calls == {("current_time", "ok"): 1.0}
    assert any(s.name == "relay_tool_seconds_count" and s.value == 1.0 for s in families["relay_tool_seconds"].samples)


async def test_an_http_tool_gets_the_call_as_json_and_its_body_is_the_output(tmp_path: Path) -> None:
    seen: list[tuple[dict[str, Any], str | None]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((await request.json(), request.headers.get("X-Tool-Key")))
        return web.Response(text="order 42 ships tomorrow")

    app = web.Application()
    app.router.add_post("/find_order", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        spec = tool("find_order", f"http:http://127.0.0.1:{port}/find_order", headers={"X-Tool-Key": "k-123"})
        async with running_relay(tmp_path, settings={"tools": [spec]}) as relay:
            async with sdk_session(relay) as connection:
                await ask(connection, 'call find_order {"number": "42"}')
                events = await until_answer(connection)
    finally:
        await runner.cleanup()
    assert answer_text(events) == "Tool find_order returned: order 42 ships tomorrow"
    ((body, key),) = seen
    assert key == "k-123"
    assert body["name"] == "find_order" and body["arguments"] == {"number": "42"}
    records = only_session(relay)
    assert body["session_id"] == records[0]["session_id"] and body["call_id"] == tool_records(records)[0]["call_id"]


async def test_sync_handlers_run_on_a_thread_and_async_ones_get_the_call_context(tmp_path: Path) -> None:
    tools = [tool("lookup", H + "lookup"), tool("context_of", H + "context_of")]
    async with running_relay(tmp_path, settings={"tools": tools}) as relay:
        async with sdk_session(relay) as connection:
            await ask(connection, 'call lookup {"q": 1}')
            first = answer_text(await until_answer(connection))
            await ask(connection, 'call context_of {"a": [1, 2]}')
            second = answer_text(await until_answer(connection))
    lookup = json.loads(first.removeprefix("Tool lookup returned: "))
    assert lookup == {"found": {"q": 1}, "thread": "relay-tool"}
    context = json.loads(second.removeprefix("Tool context_of returned: "))
    records = only_session(relay)
    assert context["session_id"] == records[0]["session_id"] and context["arguments"] == {"a": [1, 2]}
    assert context["call_id"] == tool_records(records)[1]["call_id"] and context["tool"] == "context_of"


@pytest.mark.parametrize(
    ("handler", "result", "says"),
    [
        ("explode", "error", "RuntimeError: the order database is down"),
        ("not_serializable", "error", "not JSON-serializable"),
        ("hang", "timeout", "did not answer within 0.2 s"),
        ("hang_sync", "timeout", "did not answer within 0.2 s"),
        ("stubborn", "timeout", "did not answer within 0.2 s"),  # ignoring the cancellation buys no time
        ("exits", "error", "the handler raised SystemExit: 3"),  # never the relay's exit
        ("exits_async", "error", "the handler raised SystemExit: 4"),
        ("interrupts", "error", "the handler raised KeyboardInterrupt"),
        # A cancellation the handler met on its own is its failure, not the session's end.
        ("cancels_itself", "error", "the handler raised CancelledError"),
        ("cancels_itself_sync", "error", "the handler raised CancelledError: the library gave up"),
        ("gives_up", "error", "the handler raised HandlerGaveUp: no"),
        ("gives_up_sync", "error", "the handler raised HandlerGaveUp: no"),
    ],
)
async def test_a_failing_handler_gives_the_model_an_error_output_and_the_session_goes_on(
    tmp_path: Path, handler: str, result: str, says: str
) -> None:
    tools_handlers.SYNC_HANG.clear()
    async with running_relay(tmp_path, settings={"tools": [tool("t", H + handler, timeout_seconds=0.2)]}) as relay:
        async with sdk_session(relay) as connection:
            await ask(connection, "call t")
            failed = answer_text(await until_answer(connection))
            await ask(connection, "still there?")
            after = answer_text(await until_answer(connection))
    tools_handlers.SYNC_HANG.set()
    assert failed.startswith("Tool t returned: ") and says in json.loads(failed.removeprefix("Tool t returned: "))["error"]
    assert after == 'You said: "still there?".'
    (call,) = tool_records(only_session(relay))
    assert call["result"] == result and says in call["output"]


@pytest.mark.parametrize("handler", ["hang", "hang_sync"])
async def test_a_tool_running_when_the_session_ends_is_cancelled_and_recorded(tmp_path: Path, handler: str) -> None:
    tools_handlers.SYNC_HANG.clear()
    tools_handlers.STARTED.clear()
    async with running_relay(tmp_path, settings={"tools": [tool("t", H + handler, timeout_seconds=60)]}) as relay:
        async with sdk_session(relay) as connection:
            await ask(connection, "call t")
            await wait_for(lambda: any(e.is_set() for e in tools_handlers.STARTED.values()), "the handler to start")
        await wait_for(lambda: not relay.state.bridges, "the session's end")
    tools_handlers.STARTED.clear()
    tools_handlers.SYNC_HANG.set()  # let an abandoned thread finish; its result is dropped
    records = only_session(relay)
    (call,) = tool_records(records)
    assert call["result"] == "cancelled"
    assert (call["call_id"] in tools_handlers.CANCELLED) is (handler == "hang")  # async: really cancelled
    assert records[-1]["type"] == "relay.session_ended"
    assert not relay_frames(records, "conversation.item.create"), "no output is sent for a cancelled call"


async def test_two_calls_in_one_response_get_both_outputs_then_one_response_create(tmp_path: Path) -> None:
    tools = [tool("lookup", H + "lookup"), tool("slow", H + "slow")]
    async with running_relay(tmp_path, settings={"tools": tools}) as relay:
        async with sdk_session(relay) as connection:
            await ask(connection, 'call slow {"ms": 50} and call lookup {"id": 7}')
            events = await until_answer(connection)
    assert answer_text(events).startswith("Tool ")
    records = only_session(relay)
    assert {c["name"] for c in tool_records(records)} == {"lookup", "slow"}
    outputs = relay_frames(records, "conversation.item.create")
    (create,) = relay_frames(records, "response.create")
    assert len(outputs) == 2 and all(o["seq"] < create["seq"] for o in outputs)


async def test_a_response_mixing_client_and_server_calls_sends_one_response_create_after_both_outputs(
    tmp_path: Path,
) -> None:
    tools_handlers.GATE.clear()
    client_tool = {"type": "function", "name": "client_side", "description": "runs in the client", "parameters": {}}
    async with running_relay(tmp_path, settings={"tools": [tool("gated", H + "gated")]}) as relay:
        async with sdk_session(relay) as connection:
            await connection.send({"type": "session.update", "session": {"type": "realtime", "tools": [client_tool]}})
            await ask(connection, "call client_side then call gated")
            seen: list[dict[str, Any]] = []
            while not (seen and seen[-1]["type"] == "response.done"):
                seen.append(await recv(connection))
            (client_call,) = [i for i in seen[-1]["response"]["output"] if i["type"] == "function_call"]
            assert client_call["name"] == "client_side"
            await connection.send(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": client_call["call_id"], "output": "42"},
                }
            )
            await connection.send({"type": "response.create", "event_id": "client_continue"})
            bridge = next(iter(relay.state.bridges))
            await wait_for(lambda: bridge.core.tools is not None and bridge.core.tools.holding, "the hold")
            tools_handlers.GATE.set()
            events = await until_answer(connection)
    assert answer_text(events).startswith("Tool ")
    records = only_session(relay)
    upstream_creates = [r for r in records if r["type"] == "response.create" and r["dir"] in ("client", "relay")]
    outputs = [r for r in records if r["type"] == "conversation.item.create" and r["event"]["item"].get("type") == "function_call_output"]
    assert len(outputs) == 2 and len(upstream_creates) == 2
    # Two response.create went upstream: the first turn's, and the client's continuation, held until both outputs.
    assert [r["event"].get("event_id") for r in upstream_creates][-1] == "client_continue"
    assert not relay_frames(records, "response.create")
    assert all(o["seq"] < upstream_creates[-1]["seq"] for o in outputs)


async def test_forward_mode_shows_the_client_every_tool_event_but_blocks_its_outputs_for_server_calls(
    tmp_path: Path,
) -> None:
    settings = {"tools": [CURRENT_TIME], "server_tool_events": "forward"}
    async with running_relay(tmp_path, settings=settings) as relay:
        async with sdk_session(relay) as connection:
            await ask(connection, "call current_time")
            events = await until_answer(connection)
            call = next(e["item"] for e in events if e["type"] == "response.output_item.done")
            await connection.send(
                {
                    "type": "conversation.item.create",
                    "event_id": "mine",
                    "item": {"type": "function_call_output", "call_id": call["call_id"], "output": "forged"},
                }
            )
            blocked = await recv(connection)
    types = {e["type"] for e in events}
    assert {"response.function_call_arguments.delta", "response.function_call_arguments.done"} <= types
    outputs = [i for e in events for i in items_of(e) if i.get("type") == "function_call_output"]
    assert outputs and outputs[0]["call_id"] == call["call_id"]
    assert blocked["type"] == "error" and blocked["error"]["code"] == "event_blocked"
    assert blocked["error"]["event_id"] == "mine"
    assert answer_text(events).startswith("Tool current_time returned: ")


async def test_relay_events_tell_the_client_about_calls_with_details_only_when_allowed(tmp_path: Path) -> None:
    for details in (False, True):
        settings = {"tools": [tool("lookup", H + "lookup")], "tool_details_to_client": details}
        async with running_relay(tmp_path / str(details), settings=settings) as relay:
            async with sdk_session(relay, relay_events=True) as connection:
                await ask(connection, 'call lookup {"k": "v"}')
                events = await until_answer(connection)
        (note,) = [e for e in events if e["type"] == "relay.tool_call"]
        assert note["name"] == "lookup" and note["result"] == "ok" and note["duration_ms"] >= 0
        assert note["event_id"].startswith("relay_")
        assert ("arguments" in note and "output" in note) is details
        if details:
            assert note["arguments"] == {"k": "v"}


async def test_the_client_cannot_remove_or_replace_server_tools(tmp_path: Path) -> None:
    mine = {"type": "function", "name": "current_time", "description": "the client's own", "parameters": {}}
    other = {"type": "function", "name": "other", "description": "", "parameters": {}}
    async with running_relay(tmp_path, settings={"tools": [CURRENT_TIME]}) as relay:
        async with sdk_session(relay) as connection:
            await connection.send({"type": "session.update", "session": {"type": "realtime", "tools": [mine, other]}})
            await connection.send({"type": "session.update", "session": {"type": "realtime", "tools": "none"}, "event_id": "bad"})
            updated: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            while len(updated) < 3 or not errors:  # the relay's opening update, the SDK helper's, ours
                event = await recv(connection)
                (updated if event["type"] == "session.updated" else errors if event["type"] == "error" else []).append(event)
    assert [t["name"] for t in updated[0]["session"]["tools"]] == ["current_time"]
    tools_now = updated[-1]["session"]["tools"]
    assert [t["name"] for t in tools_now] == ["other", "current_time"]
    assert tools_now[1]["description"] == ""  # the server tool's definition, not the client's
    (error,) = errors
    assert error["error"]["code"] == "invalid_value"
    assert error["error"]["param"] == "session.tools" and error["error"]["event_id"] == "bad"


async def test_without_log_content_a_calls_arguments_and_output_are_logged_as_lengths(tmp_path: Path) -> None:
    settings = {"tools": [tool("lookup", H + "lookup")], "log_content": "false"}
    async with running_relay(tmp_path, settings=settings) as relay:
        async with sdk_session(relay) as connection:
            await ask(connection, 'call lookup {"secret": "s-3"}')
            await until_answer(connection)
    records = only_session(relay)
    (call,) = tool_records(records)
    assert call["arguments"] == len('{"secret":"s-3"}')  # the parsed arguments' JSON length
    assert isinstance(call["output"], int) and call["output"] > 0 and call["result"] == "ok"

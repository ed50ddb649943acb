"""One stdout schema: with `event_log_stdout`, event records and the daemon's own records share stdout, and a log
collector reads them with one mapping (docs/configuration.md, "One stdout schema")."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp

from relay.logconfig import one_stdout_schema
from tests.support.relay_fixtures import running_relay_process


def json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "null"
    )


async def test_every_stdout_line_parses_and_no_key_has_two_json_types(tmp_path: Path) -> None:
    async with (
        # Retrieves answered with an error: relay.retrieve_failed carries the upstream's error object, where other
        # daemon lines carry an error's text.
        running_relay_process(
            tmp_path, env={"RELAY_EVENT_LOG_STDOUT": "true", "RELAY_SIM_KNOBS": '{"retrieve_fail": true}'}
        ) as relay,
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(relay.ws_url) as ws:
            assert json.loads(await ws.receive_str())["type"] == "session.created"
            # Ids of the wrong JSON type, as a careless client sends them: they must not reach the top level.
            await ws.send_str(json.dumps({"type": "input_audio_buffer.clear", "event_id": 7}))
            await ws.send_str(json.dumps({"type": "conversation.item.retrieve", "item_id": ["x"], "event_id": {"a": 1}}))
            await ws.send_str("not json")
            await ws.send_str(
                json.dumps(
                    {
                        "type": "conversation.item.create",
                        "event_id": "c1",
                        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                    }
                )
            )
            await ws.send_str(json.dumps({"type": "response.create", "event_id": "c2"}))
            while json.loads(await ws.receive_str())["type"] != "response.done":
                pass
        relay.send_signal(signal.SIGTERM)
        assert await relay.wait() == 0

    lines = [line for line in relay.raw_stdout if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses
    assert all(isinstance(r, dict) for r in records)
    events = [r for r in records if "seq" in r]
    daemon = [r for r in records if "seq" not in r]
    assert events and daemon
    assert {r["type"] for r in events} >= {"session.created", "response.done", "relay.session_ended"}

    types: dict[str, set[str]] = defaultdict(set)
    for record in records:
        for key, value in record.items():
            types[key].add(json_type(value))
    clashing = {key: kinds for key, kinds in types.items() if len(kinds) > 1}
    assert not clashing, f"keys with several JSON types on stdout: {clashing}"

    for record in records:
        assert isinstance(record["ts"], str) and record["ts"].endswith("Z")
        assert isinstance(record["level"], str)
        for key in ("event_id", "item_id", "response_id"):
            assert key not in record or isinstance(record[key], str)
    for record in daemon:
        assert isinstance(record["msg"], str)
        assert not {"event", "seq", "dir", "timestamp"} & set(record)
    for record in events:
        assert record["level"] == "info" and "msg" not in record
    failed = [r for r in daemon if r["msg"] == "relay.retrieve_failed"]
    assert failed and all(isinstance(json.loads(r["error"]), dict) for r in failed)  # the object, as its JSON text
    cleared = next(r for r in events if r["type"] == "input_audio_buffer.clear")
    assert "event_id" not in cleared and cleared["event"]["event_id"] == 7


def test_a_daemon_field_holding_an_object_or_a_list_is_written_as_its_json_text() -> None:
    """The same name carries text in one message and an object in another (`error`): as text, one JSON type."""
    line = one_stdout_schema(None, "info", {"event": "relay.x", "error": {"code": "e"}, "ids": ["a", 1], "n": 3, "s": "t"})
    assert line == {"msg": "relay.x", "error": '{"code":"e"}', "ids": '["a",1]', "n": 3, "s": "t"}

"""`mic` runs the same server-side tools as `serve`: a spoken turn makes the model (the simulator, with its
`tool_on_audio` knob) call a server tool, the relay answers it, and the speaker plays the model's answer."""

from __future__ import annotations

import json
from pathlib import Path

from tests.mic.test_session import Session, log_records, utterance


async def test_a_spoken_turn_calls_a_server_tool_and_the_answer_is_played(tmp_path: Path) -> None:
    tools = json.dumps([{"name": "lookup", "handler": "python:tests.support.tools_handlers:lookup"}])
    s = Session(tmp_path, env={"RELAY_TOOLS": tools, "RELAY_SIM_KNOBS": '{"tool_on_audio": true}'})
    await s.until(lambda: s.agent.ready, "session.created")
    s.card.say(utterance(1.0))
    await s.until(lambda: s.shown("Tool lookup returned"), "the answer after the tool")
    await s.until(lambda: not s.buffer.is_active, "the answer to play out")
    run = await s.finish()

    assert run.outcome.reason == "client_closed"
    assert s.shown("* tool lookup: ok")  # the terminal hears about the call through relay events
    records = log_records(tmp_path)
    (call,) = [r["event"] for r in records if r["type"] == "relay.tool_call"]
    assert call["name"] == "lookup" and call["result"] == "ok"
    assert [r["type"] for r in records if r["dir"] == "relay" and r["event"].get("event_id", "").startswith("relay_tool_")] == [
        "conversation.item.create",
        "response.create",
    ]

"""The README's first tool example, end to end: `realtime-relay serve --config config/tools.example.toml` (no
credentials: the embedded simulator plays the model) answers "call current_time" from the official `openai` SDK,
the client sees only the final answer, and the event log, `logs` and `logs --html` show the call with its
arguments, output and duration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relay.cli.main import main
from tests.support.relay_fixtures import running_relay_process
from tests.tools.test_serve import answer_text, ask, items_of, sdk_session, until_answer

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "tools.example.toml"


async def test_the_example_config_answers_call_current_time_and_the_logs_show_the_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_relay_process(tmp_path, upstream=None, args=["--config", str(EXAMPLE)]) as relay:
        async with sdk_session(relay) as connection:  # type: ignore[arg-type]
            await ask(connection, "call current_time")
            events: list[dict[str, Any]] = await until_answer(connection)
        await relay.wait_for_log("relay.session_ended")
        relay.terminate()
        assert await relay.wait() == 0

    answer = answer_text(events)
    assert answer.startswith("Tool current_time returned: ")
    assert json.loads(answer.removeprefix("Tool current_time returned: "))["tz"] == "UTC"
    assert not [i for e in events for i in items_of(e) if i.get("type") in ("function_call", "function_call_output")]
    assert not [e for e in events if "function_call" in e["type"]]

    (log_file,) = (tmp_path / "logs").glob("*/*.jsonl")
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    (call,) = [r["event"] for r in records if r["type"] == "relay.tool_call"]
    assert call["name"] == "current_time" and call["arguments"] == {} and call["result"] == "ok"
    assert json.loads(call["output"])["tz"] == "UTC" and isinstance(call["duration_ms"], float)

    capsys.readouterr()
    assert main(["logs", str(tmp_path / "logs")]) == 0
    summary = capsys.readouterr().out
    assert "Server tool calls" in summary and "current_time" in summary and "ok" in summary
    page = tmp_path / "page.html"
    assert main(["logs", str(tmp_path / "logs"), "--html", str(page)]) == 0
    text = page.read_text()
    assert "Server tool calls" in text and "current_time" in text
    assert f"{call['duration_ms']:.1f} ms" in text and "&quot;tz&quot;: &quot;UTC&quot;" in text

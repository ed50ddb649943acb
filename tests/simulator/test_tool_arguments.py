"""The simulator's `call <tool> {json}` rule: the JSON object after the name becomes the call's arguments, and
every `call` of one text is one function_call of the same response (validated by the Driver's schema oracle)."""

from __future__ import annotations

import json

import pytest

from tests.support.sim_fixtures import Driver, first, types

TOOLS = [
    {"type": "function", "name": "get_time", "description": "", "parameters": {"type": "object"}},
    {"type": "function", "name": "find_order", "description": "", "parameters": {"type": "object"}},
]


def say(driver: Driver, text: str) -> list[dict]:
    driver.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )
    return driver.send({"type": "response.create"}) + driver.finish()


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ('call get_time {"tz": "UTC"}', {"tz": "UTC"}),
        ('please call get_time {"tz": {"name": "Europe/Moscow"}} now', {"tz": {"name": "Europe/Moscow"}}),
        ("call get_time", {}),
        ("call get_time {not json}", {}),
        ("call get_time [1, 2]", {}),
        ('call get_time {"a": 1', {}),
    ],
)
def test_the_json_object_after_the_tool_name_is_the_calls_arguments(text: str, arguments: dict) -> None:
    for flavour in ("yandex", "openai"):
        driver = Driver(flavour)
        driver.send({"type": "session.update", "session": {"type": "realtime", "tools": TOOLS}})
        events = say(driver, text)
        item = first(events, "response.output_item.done")["item"]
        assert json.loads(item["arguments"]) == arguments
        assert json.loads(first(events, "response.function_call_arguments.done")["arguments"]) == arguments


def test_several_calls_in_one_text_are_several_function_calls_of_one_response() -> None:
    driver = Driver("openai")
    driver.send({"type": "session.update", "session": {"type": "realtime", "tools": TOOLS}})
    events = say(driver, 'call find_order {"n": 1} and call get_time {"tz": "UTC"}')
    assert types(events).count("response.created") == 1
    output = first(events, "response.done")["response"]["output"]
    assert [(i["name"], json.loads(i["arguments"])) for i in output] == [("find_order", {"n": 1}), ("get_time", {"tz": "UTC"})]
    assert len({i["call_id"] for i in output}) == 2
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["output_index"] for e in done] == [0, 1]

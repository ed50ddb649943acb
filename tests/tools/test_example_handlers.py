"""relay.tools.examples called directly, as the tool runner calls them (docs/tools.md): what they answer, and a
ValueError naming the problem (which the runner turns into the tool's error output) for arguments a model may
make up."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from relay.tools.context import ToolContext
from relay.tools.examples import current_time, echo

CONTEXT = ToolContext(session_id="sess_1", call_id="call_1", tool="current_time")


@pytest.mark.parametrize("tz", ["UTC", "Europe/Moscow", "America/Argentina/Buenos_Aires", "Etc/GMT-14"])
def test_current_time_answers_in_the_zone_asked(tz: str) -> None:
    answer = current_time({"tz": tz}, CONTEXT)
    assert answer["tz"] == tz
    now = dt.datetime.fromisoformat(answer["iso"])
    assert now.tzinfo is not None and abs((dt.datetime.now(dt.UTC) - now).total_seconds()) < 60
    assert answer["weekday"] == now.strftime("%A")


@pytest.mark.parametrize("arguments", [{}, {"tz": None}, {"tz": ""}, {"other": 1}])
def test_current_time_defaults_to_utc(arguments: dict[str, Any]) -> None:
    answer = current_time(arguments, CONTEXT)
    assert answer["tz"] == "UTC" and dt.datetime.fromisoformat(answer["iso"]).utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("tz", "message"),
    [
        (5, "tz must be a string"),
        (["UTC"], "tz must be a string"),
        ({"name": "UTC"}, "tz must be a string"),
        ("Mars/Olympus_Mons", "unknown time zone"),
        ("../../etc/passwd", "unknown time zone"),
        ("/etc/localtime", "unknown time zone"),
        ("UTC\x00", "unknown time zone"),
        ("x" * 10_000, "unknown time zone"),
    ],
)
def test_current_time_refuses_what_is_not_a_time_zone_with_a_message(tz: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        current_time({"tz": tz}, CONTEXT)


async def test_echo_returns_its_arguments_and_the_call_s_ids() -> None:
    arguments = {"a": [1, {"b": None}], "text": "ünï"}
    assert await echo(arguments, CONTEXT) == {"arguments": arguments, "session_id": "sess_1", "call_id": "call_1"}


def test_the_context_is_frozen() -> None:
    with pytest.raises(AttributeError):
        CONTEXT.tool = "other"  # type: ignore[misc]

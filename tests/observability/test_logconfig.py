"""relay.logconfig in-process: JSON lines (one stdout schema with the event records, docs/configuration.md) or a
console rendering, for structlog's records and the standard library's alike, and every line redacted
(docs/security.md). The end-to-end check on a running relay's stdout is tests/eventlog/test_stdout_schema.py."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from relay.logconfig import EVENT_RECORD_KEYS, ID_KEYS, configure_logging, one_stdout_schema, use_json
from tests.support.logging_state import kept_logging_state

SECRET = "sk-live-0123456789abcdef"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put back what the other tests run with."""
    with kept_logging_state():
        yield


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(stream)]


def test_the_format_follows_the_setting_then_the_stream() -> None:
    assert use_json("json", Tty()) is True
    assert use_json("console", io.StringIO()) is False
    assert use_json("auto", Tty()) is False  # a person is watching
    assert use_json("auto", io.StringIO()) is True  # a pipe, a file, a collector
    assert use_json("auto", object()) is True  # a stream that cannot tell is not a terminal


def test_json_records_follow_the_one_stdout_schema() -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)
    structlog.get_logger().info(
        "relay.test_record", session_id="s1", seq=4, dir="client", type="x", v=9, event_id=7, item_id="item_1",
        response_id=None,
    )
    logging.getLogger("aiohttp.server").warning("stdlib says %s", "hello")
    first, second = json_lines(out)
    assert first["msg"] == "relay.test_record" and first["level"] == "info" and first["session_id"] == "s1"
    assert first["ts"].endswith("Z") or first["ts"].endswith("+00:00")
    # Keys the event records own keep their value under another name; a non-string id becomes its repr.
    assert {k: first[k] for k in ("seq_field", "dir_field", "type_field", "v_field")} == {
        "seq_field": 4, "dir_field": "client", "type_field": "x", "v_field": 9,
    }
    assert first["event_id_field"] == "7" and first["item_id"] == "item_1"
    assert not {"event", "seq", "dir", "type", "v", "event_id", "response_id", "response_id_field"} & set(first)
    assert second["msg"] == "stdlib says hello" and second["level"] == "warning"
    assert second["logger"] == "aiohttp.server" and "ts" in second and "event" not in second


def test_a_traceback_goes_into_the_json_line() -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger().exception("relay.command_failed")
    (record,) = json_lines(out)
    assert record["level"] == "error" and "ValueError: boom" in record["exception"]


def test_console_output_is_for_people() -> None:
    out = io.StringIO()
    configure_logging("console", "info", out)
    structlog.get_logger().info("relay.listening", port=8080)
    logging.getLogger("websockets.client").info("stdlib line")
    text = out.getvalue()
    assert "relay.listening" in text and "port" in text and "8080" in text and "stdlib line" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines(out)[0])
    assert "\x1b[" not in text  # colours only on a terminal


def test_the_level_filters_both_kinds_of_records_and_the_access_log_waits_for_debug() -> None:
    out = io.StringIO()
    configure_logging("json", "warning", out)
    structlog.get_logger().info("relay.dropped")
    logging.getLogger("aiohttp.server").info("dropped too")
    structlog.get_logger().warning("relay.kept")
    assert [r["msg"] for r in json_lines(out)] == ["relay.kept"]
    assert logging.getLogger("aiohttp.access").level == logging.WARNING
    configure_logging("json", "debug", io.StringIO())
    assert logging.getLogger("aiohttp.access").level == logging.WARNING
    with pytest.raises(KeyError):
        configure_logging("json", "loud", io.StringIO())


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_secrets_never_reach_the_output_whoever_logs_them(log_format: str) -> None:
    out = io.StringIO()
    configure_logging(log_format, "info", out)
    structlog.get_logger().info("relay.headers", headers={"Authorization": f"Bearer {SECRET}"})
    logging.getLogger("websockets.client").info("> Authorization: Api-Key %s", SECRET)
    try:
        raise RuntimeError(f"handshake with wss://user:{SECRET}@upstream.test/?api_key={SECRET} failed")
    except RuntimeError:
        logging.getLogger("asyncio").exception("task failed")
    text = out.getvalue()
    assert text.count("****") >= 3 and "handshake" in text
    assert SECRET not in text


@given(st.dictionaries(st.sampled_from([*EVENT_RECORD_KEYS, *ID_KEYS, "event", "msg", "other"]), st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)
)))
def test_the_schema_processor_leaves_no_event_record_key_and_only_string_ids(fields: dict[str, Any]) -> None:
    out = one_stdout_schema(None, "info", dict(fields))
    assert not set(EVENT_RECORD_KEYS) & set(out) and "event" not in out
    assert all(isinstance(out[k], str) for k in ID_KEYS if k in out)
    assert all(isinstance(out[f"{k}_field"], str) for k in ID_KEYS if f"{k}_field" in out)
    if "event" in fields:
        assert out["msg"] == fields["event"]

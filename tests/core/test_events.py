"""relay.core.events, the one place type strings are spelled: its constants and sets agree with each other and
with the realtime protocol as the official `openai` SDK models it."""

from __future__ import annotations

import re
import typing

from openai.types.realtime import RealtimeClientEvent

from relay.core import events as ev
from tests.support.schema_oracle import known_server_event_types

CONSTANTS: dict[str, str] = {
    name: value for name, value in vars(ev).items() if name.isupper() and isinstance(value, str)
}
CODES = {name: value for name, value in CONSTANTS.items() if name.startswith("CODE_")}
RELAY_TYPES = {name: value for name, value in CONSTANTS.items() if value.startswith("relay.")}
PROTOCOL_TYPES = {
    name: value
    for name, value in CONSTANTS.items()
    if name not in CODES and name not in RELAY_TYPES and not name.endswith("_PREFIX")  # id prefixes, not types
}
TYPE_SHAPE = re.compile(r"^[a-z_]+(\.[a-z_]+)*$")


def sdk_client_event_types() -> set[str]:
    union = RealtimeClientEvent
    if typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    return {typing.get_args(model.model_fields["type"].annotation)[0] for model in typing.get_args(union)}


def test_every_string_is_spelled_once() -> None:
    values = list(CONSTANTS.values())
    assert len(values) == len(set(values)), sorted(v for v in values if values.count(v) > 1)


def test_every_protocol_type_is_in_exactly_one_direction() -> None:
    assert not ev.CLIENT_EVENT_TYPES & ev.SERVER_EVENT_TYPES
    assert set(PROTOCOL_TYPES.values()) == ev.CLIENT_EVENT_TYPES | ev.SERVER_EVENT_TYPES
    assert all(TYPE_SHAPE.match(value) for value in PROTOCOL_TYPES.values())


def test_the_known_sets_are_the_protocol_s() -> None:
    assert sdk_client_event_types() == ev.CLIENT_EVENT_TYPES
    assert known_server_event_types() >= ev.SERVER_EVENT_TYPES


def test_the_relay_s_own_types_never_collide_with_the_protocol() -> None:
    assert all(name.startswith("RELAY_") and TYPE_SHAPE.match(value) for name, value in RELAY_TYPES.items())
    assert not set(RELAY_TYPES.values()) & (ev.CLIENT_EVENT_TYPES | ev.SERVER_EVENT_TYPES)
    assert not any(t.startswith("relay.") for t in ev.CLIENT_EVENT_TYPES | ev.SERVER_EVENT_TYPES)
    # The id prefix of the relay's own retrieves is a prefix, not a type, and cannot pass for a client's id word.
    assert ev.RELAY_RETRIEVE_EVENT_ID_PREFIX.endswith("_") and "." not in ev.RELAY_RETRIEVE_EVENT_ID_PREFIX


def test_audio_payload_fields_name_a_known_type_and_its_base64_field() -> None:
    assert ev.AUDIO_PAYLOAD_FIELD == {ev.INPUT_AUDIO_BUFFER_APPEND: "audio", ev.RESPONSE_OUTPUT_AUDIO_DELTA: "delta"}
    assert ev.INPUT_AUDIO_BUFFER_APPEND in ev.CLIENT_EVENT_TYPES
    assert ev.RESPONSE_OUTPUT_AUDIO_DELTA in ev.SERVER_EVENT_TYPES


def test_error_codes_are_snake_case_words() -> None:
    assert CODES and all(re.fullmatch(r"[a-z]+(_[a-z]+)*", code) for code in CODES.values())
    assert all(name == "CODE_" + code.upper() for name, code in CODES.items())

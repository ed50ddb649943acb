"""Untrusted client frames into the simulator's session: it never raises, every answer validates, it goes on."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core import events as ev
from tests.support.sim_fixtures import Driver, types

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "session",
        "audio",
        "item",
        "item_id",
        "content_index",
        "audio_end_ms",
        "response",
        "response_id",
        "previous_item_id",
        "event_id",
        "type",
        "output_modalities",
        "turn_detection",
        "format",
        "rate",
    ]
)
client_events = st.builds(
    lambda type_, fields: {"type": type_, **fields},
    st.sampled_from([*sorted(ev.CLIENT_EVENT_TYPES), "bogus", ""]),
    st.dictionaries(field_names, json_values, max_size=5),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flavour=st.sampled_from(["yandex", "openai"]), frames=st.lists(client_events | json_values, max_size=6))
def test_random_client_events_never_break_the_session(flavour: str, frames: list[Any]) -> None:
    driver = Driver(flavour)
    for frame in frames:
        driver.send_text(json.dumps(frame))  # every emitted event is validated by the driver
        driver.finish()
    assert types(driver.send({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_random_text_frames_get_an_error_or_an_answer(text: str) -> None:
    driver = Driver("yandex")
    driver.send_text(text)
    assert types(driver.send({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]

"""relay.simulator.config fed garbage: a `session.update` patch or a `response` object of any JSON shape either
gives a new config (the old one untouched, the result still encodable) or a `SessionConfigError` naming a
parameter; nothing else ever escapes, in either flavour."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.simulator.config import FLAVOURS, SessionConfigError, default_session
from relay.simulator.validation import apply_session_update, validate_response_params

KEYS = [
    "type", "model", "instructions", "output_modalities", "modalities", "tools", "tool_choice", "max_output_tokens",
    "audio", "input", "output", "format", "rate", "turn_detection", "transcription", "noise_reduction", "voice",
    "speed", "threshold", "silence_duration_ms", "prefix_padding_ms", "create_response", "interrupt_response",
    "idle_timeout_ms", "name", "description", "parameters", "language", "languages", "role", "tracing",
    "truncation", "include", "metadata", "conversation", "x",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.sampled_from(
        ["realtime", "audio", "text", "audio/pcm", "audio/pcmu", "audio/pcma", "server_vad", "semantic_vad", "auto",
         "none", "default", "inf", "function", "near_field", "alloy", "disabled", ""]
    ), st.text(max_size=8),
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    max_leaves=25,
)
# Patches that get past the first checks, so the garbage reaches the nested parts.
AUDIO = st.fixed_dictionaries({}, optional={
    "input": st.dictionaries(st.sampled_from(KEYS), JSON_LIKE, max_size=4),
    "output": st.dictionaries(st.sampled_from(KEYS), JSON_LIKE, max_size=4),
})
PATCHES = st.one_of(
    JSON_LIKE,
    st.builds(lambda rest, audio: {**rest, "type": "realtime", "audio": audio},
              st.dictionaries(st.sampled_from(KEYS), JSON_LIKE, max_size=3), AUDIO),
)
flavours = st.sampled_from(FLAVOURS)


@settings(max_examples=300, deadline=None)
@given(patch=PATCHES, flavour=flavours)
def test_a_session_update_of_any_shape_is_applied_whole_or_refused(patch: Any, flavour: Any) -> None:
    current = default_session(flavour, "gpt://folder/model")
    before = copy.deepcopy(current)
    try:
        new = apply_session_update(current, patch, flavour)
    except SessionConfigError as exc:
        assert str(exc)
    else:
        assert new is not current and isinstance(new, dict)
        json.dumps(new, allow_nan=False)  # what session.updated sends back is JSON
    assert current == before


@settings(max_examples=300, deadline=None)
@given(params=JSON_LIKE, flavour=flavours)
def test_response_params_of_any_shape_are_read_or_refused(params: Any, flavour: Any) -> None:
    try:
        out = validate_response_params(params, flavour)
    except SessionConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(out, dict) and set(out) <= {"output_modalities", "instructions", "metadata", "conversation"}

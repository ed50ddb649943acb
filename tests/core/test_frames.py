"""Frame helpers of the core (relay.core.frames): base64 lengths without decoding, and whether a frame the relay
could not parse names the relay."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from relay.core.frames import b64_decoded_len, may_name_the_relay


@given(st.binary(max_size=64))
def test_the_decoded_length_of_valid_base64_is_exact_without_decoding(data: bytes) -> None:
    assert b64_decoded_len(base64.b64encode(data).decode()) == len(data)


@given(st.text(alphabet="AB=", max_size=8) | st.text(max_size=8))
def test_any_text_is_counted_as_three_bytes_per_four_characters_less_its_padding(text: str) -> None:
    """Not base64 at all: still a number, never an exception (the upstream judges the audio, not the relay)."""
    padding = (text[-1:] == "=") + (text[-2:] == "==")
    assert b64_decoded_len(text) == len(text) * 3 // 4 - padding


@given(st.text(max_size=50), st.text(max_size=50), st.lists(st.booleans(), min_size=5, max_size=5))
def test_a_refused_frame_naming_the_relay_is_seen_however_its_letters_are_escaped(
    before: str, after: str, escaped: list[bool]
) -> None:
    word = "".join(f"\\u{ord(c):04x}" if esc else c for c, esc in zip("relay", escaped, strict=True))
    assert may_name_the_relay(before + word + after)


@given(st.text(max_size=200).filter(lambda t: "relay" not in t and "\\u" not in t))
def test_a_refused_frame_that_never_names_the_relay_is_not_flagged(text: str) -> None:
    assert not may_name_the_relay(text)

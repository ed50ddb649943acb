"""Frame helpers of the core (relay.core.frames): base64 lengths without decoding."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from relay.core.frames import b64_decoded_len


@given(st.binary(max_size=64))
def test_the_decoded_length_of_valid_base64_is_exact_without_decoding(data: bytes) -> None:
    assert b64_decoded_len(base64.b64encode(data).decode()) == len(data)


@given(st.text(alphabet="AB=", max_size=8) | st.text(max_size=8))
def test_any_text_is_counted_as_three_bytes_per_four_characters_less_its_padding(text: str) -> None:
    """Not base64 at all: still a number, never an exception (the upstream judges the audio, not the relay)."""
    padding = (text[-1:] == "=") + (text[-2:] == "==")
    assert b64_decoded_len(text) == len(text) * 3 // 4 - padding

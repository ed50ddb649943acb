"""relay.redact's smaller promises (docs/security.md): registered secrets (short ones ignored, JSON-escaped
spellings masked too, forgotten on demand), the upstream credentials (the current and the previous read masked,
older ones let go), and `printable_data` making any event safe for a terminal. The
patterns themselves are tests/security/test_redaction.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import relay.redact as redact
from relay.redact import (
    MASK,
    forget_secrets,
    printable,
    printable_data,
    redact_text,
    register_credentials,
    register_secret,
)


@pytest.fixture(autouse=True)
def kept_secrets() -> Iterator[None]:
    saved = redact._known, redact._registered, redact._credentials
    forget_secrets()
    yield
    redact._known, redact._registered, redact._credentials = saved


def test_a_registered_secret_is_masked_anywhere_until_forgotten() -> None:
    register_secret("hunter2-but-longer", None, "")
    assert redact_text("x=hunter2-but-longer;y") == f"x={MASK};y"
    forget_secrets()
    assert redact_text("x=hunter2-but-longer;y") == "x=hunter2-but-longer;y"


def test_upstream_credentials_are_masked_through_one_rotation_and_then_let_go() -> None:
    register_credentials("key-one-0001", None)
    register_credentials("key-two-0002")  # the file was rotated: lines of sessions on the old key still get masked
    assert redact_text("key-one-0001 key-two-0002") == f"{MASK} {MASK}"
    register_credentials("key-two-0002")  # read again, unchanged: nothing moves
    assert redact_text("key-one-0001") == MASK
    register_credentials("key-three-03")
    assert redact_text("key-one-0001 key-two-0002 key-three-03") == f"key-one-0001 {MASK} {MASK}"


def test_credentials_and_registered_secrets_do_not_replace_each_other() -> None:
    register_secret("client-token-1")
    register_credentials("upstream-key-1")
    register_credentials("upstream-key-2")
    register_credentials("upstream-key-3")
    assert redact_text("client-token-1") == MASK


def test_values_shorter_than_four_are_not_registered() -> None:
    register_secret("abc", "a", "")
    assert redact_text("abc a b c") == "abc a b c"


def test_the_json_escaped_spelling_is_masked_too() -> None:
    secret = 'pa"ss\\word\u00e9\n'
    register_secret(secret)
    rendered = json.dumps({"msg": f"token {secret}"})
    assert secret not in rendered and json.dumps(secret)[1:-1] in rendered  # a JSON renderer escapes it
    assert json.dumps(secret)[1:-1] not in redact_text(rendered)  # and the escaped spelling is masked as well


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    register_secret("abcd", "abcd-efgh-ijkl")
    assert redact_text("see abcd-efgh-ijkl") == f"see {MASK}"


def test_printable_data_escapes_every_string_keys_included_and_keeps_the_shape() -> None:
    event = {"\x1b]0;title\x07": ["\u202eevil", 3, None, True, 1.5, ("\x9b2J",)], "ok": {"n": "line\nnext\tcol"}}
    assert printable_data(event) == {
        "\\u001b]0;title\\u0007": ["\\u202eevil", 3, None, True, 1.5, ["\\u009b2J"]],
        "ok": {"n": "line\nnext\tcol"},
    }


@given(st.text())
def test_printable_leaves_no_control_that_moves_a_terminal(text: str) -> None:
    shown = printable(text)
    assert not any(
        (ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F or 0x202A <= ord(c) <= 0x202E
        or 0x2066 <= ord(c) <= 0x2069
        for c in shown
    )
    assert json.loads(json.dumps(shown)) == shown


clean_text = st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs")), max_size=10)
clean_data = st.recursive(
    st.none() | st.booleans() | st.integers() | clean_text,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(clean_text, c, max_size=3),
    max_leaves=15,
)


@given(clean_data)
def test_printable_data_leaves_clean_data_as_it_is(value: Any) -> None:
    assert printable_data(value) == value

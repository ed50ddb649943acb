"""Any JSON value in any field the session core reads, from either side: nothing raises and decisions stay whole.

The core reads a few fields of a few event types (truncate, append, session.update, retrieve, item create and
delete, the server's session, item, audio and retrieve events, and the `error` that may answer the relay's own
retrieve). Each of those fields here gets every JSON type: strings, numbers, booleans, null, lists, objects, huge
strings and deep nesting. The rules checked after every frame:
- no exception escapes the core;
- a client frame is either forwarded upstream exactly once and logged once as `client`, or answered with exactly
  one `error` (nothing forwarded, one `relay.client_error`); only a pinned `session.update` whose `session` is
  present but not an object is answered, with `invalid_value` and `param: session`;
- a frame the relay only observes goes upstream as the exact text that arrived;
- a server frame is forwarded once and logged once, or (an answer to the relay's own retrieve) logged once as
  `relay` and not forwarded;
- everything the relay writes is JSON, and its own frames carry `relay_` event ids;
- once the session is closed, every byte of kept audio is back in the process-wide budget.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.keptaudio import KeptAudioBudget
from relay.core.policy import SessionPolicy
from relay.core.session import RelaySession

AUDIO = base64.b64encode(b"\x01\x02" * 480).decode()


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
    | st.sampled_from(["item_1", "item_2", "relay_retrieve_item_1", AUDIO, "", "x" * 10_000, "é" * 3000]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
) | st.builds(_nested, st.sampled_from([40, 300, 500]))

# Valid events of every type the core inspects; each example sets one or more of their fields to any value.
CLIENT_TEMPLATES: dict[str, dict[str, Any]] = {
    "conversation.item.truncate": {"item_id": "item_1", "content_index": 0, "audio_end_ms": 5000},
    "input_audio_buffer.append": {"audio": AUDIO},
    "session.update": {"session": {"instructions": "hi", "audio": {"input": {"format": {"type": "audio/pcm"}}}}},
    "conversation.item.retrieve": {"item_id": "item_1"},
    "conversation.item.create": {
        "previous_item_id": None,
        "item": {"id": "item_9", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
    },
    "conversation.item.delete": {"item_id": "item_1"},
    "input_audio_buffer.clear": {},
    "input_audio_buffer.commit": {},
    "response.create": {"response": {"output_modalities": ["audio"]}},
}
SERVER_TEMPLATES: dict[str, dict[str, Any]] = {
    "session.updated": {
        "session": {
            "id": "s",
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": {"prefix_padding_ms": 300}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}},
            },
        }
    },
    "response.output_item.added": {
        "item": {"id": "item_1", "type": "message", "role": "assistant", "content": [{"type": "output_audio"}]}
    },
    "response.output_audio.delta": {"item_id": "item_1", "delta": AUDIO},
    "input_audio_buffer.speech_started": {"item_id": "item_2", "audio_start_ms": 100},
    "input_audio_buffer.speech_stopped": {"item_id": "item_2", "audio_end_ms": 900},
    "input_audio_buffer.committed": {"item_id": "item_2"},
    "conversation.item.added": {
        "item": {"id": "item_2", "type": "message", "role": "user", "content": [{"type": "input_audio"}]}
    },
    "conversation.item.done": {
        "item": {"id": "item_1", "type": "message", "role": "assistant", "content": [{"type": "output_audio"}]}
    },
    "response.output_item.done": {
        "item": {"id": "item_2", "type": "message", "role": "user", "content": [{"type": "input_audio"}]}
    },
    "conversation.item.input_audio_transcription.completed": {"item_id": "item_2", "transcript": "x"},
    "conversation.item.retrieved": {
        "item": {"id": "item_1", "type": "message", "content": [{"type": "output_audio", "audio": AUDIO}]}
    },
    "error": {"error": {"type": "invalid_request_error", "code": "x", "event_id": "relay_retrieve_item_1"}},
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a template a value can be swapped: each key, list index, and the containers themselves."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*prefix, key))
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.append((*prefix, index))
            out += _paths(child, (*prefix, index))
    return out


def _set(event: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = event
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


@st.composite
def mutated(draw: st.DrawFn, templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(templates)))
    event: dict[str, Any] = {"type": kind, **copy.deepcopy(templates[kind])}
    paths = [("event_id",), *_paths(templates[kind])]
    for path in draw(st.lists(st.sampled_from(paths), max_size=3, unique=True)):
        try:
            _set(event, path, draw(json_values))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier swap replaced the container this path ran through
    return event


def _text(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def _drain(core: RelaySession) -> dict[str, list[Any]]:
    out = {"upstream": core.to_upstream(), "client": core.to_client(), "log": core.to_log(), "arm": core.to_arm()}
    core.to_save()
    core.to_disarm()
    return out


def _check_relay_frames(out: dict[str, list[Any]]) -> None:
    for text in out["upstream"] + out["client"]:
        assert isinstance(json.loads(text), dict)


def feed_client(core: RelaySession, event: dict[str, Any], pinned: bool) -> None:
    text = _text(event)
    core.receive_client_text(text)
    out = _drain(core)
    _check_relay_frames(out)
    client_logs = [e for e in out["log"] if e.dir == "client"]
    rejected = "session" in event and not isinstance(event["session"], dict)
    if pinned and event["type"] == "session.update" and rejected:
        assert out["upstream"] == [] and client_logs == []
        (answer,) = [json.loads(t) for t in out["client"]]
        error = answer["error"]
        assert (error["code"], error["param"]) == ("invalid_value", "session")
        assert error["event_id"] == (event["event_id"] if isinstance(event.get("event_id"), str) else None)
        assert [e.type for e in out["log"]] == ["relay.client_error"]
        return
    assert len(out["upstream"]) == 1 and len(client_logs) == 1, (event, out)
    assert out["client"] == []
    changed = (pinned and event["type"] == "session.update") or client_logs[0].client_event is not None
    if not changed:
        assert out["upstream"] == [text]


def feed_server(core: RelaySession, event: dict[str, Any]) -> None:
    core.receive_server_text(_text(event))
    out = _drain(core)
    _check_relay_frames(out)
    server_logs = [e for e in out["log"] if e.dir == "server"]
    answered_relay = [e for e in out["log"] if e.dir == "relay" and e.type == event["type"]]
    if answered_relay:
        assert out["client"] == [] and server_logs == []
    else:
        assert out["client"] == [_text(event)] and len(server_logs) == 1
    for text in out["upstream"]:  # only the relay's own retrieves go upstream from a server event
        sent = json.loads(text)
        assert sent["type"] == "conversation.item.retrieve" and sent["event_id"].startswith("relay_")
    for item_id in out["arm"]:
        core.retrieve_timed_out(item_id)
        _check_relay_frames(_drain(core))


frames = st.lists(
    st.tuples(st.just("client"), mutated(CLIENT_TEMPLATES)) | st.tuples(st.just("server"), mutated(SERVER_TEMPLATES)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pinned=st.booleans(), clamp=st.booleans(), sequence=frames)
def test_any_value_in_any_read_field_never_raises_and_every_frame_is_handled_once(
    pinned: bool, clamp: bool, sequence: list[tuple[str, dict[str, Any]]]
) -> None:
    budget = KeptAudioBudget(4096)  # small, so releases happen too
    policy = SessionPolicy(pinned_session={"instructions": "pinned"} if pinned else {}, clamp_truncate=clamp)
    core = RelaySession(policy, budget)
    core.upstream_connected(1.0)
    core.receive_server_text(_text({"type": "session.created", "event_id": "e0", "session": {"id": "s"}}))
    _drain(core)
    for side, event in sequence:
        if side == "client":
            feed_client(core, event, pinned)
        else:
            feed_server(core, event)
    core.session_closing()
    core.session_closed()
    _drain(core)
    assert budget.kept_bytes == 0 and len(budget) == 0


@pytest.mark.parametrize("item_id", [["a"], {"a": 1}, 7, 1.5, True, None, "x" * 10_000])
def test_a_truncate_whose_item_id_is_not_a_known_string_is_forwarded_unchanged(item_id: Any) -> None:
    core = RelaySession(SessionPolicy())
    text = _text({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 10})
    core.receive_client_text(text)
    assert core.to_upstream() == [text]
    assert core.to_client() == []


@pytest.mark.parametrize("session", ["x", 5, [], None, True])
def test_a_pinned_session_update_whose_session_is_not_an_object_is_refused_naming_the_field(session: Any) -> None:
    core = RelaySession(SessionPolicy(pinned_session={"instructions": "pinned"}))
    core.receive_client_text(_text({"type": "session.update", "event_id": "u1", "session": session}))
    assert core.to_upstream() == []
    (answer,) = [json.loads(t) for t in core.to_client()]
    assert answer["error"]["code"] == "invalid_value"
    assert (answer["error"]["param"], answer["error"]["event_id"]) == ("session", "u1")


def test_without_a_pin_a_session_update_of_any_shape_is_the_upstreams_to_judge() -> None:
    core = RelaySession(SessionPolicy())
    text = _text({"type": "session.update", "session": "not an object"})
    core.receive_client_text(text)
    assert core.to_upstream() == [text] and core.to_client() == []


def test_a_pinned_update_nested_deeper_than_orjson_encodes_is_still_pinned_and_forwarded() -> None:
    core = RelaySession(SessionPolicy(pinned_session={"instructions": "pinned"}))
    core.receive_client_text(_text({"type": "session.update", "session": {"metadata": _nested(400)}}))
    (sent,) = [json.loads(t) for t in core.to_upstream()]
    assert sent["session"]["instructions"] == "pinned"

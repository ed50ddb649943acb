"""The pure parts of upstream resume (relay.core.resume): backoff, the effective configuration, the compact history,
the pending audio, the gap queue and the restore plan, with property tests where a rule holds for any input."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.outbox import LogEntry
from relay.core.policy import SessionPolicy
from relay.core.resume import (
    GapQueue,
    HeldFrame,
    Restore,
    ResumePolicy,
    ResumeState,
    backoff_delays,
    is_resumable,
)
from relay.core.resume_memory import CompactHistory
from relay.core.session import RelaySession
from tests.support.schema_oracle import validate_server_event


def append(ms: int, rate: int = 24000, event_id: str | None = None) -> str:
    event: dict[str, Any] = {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0\0" * (rate * ms // 1000)).decode()}
    if event_id is not None:
        event["event_id"] = event_id
    return json.dumps(event)


# ---- which ends are drops, and the waits between attempts ------------------------------------------------------


def test_drops_are_resumed_and_normal_or_protocol_closes_are_not() -> None:
    for code in (1001, 1006, 1011, 1012, 1013, 1014):
        assert is_resumable(code)
    for code in (1000, 1002, 1003, 1007, 1008, 1009, 4000, None):
        assert not is_resumable(code)


@settings(deadline=None)  # a busy shared machine: examples are checked, not timed
@given(st.integers(min_value=0, max_value=12), st.lists(st.floats(min_value=0.0, max_value=0.999999), min_size=12, max_size=12))
def test_backoff_doubles_from_half_a_second_within_half_jitter(attempts: int, draws: list[float]) -> None:
    it = iter(draws)
    delays = backoff_delays(attempts, lambda: next(it))
    assert len(delays) == attempts
    for index, delay in enumerate(delays):
        base = 0.5 * 2**index
        assert 0.5 * base <= delay < 1.5 * base


# ---- effective configuration ------------------------------------------------------------------------------------


def test_the_answer_to_the_relays_pinned_update_is_never_credited_to_a_clients_refused_one() -> None:
    core = RelaySession(SessionPolicy(pinned_session={"instructions": "pinned"}, resume=ResumePolicy()))
    core.upstream_connected(1.0)  # the pinned session.update goes first
    core.receive_server_text(json.dumps({"type": "session.created", "session": {}}))
    bad = {"type": "session.update", "event_id": "c_bad", "session": {"audio": {"output": {"voice": "bad"}}}}
    core.receive_client_text(json.dumps(bad))
    core.receive_server_text(json.dumps({"type": "session.updated", "session": {}}))  # answers the pinned one
    core.receive_server_text(json.dumps({"type": "error", "error": {"event_id": "c_bad", "code": "invalid_value"}}))
    core.upstream_dropped(1006, "lost")
    core.to_upstream()
    core.begin_restore(1, 1.0)
    (config, *_items) = [json.loads(f) for f in core.to_upstream()]
    assert config["session"] == {"type": "realtime", "instructions": "pinned"}  # the pins, not the refused voice


def test_requests_the_dropped_upstream_never_answered_are_sent_again_after_the_audio() -> None:
    core = RelaySession(SessionPolicy(resume=ResumePolicy()))
    core.upstream_connected(1.0)
    core.receive_server_text(json.dumps({"type": "session.created", "session": {"audio": {"input": {"turn_detection": None}}}}))
    answered = json.dumps({"type": "response.create", "event_id": "c_answered"})
    core.receive_client_text(answered)
    core.receive_server_text(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
    core.receive_server_text(json.dumps({"type": "response.done", "response": {"id": "r1", "status": "completed"}}))
    speech = append(100, event_id="c_audio")
    commit = json.dumps({"type": "input_audio_buffer.commit", "event_id": "c_commit"})
    create = json.dumps({"type": "response.create", "event_id": "c_create"})
    for text in (speech, commit, create):  # written to the old upstream just before it dropped: no answer came
        core.receive_client_text(text)
    core.to_upstream()
    core.upstream_dropped(1006, "lost")
    core.begin_restore(1, 1.0)
    core.receive_server_text(json.dumps({"type": "session.updated", "session": {}}))
    core.to_upstream()
    core.finish_restore(1, 10.0)
    sent = [json.loads(text) for text in core.to_upstream()]
    assert [(e["type"], e.get("event_id")) for e in sent] == [
        ("input_audio_buffer.append", "relay_resume1_audio0"),  # the uncommitted audio, as the relay's own
        ("input_audio_buffer.commit", "c_commit"),
        ("response.create", "c_create"),  # the answered one is not sent again
    ]


# ---- compact history ----------------------------------------------------------------------------------------------


def user_text(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "user", "status": "completed", "content": [{"type": "input_text", "text": text}]}


def test_the_history_keeps_completed_items_in_order_with_transcripts_and_calls() -> None:
    history = CompactHistory(10_000)
    history.observe_item(user_text("u1", "hello"), complete=False)
    history.observe_item({"id": "u2", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]}, complete=True)
    history.observe_item({"id": "a1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}, complete=False)
    history.observe_item({"id": "a1", "type": "message", "role": "assistant", "content": [{"type": "output_audio", "transcript": "hi there"}]}, complete=True)
    history.observe_item({"id": "a2", "type": "message", "role": "assistant", "status": "in_progress", "content": []}, complete=False)
    history.observe_item({"id": "c1", "type": "function_call", "call_id": "call_1", "name": "get_time", "arguments": "{}"}, complete=True)
    history.observe_item({"id": "o1", "type": "function_call_output", "call_id": "call_1", "output": "12:00", "status": "completed"}, complete=False)
    history.transcript("u2", "the spoken words")
    restorable = history.restorable()
    assert [entry.item_id for entry in restorable] == ["u1", "u2", "a1", "c1", "o1"]  # a2 never finished
    assert [entry.restore_item(keep_id=True) for entry in restorable] == [
        {"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        {"id": "u2", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "the spoken words"}]},
        {"id": "a1", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi there"}]},
        {"id": "c1", "type": "function_call", "call_id": "call_1", "name": "get_time", "arguments": "{}"},
        {"id": "o1", "type": "function_call_output", "call_id": "call_1", "output": "12:00"},
    ]
    history.deleted("u1")
    assert "id" not in history.restorable()[0].restore_item(keep_id=False)
    assert [entry.item_id for entry in history.restorable()] == ["u2", "a1", "c1", "o1"]


_garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["id", "type", "role", "content", "text", "transcript", "call_id", "status", "x"]), children, max_size=6),
    max_leaves=20,
)


@settings(deadline=None)  # a busy shared machine: examples are checked, not timed
@given(st.lists(st.tuples(st.sampled_from(["item", "done", "transcript", "deleted"]), _garbage, _garbage), max_size=30))
def test_garbage_items_never_break_the_history(steps: list[tuple[str, Any, Any]]) -> None:
    history = CompactHistory(2_000)
    for op, first, second in steps:
        if op == "item":
            history.observe_item(first, complete=False)
        elif op == "done":
            history.observe_item(first, complete=True)
        elif op == "transcript":
            history.transcript(first, second)
        else:
            history.deleted(first)
    for entry in history.restorable():
        json.dumps(entry.restore_item(keep_id=True))
    assert history.bytes == sum(entry.size for entry in history.items.values())


@settings(deadline=None)  # a busy shared machine: examples are checked, not timed
@given(st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=60), st.integers(min_value=0, max_value=4000))
def test_the_history_stays_under_its_cap_dropping_the_oldest_first(texts: list[str], cap: int) -> None:
    history = CompactHistory(cap)
    for index, text in enumerate(texts):
        history.observe_item(user_text(f"u{index}", text), complete=True)
    assert history.bytes <= cap
    kept = [int(item_id[1:]) for item_id in history.items]
    assert kept == list(range(len(texts) - len(kept), len(texts)))  # a suffix: the newest survive
    assert history.dropped == len(texts) - len(kept)


# ---- audio and the gap queue -------------------------------------------------------------------------------------


def core_with_resume(**policy: Any) -> RelaySession:
    core = RelaySession(SessionPolicy(resume=ResumePolicy(**policy)))
    # Manual turns: nothing but a commit ends the uncommitted buffer (server VAD would also trim idle audio).
    core.receive_server_text(json.dumps({"type": "session.created", "session": {"audio": {"input": {"turn_detection": None}}}}))
    return core


@settings(deadline=None)  # a busy shared machine: examples are checked, not timed
@given(st.lists(st.one_of(st.integers(min_value=1, max_value=400), st.just(-1)), max_size=60), st.integers(min_value=0, max_value=3000))
def test_the_audio_to_resend_is_what_came_since_the_last_commit_within_the_bound(steps: list[int], bound_ms: int) -> None:
    core = core_with_resume(buffer_seconds=bound_ms / 1000.0)
    since_commit: list[int] = []
    for n, ms in enumerate(steps):
        if ms < 0:
            core.receive_server_text(json.dumps({"type": "input_audio_buffer.committed", "item_id": f"u{n}"}))
            since_commit = []
        else:
            core.receive_client_text(append(ms))
            since_commit.append(ms)
    kept = [round(ms) for _, ms in core.uncommitted_audio(bound_ms)]
    assert sum(kept) <= bound_ms
    assert kept == since_commit[len(since_commit) - len(kept) :]  # the newest audio, in order
    if len(kept) < len(since_commit):  # nothing that fits was left out
        assert sum(kept) + since_commit[len(since_commit) - len(kept) - 1] > bound_ms


@settings(deadline=None)  # a busy shared machine: examples are checked, not timed
@given(
    st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=500), st.integers(min_value=1, max_value=400)), max_size=60),
    st.integers(min_value=100, max_value=20_000),
    st.integers(min_value=0, max_value=2000),
)
def test_the_gap_queue_keeps_order_and_both_bounds(frames: list[tuple[bool, int, int]], max_bytes: int, max_ms: int) -> None:
    gap = GapQueue(max_bytes, float(max_ms))
    for index, (is_append, size, ms) in enumerate(frames):
        gap.add(f"{index:05d}" + "x" * size, float(ms) if is_append else None, LogEntry("client", "x", {}))
    kept = list(gap.entries)
    assert gap.bytes == sum(len(entry.text) for entry in kept) <= max_bytes
    assert gap.audio_ms == sum(entry.audio_ms or 0.0 for entry in kept) <= max_ms
    order = [int(entry.text[:5]) for entry in kept]
    assert order == sorted(order)
    assert len(kept) + gap.dropped_frames == len(frames)
    assert gap.drain(1) == [HeldFrame(entry.text, entry.record) for entry in kept if entry.record] and not gap.entries


def test_audio_from_before_the_drop_is_resent_as_the_relays_own_appends_then_the_gap_frames() -> None:
    gap = GapQueue(1 << 20, 5000.0)
    audio = json.loads(append(100))["audio"]
    gap.seed([(audio, 100.0)])
    record = LogEntry("client", "response.create", {"type": "response.create"})
    gap.add('{"type":"response.create"}', None, record)
    out = gap.drain(3)
    assert out == [
        {"type": "input_audio_buffer.append", "event_id": "relay_resume3_audio0", "audio": audio},
        HeldFrame('{"type":"response.create"}', record),
    ]


# ---- the restore -----------------------------------------------------------------------------------------------


def two_items() -> list[Any]:
    history = CompactHistory(10_000)
    history.observe_item(user_text("u1", "first"), complete=True)
    history.observe_item(user_text("u2", "second"), complete=True)
    history.observe_item(user_text("u3", "third"), complete=True)
    return history.restorable()


def test_the_restore_sends_the_config_then_the_items_with_their_ids_and_ends_when_all_are_answered() -> None:
    restore = Restore("1_1", {"type": "realtime", "instructions": "x"}, two_items())
    frames = restore.first_frames
    assert frames[0] == {"type": "session.update", "event_id": "relay_resume1_1_session", "session": {"type": "realtime", "instructions": "x"}}
    assert [f["item"]["id"] for f in frames[1:]] == ["u1", "u2", "u3"]
    assert all(f["event_id"].startswith("relay_") for f in frames)
    assert restore.answer({"type": "session.created"}) == []
    assert restore.answer(None) == []
    assert restore.answer({"type": "session.updated"}) == []
    assert not restore.done
    restore.answer({"type": "conversation.item.added", "item": {"id": "u1"}})
    retry = restore.answer({"type": "error", "error": {"event_id": "relay_resume1_1_item1", "code": "duplicate"}})
    assert retry == [
        {
            "type": "conversation.item.create",
            "event_id": "relay_resume1_1_item1_noid",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"}]},
            "previous_item_id": "u1",
        }
    ]
    restore.answer({"type": "conversation.item.done", "item": {"id": "u1"}})
    restore.answer({"type": "conversation.item.added", "item": {"id": "u3"}})
    assert not restore.done
    assert restore.answer({"type": "error", "error": {"event_id": "relay_resume1_1_item1_noid"}}) == []
    assert restore.done and restore.restored == 2 and restore.refused == 1


def test_an_item_retried_without_its_id_and_no_earlier_item_kept_goes_back_to_the_start() -> None:
    restore = Restore("1_1", {"type": "realtime"}, two_items())
    restore.answer({"type": "session.updated"})
    retry = restore.answer({"type": "error", "error": {"event_id": "relay_resume1_1_item0", "code": "duplicate"}})
    assert retry[0]["previous_item_id"] == "root"  # u2 and u3 were sent before the retry: it must not follow them


def test_late_answers_to_a_finished_restore_never_reach_the_client() -> None:
    core = RelaySession(SessionPolicy(resume=ResumePolicy()))
    core.upstream_connected(1.0)
    core.receive_server_text(json.dumps({"type": "session.created", "session": {}}))
    core.receive_server_text(json.dumps({"type": "conversation.item.done", "item": user_text("u1", "hi")}))
    core.to_client()
    core.upstream_dropped(1006, "lost")
    core.begin_restore(1, 1.0)
    core.receive_server_text(json.dumps({"type": "session.updated", "session": {}}))
    core.receive_server_text(json.dumps({"type": "conversation.item.added", "item": user_text("u1", "hi")}))
    core.finish_restore(1, 10.0)
    core.to_client()
    core.to_log()
    late = [
        {"type": "session.updated", "session": {}},  # Yandex's second answer to the restore's configuration
        {"type": "conversation.item.done", "item": user_text("u1", "hi")},
    ]
    for event in late:
        core.receive_server_text(json.dumps(event))
    assert core.to_client() == []
    assert [(e.dir, e.type) for e in core.to_log()] == [("relay", "session.updated"), ("relay", "conversation.item.done")]
    # From here on the upstream's events are the client's again, a session.updated answering its update included.
    core.receive_client_text(json.dumps({"type": "session.update", "session": {"instructions": "x"}}))
    after = [json.dumps({"type": "session.updated", "session": {}}), json.dumps({"type": "conversation.item.done", "item": user_text("u1", "hi")})]
    for text in after:
        core.receive_server_text(text)
    assert core.to_client() == after


@settings(deadline=None)  # a busy shared machine: examples are checked, not timed
@given(st.lists(_garbage, max_size=40))
def test_garbage_from_the_new_upstream_never_breaks_the_restore(events: list[Any]) -> None:
    restore = Restore("1_1", {"type": "realtime"}, two_items())
    for event in events:
        if isinstance(event, dict):
            for frame in restore.answer(event):
                json.dumps(frame)
    assert restore.restored + restore.refused <= 3


def test_the_state_ends_a_response_in_flight_with_a_failed_response_done() -> None:
    state = ResumeState(ResumePolicy(buffer_seconds=1.0))
    state.on_server("response.created", {"response": {"id": "resp_1"}})
    item = {"id": "item_a", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    state.on_server("response.output_item.added", {"response_id": "resp_1", "item": item})
    number, ended, gap = state.dropped([], [("AAAA", 700.0), ("AAAA", 700.0)])
    assert number == 1
    assert ended is not None and ended["type"] == "response.done"
    assert ended["response"]["id"] == "resp_1" and ended["response"]["status"] == "failed"
    assert ended["response"]["status_details"]["error"]["code"] == "upstream_interrupted"
    assert [(o["id"], o["status"]) for o in ended["response"]["output"]] == [("item_a", "incomplete")]
    validate_server_event(ended, "openai")  # what SDK clients parse
    assert gap.audio_ms == 700.0  # one second at most: the older append makes room
    assert state.dropped([], [])[1] is None  # nothing in flight any more


def test_without_retrieves_the_core_keeps_only_the_audio_a_resume_can_resend() -> None:
    core = RelaySession(SessionPolicy(retrieve_after_done=False, resume=ResumePolicy()))
    core.receive_server_text(json.dumps({"type": "session.created", "session": {}}))  # server VAD, 300 ms padding
    core.receive_server_text(json.dumps({"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0}))
    core.receive_server_text(json.dumps({"type": "input_audio_buffer.committed", "item_id": "u1"}))
    for _ in range(600):  # a minute of audio after an item that will never be saved
        core.receive_client_text(append(100))
    kept = core.uncommitted_audio(60_000)
    assert sum(ms for _, ms in kept) <= 300 + 2000 + 100  # the VAD's reach back, not the whole minute


def test_an_accepted_session_update_nested_to_the_protocol_limit_joins_the_effective_configuration() -> None:
    """Frames may nest up to 512 levels; remembering one for a resume must not hit Python's recursion limit."""
    nested: Any = "deep"
    for _ in range(500):
        nested = {"x": nested}
    core = RelaySession(SessionPolicy(resume=ResumePolicy()))
    core.receive_server_text(json.dumps({"type": "session.created", "session": {"id": "s1"}}))
    core.receive_client_text(json.dumps({"type": "session.update", "event_id": "c1", "session": {"metadata": nested}}))
    core.receive_server_text(json.dumps({"type": "session.updated", "session": {"metadata": nested}}))
    assert [json.loads(t)["type"] for t in core.to_client()] == ["session.created", "session.updated"]
    assert [json.loads(t)["type"] for t in core.to_upstream()] == ["session.update"]


def test_an_update_sent_again_after_a_resume_waits_in_line_for_its_answer_with_its_format() -> None:
    # Asked 16 kHz, the upstream dropped before answering: the restore states what was accepted (24 kHz); the
    # update goes out again after it, and the appends after that are read at 16 kHz until it is answered.
    core = RelaySession(SessionPolicy(resume=ResumePolicy()))
    core.upstream_connected(1.0)
    core.receive_server_text(json.dumps({"type": "session.created", "session": {"audio": {"input": {"turn_detection": None}}}}))
    pcm16k = {"type": "audio/pcm", "rate": 16000}
    core.receive_client_text(json.dumps({"type": "session.update", "event_id": "c_16k", "session": {"audio": {"input": {"format": pcm16k}}}}))
    core.upstream_dropped(1006, "lost")
    core.begin_restore(1, 1.0)
    stated_24k = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}
    core.receive_server_text(json.dumps({"type": "session.updated", "session": stated_24k}))  # the restore's answer
    core.finish_restore(1, 10.0)
    assert [json.loads(t).get("event_id") for t in core.to_upstream()][-1] == "c_16k"  # sent again
    assert core.input_format.rate == 16000
    core.receive_server_text(json.dumps({"type": "session.updated", "session": {"audio": {"input": {"format": pcm16k}}}}))
    assert core.input_format.rate == 16000 and not core.updates.awaiting_answer

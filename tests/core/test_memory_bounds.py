"""Memory the session core keeps: bounded per item, bounded across sessions, released once an item is saved, and
not growing with a session's number of turns.

The audio that crossed the relay is kept only as a fallback for a retrieve that comes back without audio. It is
bounded per item (`max_item_audio_seconds`) and process-wide (a `KeptAudioBudget` shared by every session's core,
`kept_audio_max_bytes`, oldest released first); a fallback save that finds its audio released logs
`relay.retrieve_failed` with `reason: "audio_released"` instead of writing a WAV with holes.
"""

from __future__ import annotations

import base64
import gc
import json
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.keptaudio import KeptAudio, KeptAudioBudget
from relay.core.policy import SessionPolicy
from relay.core.session import RelaySession
from tests.core.test_session import drain as drain_core

RATE = 24000
BYTES_PER_S = RATE * 2


def j(event: dict[str, Any]) -> str:
    return json.dumps(event)


def audio(n_bytes: int, value: int = 1000) -> str:
    return base64.b64encode(value.to_bytes(2, "little", signed=True) * (n_bytes // 2)).decode()


def assistant_item(item_id: str, audio_b64: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "output_audio", "transcript": "hi"}
    if audio_b64 is not None:
        part["audio"] = audio_b64
    return {"id": item_id, "type": "message", "role": "assistant", "status": "completed", "content": [part]}


def user_item(item_id: str, audio_b64: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "input_audio"}
    if audio_b64 is not None:
        part["audio"] = audio_b64
    return {"id": item_id, "type": "message", "role": "user", "status": "completed", "content": [part]}


def session(budget: KeptAudioBudget | None = None, **policy: Any) -> RelaySession:
    core = RelaySession(SessionPolicy(**policy), budget)
    core.upstream_connected(1.0)
    core.receive_server_text(j({"type": "session.created", "event_id": "e0", "session": {"id": "s"}}))
    drain(core)
    return core


def drain(core: RelaySession) -> dict[str, list[Any]]:
    return {**drain_core(core), "disarm": core.to_disarm()}


def stream(core: RelaySession, item_id: str, seconds: float, chunk_bytes: int = 4800) -> None:
    core.receive_server_text(
        j({"type": "response.output_item.added", "event_id": "a", "response_id": "r", "item": assistant_item(item_id)})
    )
    for _ in range(int(seconds * BYTES_PER_S) // chunk_bytes):
        core.receive_server_text(
            j({"type": "response.output_audio.delta", "event_id": "d", "response_id": "r", "item_id": item_id, "delta": audio(chunk_bytes)})
        )


def done(core: RelaySession, item: dict[str, Any]) -> None:
    core.receive_server_text(j({"type": "conversation.item.done", "event_id": "x", "item": item}))


def retrieved(core: RelaySession, item: dict[str, Any]) -> None:
    core.receive_server_text(j({"type": "conversation.item.retrieved", "event_id": "r", "item": item}))


def test_assistant_audio_kept_for_one_item_stops_at_max_item_audio_seconds() -> None:
    budget = KeptAudioBudget()
    core = session(budget, max_item_audio_seconds=2.0)
    stream(core, "item_a", seconds=10)  # an upstream that never completes the item
    assert budget.kept_bytes <= 2 * BYTES_PER_S
    done(core, assistant_item("item_a"))
    retrieved(core, assistant_item("item_a"))  # no audio in the answer: the fallback is the kept stream
    (save,) = drain(core)["save"]
    assert (save.source, len(save.pcm)) == ("stream", 2 * BYTES_PER_S)


def test_appended_audio_kept_stops_at_max_item_audio_seconds() -> None:
    budget = KeptAudioBudget()
    core = session(budget, max_item_audio_seconds=3.0)
    core.receive_server_text(j({"type": "session.updated", "event_id": "u", "session": {"audio": {"input": {"turn_detection": None}}}}))
    for _ in range(300):  # 30 s of manual-turn audio that is never committed
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": audio(4800)}))
    assert budget.kept_bytes <= 3 * BYTES_PER_S + 4800


def test_the_process_wide_budget_releases_the_oldest_audio_of_any_session_first() -> None:
    budget = KeptAudioBudget(max_bytes=3 * BYTES_PER_S)
    first, second = session(budget), session(budget)
    stream(first, "old", seconds=2)
    stream(second, "new", seconds=2)
    assert budget.kept_bytes <= budget.max_bytes
    assert budget.released_bytes >= BYTES_PER_S
    # The newer session's item is whole: its fallback save has all of its audio.
    done(second, assistant_item("new"))
    retrieved(second, assistant_item("new"))
    (save,) = drain(second)["save"]
    assert len(save.pcm) == 2 * BYTES_PER_S
    # The older one lost part of its audio: no WAV with holes, a failed retrieve that says why.
    done(first, assistant_item("old"))
    retrieved(first, assistant_item("old"))
    out = drain(first)
    assert out["save"] == []
    failures = [e.event for e in out["log"] if e.type == "relay.retrieve_failed"]
    assert failures == [{"item_id": "old", "reason": "audio_released"}]


def test_pieces_the_budget_took_leave_no_empty_shells_behind_in_a_session() -> None:
    """An item that never completes keeps streaming while the budget gives its oldest pieces to newer audio: the
    session drops the emptied pieces as it goes (it only remembers that audio was lost), so what it holds
    stays within its share of the budget, not one record per chunk ever received."""
    budget = KeptAudioBudget(max_bytes=BYTES_PER_S)
    core = session(budget, max_item_audio_seconds=120.0)
    core.receive_server_text(j({"type": "session.updated", "event_id": "u", "session": {"audio": {"input": {"turn_detection": None}}}}))
    stream(core, "item_a", seconds=20, chunk_bytes=960)
    for _ in range(1000):  # 20 s of 20 ms appends, never committed
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": audio(960)}))
    item = core._items["item_a"]
    assert len(item.output_audio) <= BYTES_PER_S // 960 + 1 and item.output_audio_lost
    assert len(core._input_chunks) <= BYTES_PER_S // 960 + 1
    done(core, assistant_item("item_a"))
    retrieved(core, assistant_item("item_a"))
    out = drain(core)
    assert out["save"] == []
    assert [e.event for e in out["log"] if e.type == "relay.retrieve_failed"] == [{"item_id": "item_a", "reason": "audio_released"}]


def test_a_released_user_item_logs_audio_released_when_its_retrieve_times_out() -> None:
    budget = KeptAudioBudget(max_bytes=BYTES_PER_S)
    core = session(budget)
    core.receive_server_text(j({"type": "session.updated", "event_id": "u", "session": {"audio": {"input": {"turn_detection": None}}}}))
    for _ in range(30):  # 3 s appended; the budget holds 1 s
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": audio(4800)}))
    core.receive_server_text(j({"type": "input_audio_buffer.committed", "event_id": "c", "item_id": "u1"}))
    done(core, user_item("u1"))
    assert drain(core)["arm"] == ["u1"]
    core.retrieve_timed_out("u1")
    reasons = [e.event["reason"] for e in drain(core)["log"] if e.type == "relay.retrieve_failed"]
    assert reasons == ["timeout", "audio_released"]


def test_nothing_of_an_item_stays_kept_once_it_is_saved() -> None:
    budget = KeptAudioBudget()
    core = session(budget)
    stream(core, "item_a", seconds=1)
    assert budget.kept_bytes == BYTES_PER_S
    done(core, assistant_item("item_a"))
    retrieved(core, assistant_item("item_a", audio(BYTES_PER_S)))
    assert drain(core)["save"][0].source == "retrieved"
    assert budget.kept_bytes == 0 and len(budget) == 0


def test_an_answered_retrieve_disarms_its_timer() -> None:
    core = session()
    stream(core, "item_a", seconds=0.1)
    done(core, assistant_item("item_a"))
    assert drain(core)["arm"] == ["item_a"]
    retrieved(core, assistant_item("item_a", audio(4800)))
    assert drain(core)["disarm"] == ["item_a"]


def test_a_late_done_for_a_forgotten_item_does_not_retrieve_it_again() -> None:
    core = session()
    stream(core, "item_a", seconds=0.1)
    core.receive_server_text(j({"type": "response.output_item.done", "event_id": "y", "response_id": "r", "item": assistant_item("item_a")}))
    retrieved(core, assistant_item("item_a", audio(4800)))
    drain(core)
    done(core, assistant_item("item_a"))  # the server's late item.done, after the save
    assert drain(core)["upstream"] == []


def test_a_truncate_after_the_item_was_saved_is_still_clamped() -> None:
    core = session()
    stream(core, "item_a", seconds=0.2)  # 200 ms forwarded
    done(core, assistant_item("item_a"))
    retrieved(core, assistant_item("item_a", audio(4800)))
    drain(core)
    core.receive_client_text(j({"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 5000}))
    (sent,) = [json.loads(t) for t in drain(core)["upstream"]]
    assert sent["audio_end_ms"] == 200


def voice_turn(core: RelaySession, n: int) -> None:
    """What one server-VAD voice turn brings: appends, the user item, an assistant audio reply, both retrieved."""
    user, assistant = f"u_{n}", f"a_{n}"
    for _ in range(10):
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": audio(960)}))
    start = n * 100.0
    core.receive_server_text(j({"type": "input_audio_buffer.speech_started", "event_id": "s", "item_id": user, "audio_start_ms": start}))
    core.receive_server_text(j({"type": "input_audio_buffer.speech_stopped", "event_id": "p", "item_id": user, "audio_end_ms": start + 80}))
    core.receive_server_text(j({"type": "input_audio_buffer.committed", "event_id": "c", "item_id": user}))
    core.receive_server_text(j({"type": "conversation.item.added", "event_id": "i", "item": user_item(user)}))
    done(core, user_item(user))
    stream(core, assistant, seconds=0.2)
    core.receive_server_text(j({"type": "response.output_item.done", "event_id": "o", "response_id": "r", "item": assistant_item(assistant)}))
    done(core, assistant_item(assistant))
    core.receive_client_text(j({"type": "conversation.item.truncate", "item_id": assistant, "content_index": 0, "audio_end_ms": 100}))
    retrieved(core, user_item(user, audio(960)))
    retrieved(core, assistant_item(assistant, audio(960)))
    core.receive_server_text(j({"type": "response.done", "event_id": "d", "response": {"id": "r", "status": "completed"}}))
    drain(core)


def test_the_cores_memory_does_not_grow_with_the_number_of_turns() -> None:
    budget = KeptAudioBudget()
    tracemalloc.start()  # before the warm-up: only what is allocated while tracing is seen
    try:
        core = session(budget)
        for n in range(300):  # past every per-session bound, so what is kept has reached its steady state
            voice_turn(core, n)
        gc.collect()
        before = tracemalloc.take_snapshot()
        for n in range(300, 1300):
            voice_turn(core, n)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # ~3 KiB a turn, 3 MiB over these 1000 turns, when every item's bookkeeping stayed until the session ended.
    assert growth < 64 * 1024, f"the core grew by {growth} bytes over 1000 turns"
    assert budget.kept_bytes < 5 * BYTES_PER_S


@settings(max_examples=200, deadline=None)
@given(
    max_bytes=st.integers(0, 5000),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 2000), st.integers(0, 1000)), max_size=200),
)
def test_the_budget_accounts_exactly_and_releases_the_oldest_first(max_bytes: int, steps: list[tuple[bool, int, int]]) -> None:
    budget = KeptAudioBudget(max_bytes)
    created: list[KeptAudio] = []  # every piece, oldest first
    owned: list[KeptAudio] = []  # pieces their owner has not freed yet
    for keep, size, pick in steps:
        if keep or not owned:
            piece = budget.keep("x", size)
            created.append(piece)
            owned.append(piece)
        else:
            budget.free(owned.pop(pick % len(owned)))
        live = [p for p in owned if p.live]
        assert budget.kept_bytes == sum(p.nbytes for p in live) <= max_bytes
        assert len(budget) == len(live)
        # Oldest first: every piece the budget took away is older than every piece still holding audio.
        newest_released = max((i for i, p in enumerate(created) if p.released), default=-1)
        assert all(created.index(p) > newest_released for p in live)
    for piece in owned:
        budget.free(piece)
    assert budget.kept_bytes == 0 and len(budget) == 0

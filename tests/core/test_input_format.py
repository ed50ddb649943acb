"""The input format the core reads appends in: a client's session.update takes effect for the appends that follow
it (the upstream applies events in order), its session.updated confirms it, and an error answering it puts the
previous format back (docs/event-log.md, "audio_ms")."""

from __future__ import annotations

from typing import Any

from relay.core.session import RelaySession
from tests.core.test_session import b64, drain, j, new_session, pcm


def update(rate: int, event_id: str | None = "evt_u1", fmt: str = "audio/pcm") -> str:
    event: dict[str, Any] = {"type": "session.update", "session": {"audio": {"input": {"format": {"type": fmt, "rate": rate}}}}}
    if event_id is not None:
        event["event_id"] = event_id
    return j(event)


def updated(rate: int) -> str:
    return j(
        {
            "type": "session.updated",
            "event_id": "s",
            "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": rate}}}},
        }
    )


def append_rate(core: RelaySession) -> int:
    """The rate the core reads one 20 ms append at 16 kHz in, from its log entry."""
    core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": b64(pcm(320))}))
    (entry,) = [e for e in drain(core)["log"] if e.type == "input_audio_buffer.append"]
    return int(entry.audio_format.rate)


def test_appends_right_after_a_client_session_update_are_read_in_the_format_it_asks_for() -> None:
    core = new_session()
    assert append_rate(core) == 24000
    core.receive_client_text(update(16000))
    assert append_rate(core) == 16000  # before any answer: the upstream reads this append at 16 kHz already
    core.receive_server_text(updated(16000))
    assert append_rate(core) == 16000


def test_an_error_answering_the_update_puts_the_previous_format_back() -> None:
    core = new_session()
    core.receive_client_text(update(16000, "evt_bad"))
    assert append_rate(core) == 16000
    core.receive_server_text(
        j({"type": "error", "event_id": "x", "error": {"type": "invalid_request_error", "event_id": "evt_bad"}})
    )
    assert append_rate(core) == 24000
    other = {"type": "error", "event_id": "y", "error": {"type": "invalid_request_error", "event_id": "evt_other"}}
    core.receive_client_text(update(16000, "evt_good"))
    core.receive_server_text(j(other))  # an error about something else changes nothing
    assert append_rate(core) == 16000


def test_a_later_update_still_wins_when_an_earlier_one_is_answered() -> None:
    core = new_session()
    core.receive_client_text(update(16000, "evt_a"))
    core.receive_client_text(j({"type": "session.update", "event_id": "evt_b", "session": {"instructions": "hi"}}))
    core.receive_client_text(update(8000, "evt_c"))
    core.receive_server_text(updated(16000))  # answers evt_a
    core.receive_server_text(j({"type": "session.updated", "event_id": "s2", "session": {"instructions": "hi"}}))
    assert append_rate(core) == 8000  # evt_c is still on its way
    core.receive_server_text(updated(8000))
    assert append_rate(core) == 8000


def test_an_upstream_that_states_another_format_than_asked_is_believed_once_nothing_is_pending() -> None:
    core = new_session()
    core.receive_client_text(update(16000))
    core.receive_server_text(updated(24000))  # it kept 24 kHz (a server that ignores the rate)
    assert append_rate(core) == 24000


def test_an_upstream_that_never_answers_keeps_a_bounded_list_of_updates() -> None:
    core = new_session()
    for n in range(1000):
        core.receive_client_text(update(16000 if n % 2 else 8000, f"evt_{n}"))
    drain(core)
    assert append_rate(core) == 16000
    assert len(core.updates) <= 64


def test_a_repeated_session_updated_does_not_answer_the_next_update() -> None:
    # Yandex has been seen answering one session.update with two identical session.updated.
    core = new_session()
    core.receive_client_text(update(16000, "evt_a"))
    core.receive_client_text(update(8000, "evt_b"))
    core.receive_server_text(updated(16000))  # answers evt_a
    core.receive_server_text(updated(16000))  # the same answer again: evt_b is still on its way
    assert append_rate(core) == 8000
    core.receive_server_text(updated(8000))  # evt_b's answer
    assert append_rate(core) == 8000
    assert not core.updates.awaiting_answer


def test_the_answer_to_the_pinned_session_update_is_not_taken_for_the_clients() -> None:
    # The relay's pinned session.update goes first at connect; its session.updated answers it, not the client's.
    core = new_session(pinned_session={"instructions": "be brief"})
    core.receive_client_text(update(16000, "evt_client"))
    assert append_rate(core) == 16000
    core.receive_server_text(updated(24000))  # answers the pinned update: the client's is still on its way
    assert append_rate(core) == 16000
    core.receive_server_text(updated(16000))
    assert append_rate(core) == 16000

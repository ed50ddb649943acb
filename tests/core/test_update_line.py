"""The line of session.updates waiting for their answers (relay.core.update_line): answered in order, a repeated
answer answers nothing, an error naming one refuses it, a drop keeps the client's for sending again, and the
accepted ones merge into the configuration a resume restores."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from relay.core.formats import AudioFormat
from relay.core.update_line import MAX_WAITING, UpdateLine, WaitingUpdate

PCM16K = AudioFormat("audio/pcm", 16000)
PCM8K = AudioFormat("audio/pcm", 8000)


def client(event_id: str | None, session: dict[str, Any], text: str, fmt: AudioFormat | None = None) -> WaitingUpdate:
    return WaitingUpdate(event_id, session, fmt, text)


def test_only_updates_the_upstream_accepted_are_merged_in_order() -> None:
    line = UpdateLine()
    line.sent(client("a", {"instructions": "one", "audio": {"output": {"voice": "alena"}}}, "a"))
    line.sent(client("b", {"audio": {"output": {"voice": "kirill"}, "input": {"turn_detection": None}}}, "b"))
    line.sent(client("c", {"instructions": "refused"}, "c"))
    line.sent(client(None, {}, "d"))  # a non-object session still takes its place: the upstream answers it too
    line.answered({"n": 1})  # a
    assert line.refused("c")
    line.answered({"n": 2})  # b
    line.answered({"n": 3})  # the non-object one: nothing to merge
    line.answered({"n": 4})  # one more session.updated: nothing left waiting
    assert line.effective_session() == {
        "type": "realtime",
        "instructions": "one",
        "audio": {"output": {"voice": "kirill"}, "input": {"turn_detection": None}},
    }


def test_a_repeated_session_updated_leaves_the_next_update_waiting() -> None:
    # Yandex has been seen answering one session.update with two identical session.updated.
    line = UpdateLine()
    line.sent(client("a", {"instructions": "one"}, "A"))
    line.sent(client("b", {"instructions": "two"}, "B"))
    line.answered({"instructions": "one"})
    line.answered({"instructions": "one"})  # a's answer again
    assert line.effective_session() == {"type": "realtime", "instructions": "one"}
    assert line.upstream_lost() == ["B"]  # still unanswered: sent again after a restore
    line.answered({"instructions": "two"})
    assert line.effective_session() == {"type": "realtime", "instructions": "two"}


def test_updates_unanswered_at_the_drop_are_sent_again_and_accepted_once_answered() -> None:
    line = UpdateLine()
    line.sent(client("a", {"voice": "x"}, "A"))
    line.answered({"voice": "x"})
    line.sent(client("b", {"instructions": "client"}, "B"))
    assert line.upstream_lost() == ["B"]  # to be sent again after the restore
    assert line.effective_session() == {"type": "realtime", "voice": "x"}  # not accepted yet: not part of the restore
    line.answered({"voice": "x"})  # the new upstream answers the update sent again (its first answer)
    pinned = line.effective_session(lambda s: {**s, "instructions": "pinned"})
    assert pinned == {"type": "realtime", "instructions": "pinned", "voice": "x"}


def test_the_relays_own_update_takes_its_answer_but_is_neither_merged_nor_sent_again() -> None:
    line = UpdateLine()
    line.sent(WaitingUpdate("relay_pinned", {"instructions": "pinned"}, PCM16K, None))
    line.sent(client("c", {"instructions": "client"}, "C"))
    assert line.asked_input_format() == PCM16K
    assert line.upstream_lost() == ["C"]
    line.answered({"instructions": "client"})
    assert line.effective_session() == {"type": "realtime", "instructions": "client"}
    assert not line.awaiting_answer


def test_the_newest_format_asked_is_in_effect_until_its_update_is_refused() -> None:
    line = UpdateLine()
    line.sent(client("a", {}, "A", PCM16K))
    line.sent(client("b", {}, "B"))  # names no format
    line.sent(client("c", {}, "C", PCM8K))
    assert line.asked_input_format() == PCM8K
    assert line.refused("c")
    assert line.asked_input_format() == PCM16K
    assert not line.refused("c") and not line.refused(None) and not line.refused(7)


@given(st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))))
def test_any_answers_and_refusals_keep_the_line_bounded_and_in_order(answers: list[Any]) -> None:
    line = UpdateLine()
    for n in range(MAX_WAITING + 10):
        line.sent(client(f"e{n}", {"n": n}, f"T{n}"))
    assert len(line) == MAX_WAITING  # the oldest were forgotten
    for answer in answers:
        if isinstance(answer, str):
            line.refused(answer)
        else:
            line.answered(answer)
    left = line.upstream_lost()
    assert left == sorted(left, key=lambda t: int(t[1:]))  # what is left keeps its order
    assert len(left) == len(line) <= MAX_WAITING

"""The retrieve ledger alone: answers go to whoever asked first, a relay that gave up stays in line as late, and an
item whose line empties is reported settled (docs/retrieve-after-done.md, "Matching answers")."""

from __future__ import annotations

from relay.core.retrieves import MAX_CLIENT_RETRIEVES, Asker, RetrieveLedger


def test_answers_go_in_request_order_and_an_emptied_line_settles() -> None:
    settled: list[str] = []
    ledger = RetrieveLedger(on_settled=settled.append)
    ledger.client_asked("a", "c1")
    ledger.relay_asked("a")
    assert ledger.first("a") is Asker.CLIENT and ledger.in_flight("a")
    ledger.client_answered("a")
    assert ledger.client_event_ids == {} and ledger.first("a") is Asker.RELAY and settled == []
    assert ledger.answered("a") is Asker.RELAY
    assert "a" not in ledger and settled == ["a"]


def test_a_relay_that_gave_up_still_owns_the_late_answer() -> None:
    ledger = RetrieveLedger(on_settled=lambda item_id: None)
    ledger.relay_asked("a")
    assert ledger.awaited_by_relay() == ["a"]
    assert ledger.gave_up("a") and not ledger.gave_up("a")
    assert ledger.awaited_by_relay() == [] and ledger.relay_asked_for("a") and not ledger.in_flight("a")
    assert ledger.relay_refused("a") is Asker.RELAY_LATE and "a" not in ledger


def test_a_client_error_retires_its_place_and_client_ids_are_bounded() -> None:
    ledger = RetrieveLedger(on_settled=lambda item_id: None)
    ledger.client_asked("a", "c1")
    ledger.client_refused("c1")
    assert "a" not in ledger and ledger.client_event_ids == {}
    for n in range(MAX_CLIENT_RETRIEVES + 10):
        ledger.client_asked(f"i{n}", f"c{n}")
    assert len(ledger.client_event_ids) == MAX_CLIENT_RETRIEVES and "c0" not in ledger.client_event_ids
    ledger.trim(5)
    assert len(ledger) == 5 and ledger.first(0) is None


def test_a_client_asking_after_the_relay_gave_up_gets_the_next_answer() -> None:
    """An upstream that never answered the relay's retrieve must not swallow the client's answer in its place:
    the next answer holds the item the client asks for, so it is the client's."""
    ledger = RetrieveLedger(on_settled=lambda item_id: None)
    ledger.relay_asked("a")
    ledger.gave_up("a")
    ledger.client_asked("a", "c1")
    assert ledger.first("a") is Asker.CLIENT and not ledger.relay_asked_for("a")


def test_a_lost_connection_empties_every_line_and_names_the_relay_retrieves_still_in_time() -> None:
    settled: list[str] = []
    ledger = RetrieveLedger(on_settled=settled.append)
    ledger.relay_asked("a")
    ledger.relay_asked("b")
    ledger.gave_up("b")
    ledger.client_asked("c", "c1")
    ledger.relay_asked("d")
    assert ledger.connection_lost() == ["a", "d"]
    assert len(ledger) == 0 and ledger.client_event_ids == {} and sorted(settled) == ["a", "b", "c", "d"]
    ledger.client_asked("a", "c2")  # asked on the new connection: first in line
    assert ledger.first("a") is Asker.CLIENT

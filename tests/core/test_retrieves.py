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

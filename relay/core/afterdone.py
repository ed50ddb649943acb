"""Retrieve-after-done as one session does it (docs/retrieve-after-done.md): one `conversation.item.retrieve` per
audio item on the first sign the item is complete, its answer matched through the `RetrieveLedger` and
swallowed (logged as the relay's), the item's audio saved from the answer, or from the stream when the answer is
an error, comes too late (the timer fired) or never comes (the session closed). A client's own retrieves are
forwarded, and their answers save the item's audio too.
"""

from __future__ import annotations

from typing import Any

from relay.core import events as ev
from relay.core.frames import answered_event_id
from relay.core.items import Item, ItemBook, safe_item_id
from relay.core.outbox import LogEntry
from relay.core.retrieves import RELAY_ASKERS, Asker


class RetrieveAfterDone(ItemBook):
    """The retrieve half of a session's item bookkeeping (a base of RelaySession)."""

    def _after_forward(self, event: dict[str, Any], kind: object) -> None:
        """Retrieve-after-done triggers: item done, or the other signs of completion seen live."""
        item: Item | None = None
        if kind in (ev.CONVERSATION_ITEM_DONE, ev.RESPONSE_OUTPUT_ITEM_DONE):
            item = self._observe_item(event.get("item"))
            if item is not None and (not item.has_audio or not self.policy.retrieve_after_done):
                self._finish(item)  # nothing to retrieve or save: only its truncate bookkeeping stays
                return
        elif kind == ev.INPUT_AUDIO_TRANSCRIPTION_COMPLETED and self.policy.retrieve_after_done:
            item_id = event.get("item_id")
            if isinstance(item_id, str):
                item = self._item(item_id, "user")
                item.has_audio = True
        if item is not None and item.has_audio and not item.retrieve_sent:
            item.retrieve_sent = True
            if not safe_item_id(item.item_id):
                self._finish(item)
                self.log_relay(ev.RELAY_AUDIO_NOT_SAVED, {"item_id": item.item_id, "reason": "unsafe_item_id"})
                return
            self.retrieves.relay_asked(item.item_id)
            self._send_relay_frame(
                {
                    "type": ev.CONVERSATION_ITEM_RETRIEVE,
                    "item_id": item.item_id,
                    "event_id": ev.RELAY_RETRIEVE_EVENT_ID_PREFIX + item.item_id,
                }
            )
            self._arm.append(item.item_id)

    def _retire_client_retrieve(self, event: dict[str, Any], kind: object) -> None:
        """An answer to a client's retrieve leaves the line; a retrieved item's audio is saved too."""
        if kind == ev.ERROR:
            event_id = answered_event_id(event)
            if event_id is not None:
                self.retrieves.client_refused(event_id)
            return
        raw = event.get("item")
        item_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(item_id, str) or self.retrieves.first(item_id) is not Asker.CLIENT:
            return
        self.retrieves.client_answered(item_id)
        item = self._items.get(item_id)
        if self.policy.retrieve_after_done and item is not None and item.has_audio and isinstance(raw, dict):
            self._save_retrieved(item, raw, fallback=False)

    # ---- answers to the relay's retrieves -------------------------------------------------------------
    def _is_relay_answer(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind == ev.CONVERSATION_ITEM_RETRIEVED:
            item = event.get("item")
            return self.retrieves.first(item.get("id") if isinstance(item, dict) else None) in RELAY_ASKERS
        if kind == ev.ERROR:
            event_id = answered_event_id(event)
            if event_id is None or not event_id.startswith(ev.RELAY_RETRIEVE_EVENT_ID_PREFIX):
                return False
            # Only when the relay really asked: a client may use the same prefix for its own event ids.
            return self.retrieves.relay_asked_for(event_id[len(ev.RELAY_RETRIEVE_EVENT_ID_PREFIX) :])
        return False

    def _handle_relay_answer(self, event: dict[str, Any], size: int) -> None:
        kind = event["type"]
        if kind == ev.CONVERSATION_ITEM_RETRIEVED:
            item_raw = event["item"]
            item_id: str = item_raw["id"]
            asker = self.retrieves.answered(item_id)
            if asker is Asker.RELAY:
                self._disarm.append(item_id)
            item = self._observe_item(item_raw)
            self.log(LogEntry("relay", kind, event, bytes=size, audio_format=item.format if item else None))
            if asker is Asker.RELAY and item is not None:
                self._save_retrieved(item, item_raw)
            return
        item_id = event["error"]["event_id"][len(ev.RELAY_RETRIEVE_EVENT_ID_PREFIX) :]
        asker = self.retrieves.relay_refused(item_id)
        self.log(LogEntry("relay", kind, event, bytes=size))
        if asker is Asker.RELAY:
            self._disarm.append(item_id)
            self._relay_retrieve_failed(item_id, {"reason": "error", "error": event.get("error")})

    def _relay_retrieve_failed(self, item_id: str, why: dict[str, Any]) -> None:
        """The relay's retrieve of `item_id` will not be answered in time (`why`: the record's reason, and the
        upstream's error): `relay.retrieve_failed`, and the item is saved from what crossed the relay."""
        self.log_relay(ev.RELAY_RETRIEVE_FAILED, {"item_id": item_id, **why})
        item = self._items.get(item_id)
        if item is not None:
            self._save_from_stream(item)

    def retrieve_timed_out(self, item_id: str) -> None:
        """The bridge's timer for this item's retrieve fired; a no-op when the answer already came."""
        if not self.retrieves.gave_up(item_id):
            return
        self._disarm.append(item_id)  # the timer that fired is spent
        self._relay_retrieve_failed(item_id, {"reason": "timeout"})

    def _retrieves_lost_with_connection(self) -> None:
        """The upstream dropped: the relay's retrieves sent on it will never be answered, so each still in time
        fails now as a timeout (saved from the stream), and nobody's place in line outlives the connection. The
        record says why it came early, so an operator does not look for a slow upstream."""
        for item_id in self.retrieves.connection_lost():
            self._disarm.append(item_id)
            self._relay_retrieve_failed(item_id, {"reason": "timeout", "error": "the upstream dropped before answering"})

    @property
    def pending_retrieves(self) -> list[str]:
        return self.retrieves.awaited_by_relay()

    def _give_up_pending_retrieves(self) -> None:
        """The session closed: retrieves still unanswered are saved from the stream and logged as failed."""
        for item_id in self.pending_retrieves:
            self.retrieves.gave_up(item_id)
            self._relay_retrieve_failed(item_id, {"reason": "session_closed"})

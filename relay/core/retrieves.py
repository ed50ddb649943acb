"""The retrieve ledger: who asked the upstream for each item's `conversation.item.retrieve`, in request order, so
that each answer goes to whoever asked first (docs/retrieve-after-done.md, "Matching answers").

The upstream answers retrieves of one item in the order they were sent, and an answer names only the item (or,
for an `error`, the event_id of the request). The ledger keeps, per item id, a line of `Asker`s; the relay's own
answers are swallowed, the client's are forwarded. A client's retrieve with an event_id is remembered by that id
too, so an `error` answering it retires its place in line. Pure bookkeeping: no I/O.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Final

# Client retrieves awaiting an answer per session; past this the oldest is forgotten (an upstream that never
# answers must not make the relay remember every request).
MAX_CLIENT_RETRIEVES: Final = 256


class Asker(enum.Enum):
    """Who a retrieve in line is for."""

    RELAY = "relay"  # the relay's retrieve-after-done; its timer is armed
    RELAY_LATE = "relay_late"  # the relay's, after its timer fired (or the session closed): the item was saved
    CLIENT = "client"  # the client's own `conversation.item.retrieve`: its answer is forwarded


RELAY_ASKERS: Final = frozenset({Asker.RELAY, Asker.RELAY_LATE})


class RetrieveLedger:
    """Per item id, the askers of its retrieves in request order. `on_settled(item_id)` is called when an item's
    line empties (nobody waits on it any more)."""

    def __init__(self, on_settled: Callable[[str], None]) -> None:
        self._lines: dict[str, deque[Asker]] = {}
        # A client retrieve's event_id -> its item id, oldest first.
        self.client_event_ids: dict[str, str] = {}
        self._on_settled = on_settled

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._lines

    def __len__(self) -> int:
        return len(self._lines)

    # ---- requests -------------------------------------------------------------------------------------------
    def relay_asked(self, item_id: str) -> None:
        self._lines.setdefault(item_id, deque()).append(Asker.RELAY)

    def client_asked(self, item_id: str, event_id: object) -> None:
        line = self._lines.setdefault(item_id, deque())
        if Asker.RELAY_LATE in line:
            # The relay stopped waiting for those answers, and an upstream that never sends one would otherwise
            # have this client's answer swallowed in their place. Whichever answer comes next holds the item the
            # client asks for, so it goes to the client.
            line = self._lines[item_id] = deque(asker for asker in line if asker is not Asker.RELAY_LATE)
        line.append(Asker.CLIENT)
        if isinstance(event_id, str):
            self.client_event_ids.pop(event_id, None)  # re-inserted last: the oldest stays first
            self.client_event_ids[event_id] = item_id
            if len(self.client_event_ids) > MAX_CLIENT_RETRIEVES:
                del self.client_event_ids[next(iter(self.client_event_ids))]

    # ---- questions ------------------------------------------------------------------------------------------
    def first(self, item_id: object) -> Asker | None:
        """Who the next answer about `item_id` is for (None: nobody asked)."""
        line = self._lines.get(item_id) if isinstance(item_id, str) else None
        return line[0] if line else None

    def relay_asked_for(self, item_id: str) -> bool:
        """The relay has a retrieve of `item_id` in line (answered in time or not)."""
        line = self._lines.get(item_id)
        return line is not None and any(asker in RELAY_ASKERS for asker in line)

    def in_flight(self, item_id: str) -> bool:
        """Someone still waits on an answer about `item_id` (the relay in time, or the client)."""
        line = self._lines.get(item_id, ())
        return Asker.RELAY in line or Asker.CLIENT in line

    def awaited_by_relay(self) -> list[str]:
        """Items whose relay retrieve is unanswered and still in time, in request order."""
        return [item_id for item_id, line in self._lines.items() if Asker.RELAY in line]

    # ---- answers --------------------------------------------------------------------------------------------
    def answered(self, item_id: str) -> Asker:
        """A `conversation.item.retrieved` for `item_id` arrived: the first in line takes it (someone asked)."""
        asker = self._lines[item_id].popleft()
        self._settle_if_empty(item_id)
        return asker

    def relay_refused(self, item_id: str) -> Asker:
        """An `error` answered the relay's retrieve of `item_id`: the relay's place in line, if it is first."""
        line = self._lines.get(item_id)
        asker = line.popleft() if line and line[0] in RELAY_ASKERS else Asker.RELAY_LATE
        self._settle_if_empty(item_id)
        return asker

    def client_answered(self, item_id: str) -> None:
        """A forwarded `conversation.item.retrieved` answered the client's oldest retrieve of `item_id`."""
        self._lines[item_id].popleft()
        self._settle_if_empty(item_id)
        for event_id, asked_for in self.client_event_ids.items():
            if asked_for == item_id:
                del self.client_event_ids[event_id]
                break

    def client_refused(self, event_id: str) -> None:
        """An `error` answered the client's retrieve with this event_id: it leaves the line."""
        item_id = self.client_event_ids.pop(event_id, None)
        line = self._lines.get(item_id) if item_id is not None else None
        if line and Asker.CLIENT in line:
            line.remove(Asker.CLIENT)
            self._settle_if_empty(item_id)

    def gave_up(self, item_id: str) -> bool:
        """The relay stops waiting for its retrieve of `item_id` (timer fired, session closed): the answer, if it
        comes, is still the relay's. False when the relay was not waiting."""
        line = self._lines.get(item_id)
        if not line or Asker.RELAY not in line:
            return False
        line[line.index(Asker.RELAY)] = Asker.RELAY_LATE
        return True

    def connection_lost(self) -> list[str]:
        """The upstream connection every retrieve in line was sent on is gone, so no answer will come: every line
        is dropped. Returns the items whose relay retrieve was still in time, in request order."""
        in_time = self.awaited_by_relay()
        lost = list(self._lines)
        self._lines.clear()
        self.client_event_ids.clear()
        for item_id in lost:
            self._on_settled(item_id)
        return in_time

    # ---- bounds ---------------------------------------------------------------------------------------------
    def forget(self, item_id: str) -> bool:
        """Drop the item's whole line (the item is forgotten); True when there was one."""
        return self._lines.pop(item_id, None) is not None

    def trim(self, limit: int) -> None:
        """Ids asked about that never became items (a client retrieving unknown ids whose errors carry no
        event_id): the oldest go first past `limit`."""
        while len(self._lines) > limit:
            self._lines.pop(next(iter(self._lines)))

    def _settle_if_empty(self, item_id: object) -> None:
        if not isinstance(item_id, str):
            return
        line = self._lines.get(item_id)
        if line is not None and not line:
            del self._lines[item_id]
            self._on_settled(item_id)

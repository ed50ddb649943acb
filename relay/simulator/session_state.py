"""What one simulated session holds, and how it speaks: its state, the outgoing event queue, the item order.

`SessionState` is the base the session's parts build on (`responses`, then `turns` and `conversation`, then
`session`): it owns every field of the session, emits server events (with the fault knobs that bend them:
injected errors, the `conversation.item.created` name, omitted `conversation.item.done`), queues completed
items for the REST conversation, and keeps the conversation's items in order. `LiveResponse` is the response
being streamed. It parses no client input and decides nothing.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from relay.core import events as ev
from relay.simulator.config import AudioFormat, Flavour, default_session, input_format
from relay.simulator.items import AudioArchive, IdMint, StoredItem
from relay.simulator.knobs import Knobs
from relay.simulator.vad import EnergyVad


@dataclass
class LiveResponse:
    id: str
    modalities: list[str]
    metadata: dict[str, str] | None
    in_conversation: bool
    out_fmt: AudioFormat
    voice: Any
    text: str
    audio: bytes | None  # PCM16 at out_fmt.rate
    item: dict[str, Any]
    stored: StoredItem
    text_chunks: list[str]
    input_tokens: int
    cursor: int = 0  # bytes of `audio` sent
    text_cursor: int = 0  # text chunks sent
    sent_text: str = ""
    output: list[dict[str, Any]] = field(default_factory=list)

    @property
    def with_audio(self) -> bool:
        return self.audio is not None


class SessionState:
    """The protocol state of one realtime socket and its outputs; the session's parts act on it."""

    def __init__(
        self,
        flavour: Flavour,
        model: str,
        knobs: Knobs | None = None,
        *,
        archive: AudioArchive | None = None,
        conversation_id: str | None = None,
    ) -> None:
        self.flavour: Flavour = flavour
        self.knobs = knobs or Knobs()
        self.config = default_session(flavour, model)
        self._mint = IdMint()
        self._archive = archive
        self.conversation_id = conversation_id or self._mint("conv")
        self.session_id = self._mint("sess")
        self._out: list[dict[str, Any]] = []
        self._completed: list[dict[str, Any]] = []
        self._emitted = 0
        self._error_injected = False
        self.items: OrderedDict[str, StoredItem] = OrderedDict()
        self._response: LiveResponse | None = None
        self._calls: dict[str, str] = {}  # call_id -> tool name
        # Input audio: the uncommitted buffer, in samples of the current input format since `_epoch_ms`.
        self._fmt = input_format(self.config)
        self._appended_ms = 0.0
        self._epoch_ms = 0.0
        self._epoch_samples = 0
        self._buf = bytearray()
        self._buf_first = 0  # epoch sample index of _buf[0]
        self._vad: EnergyVad | None = None
        self._speech_item: str | None = None
        self._speech_start_ms = 0

    # --- outputs ----------------------------------------------------------------------------------------

    def drain(self) -> list[dict[str, Any]]:
        out, self._out = self._out, []
        return out

    def drain_completed(self) -> list[dict[str, Any]]:
        """Items that became complete since the last call (wire form without audio)."""
        out, self._completed = self._completed, []
        return out

    @property
    def responding(self) -> bool:
        return self._response is not None

    @property
    def response_id(self) -> str | None:
        return None if self._response is None else self._response.id

    def _emit(self, type_: str, **fields: Any) -> None:
        event: dict[str, Any] = {"type": type_, "event_id": self._mint("event")}
        event.update(fields)
        self._out.append(event)
        self._emitted += 1
        if self.knobs.inject_error is not None and not self._error_injected and self._emitted >= self.knobs.inject_error:
            self._error_injected = True
            self._emit(
                ev.ERROR,
                error={
                    "type": "server_error",
                    "code": "injected_error",
                    "message": "Error injected by the simulator's inject_error knob.",
                    "param": None,
                    "event_id": None,
                },
            )

    def _error(
        self,
        code: str,
        message: str,
        param: str | None,
        event_id: str | None,
        kind: str = "invalid_request_error",
    ) -> None:
        self._emit(
            ev.ERROR,
            error={"type": kind, "code": code, "message": message, "param": param, "event_id": event_id},
        )

    def _item_added(self, item: dict[str, Any], previous: str | None) -> None:
        name = ev.CONVERSATION_ITEM_CREATED if self.knobs.item_created_name == "created" else ev.CONVERSATION_ITEM_ADDED
        self._emit(name, previous_item_id=previous, item=copy.deepcopy(item))

    def _item_done(self, item: dict[str, Any], previous: str | None) -> None:
        if not self.knobs.omit_item_done:
            self._emit(ev.CONVERSATION_ITEM_DONE, previous_item_id=previous, item=copy.deepcopy(item))

    def _complete(self, item: dict[str, Any]) -> None:
        self._completed.append(copy.deepcopy(item))

    # --- the conversation's items, in order -------------------------------------------------------------

    def _last_item_id(self) -> str | None:
        return next(reversed(self.items), None) if self.items else None

    def _store(self, stored: StoredItem, after: str | None = None) -> None:
        item_id = stored.item["id"]
        if after is None or after == self._last_item_id():
            self.items[item_id] = stored
        else:
            keys = list(self.items)
            position = 0 if after == "root" else keys.index(after) + 1
            entries = list(self.items.items())
            entries.insert(position, (item_id, stored))
            self.items = OrderedDict(entries)
        if stored.audio is not None and self._archive is not None:
            self._archive.put(stored)

    def _previous_id(self, item_id: str) -> str | None:
        """The id of the item before `item_id` in the conversation (None for the first)."""
        keys = list(self.items)
        index = keys.index(item_id)
        return keys[index - 1] if index > 0 else None

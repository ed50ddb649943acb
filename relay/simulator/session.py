"""One simulated realtime session: the protocol state machine behind one WebSocket (sans-I/O).

`SimSession` takes client frames (`receive_text`, `receive_binary`) and produces server events (`drain`).
It owns the effective session config, the input audio buffer and its VAD, the conversation items with their
audio, and at most one live response. A live response is streamed by `step_response()`, one chunk per call,
each returning the milliseconds of audio it carried so the adapter can pace it; client frames processed
between steps can cancel it (barge-in, `response.cancel`). Items that become complete are also queued for
`drain_completed()` (the adapter adds them to a REST conversation when the socket is tied to one).
No asyncio, no sockets, no clock: the server module does all I/O and timing.

This module parses client frames, dispatches them and applies `session.update`; the rest is in its parts:
`session_state` (fields, event queue, item order), `responses` (response lifecycle and streaming), `turns`
(input audio buffer and VAD turns), `conversation` (item commands), `model` (what a reply says), `items`
(stored items, ids, the audio archive).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

from relay.core import events as ev
from relay.simulator.config import Flavour, SessionConfigError, input_format, turn_detection
from relay.simulator.conversation import ConversationItems
from relay.simulator.items import AudioArchive
from relay.simulator.knobs import Knobs
from relay.simulator.turns import InputTurns
from relay.simulator.validation import apply_session_update

_IMPLEMENTED: Final = frozenset(
    {
        ev.SESSION_UPDATE,
        ev.INPUT_AUDIO_BUFFER_APPEND,
        ev.INPUT_AUDIO_BUFFER_COMMIT,
        ev.INPUT_AUDIO_BUFFER_CLEAR,
        ev.CONVERSATION_ITEM_CREATE,
        ev.CONVERSATION_ITEM_RETRIEVE,
        ev.CONVERSATION_ITEM_TRUNCATE,
        ev.CONVERSATION_ITEM_DELETE,
        ev.RESPONSE_CREATE,
        ev.RESPONSE_CANCEL,
    }
)


class SimSession(InputTurns, ConversationItems):
    """The protocol state of one realtime socket. Feed frames in, drain events out."""

    def __init__(
        self,
        flavour: Flavour,
        model: str,
        knobs: Knobs | None = None,
        *,
        archive: AudioArchive | None = None,
        conversation_id: str | None = None,
    ) -> None:
        super().__init__(flavour, model, knobs, archive=archive, conversation_id=conversation_id)
        self._reset_vad()

    def start(self) -> None:
        self._emit(ev.SESSION_CREATED, session=self._session_object())

    def _session_object(self) -> dict[str, Any]:
        """The session as the real APIs send it in session.created and session.updated: the effective config led
        by `object` and the session's `id` (which the relay logs as `upstream_session_id`)."""
        return {"object": "realtime.session", "id": self.session_id, **copy.deepcopy(self.config)}

    # --- client frames -------------------------------------------------------------------------------

    def receive_binary(self) -> None:
        self._error("invalid_json", "Binary frames are not supported: send JSON text frames.", None, None)

    def receive_text(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError as exc:
            self._error("invalid_json", f"The frame is not valid JSON: {exc}", None, None)
            return
        self.receive_event(event)

    def receive_event(self, event: Any) -> None:
        if not isinstance(event, dict):
            self._error("invalid_json", "A client event must be a JSON object.", None, None)
            return
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        type_ = event.get("type")
        if not isinstance(type_, str):
            self._error("missing_required_parameter", "Missing required parameter: 'type'.", "type", event_id)
            return
        if type_ not in _IMPLEMENTED:
            self._error("invalid_value", f"Invalid value: '{type_}'. Unsupported client event type.", "type", event_id)
            return
        try:
            self._dispatch(type_, event, event_id)
        except SessionConfigError as exc:
            self._error(exc.code, exc.message, exc.param, event_id)

    def _dispatch(self, type_: str, event: dict[str, Any], event_id: str | None) -> None:
        if type_ == ev.SESSION_UPDATE:
            self._session_update(event)
        elif type_ == ev.INPUT_AUDIO_BUFFER_APPEND:
            self._append(event)
        elif type_ == ev.INPUT_AUDIO_BUFFER_COMMIT:
            self._commit(event_id)
        elif type_ == ev.INPUT_AUDIO_BUFFER_CLEAR:
            self._clear()
        elif type_ == ev.CONVERSATION_ITEM_CREATE:
            self._item_create(event)
        elif type_ == ev.CONVERSATION_ITEM_RETRIEVE:
            self._retrieve(event, event_id)
        elif type_ == ev.CONVERSATION_ITEM_TRUNCATE:
            self._truncate(event)
        elif type_ == ev.CONVERSATION_ITEM_DELETE:
            self._delete(event)
        elif type_ == ev.RESPONSE_CREATE:
            self._response_create(event, event_id)
        elif type_ == ev.RESPONSE_CANCEL:
            self._response_cancel(event, event_id)

    def _session_update(self, event: dict[str, Any]) -> None:
        if "session" not in event:
            raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'session'.", "session")
        old_fmt, old_td = input_format(self.config), turn_detection(self.config)
        self.config = apply_session_update(self.config, event["session"], self.flavour)
        if input_format(self.config) != old_fmt:
            self._new_epoch()
            self._reset_vad()
        elif turn_detection(self.config) != old_td:
            self._reset_vad()
        for _ in range(2 if self.knobs.double_session_updated else 1):
            self._emit(ev.SESSION_UPDATED, session=self._session_object())

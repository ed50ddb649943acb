"""Fold one session's records into turns and their latencies: who spoke, what answered, how fast.

Boundary: the conversation side of a session summary, nothing else: user items, responses, barge-ins, audio
in and out, and the two latencies below. Records in (already read and de-duplicated by `relay.inspect.reader`),
turn dicts out; errors, retrieves, tool calls and saved audio are `relay.inspect.ledger`'s.

Definitions (documented for the README):
- A *turn* is one response together with the user items committed since the previous response (server
  `input_audio_buffer.committed` or a user-role `conversation.item.added`/`.created`); user items that
  never got a response form a turn of their own with no response.
- *speech_to_first_audio*: t_ms of the first `response.output_audio.delta` of a response minus t_ms of
  the latest server `input_audio_buffer.speech_stopped` before that response was created.
- *request_to_done*: t_ms of `response.done` minus t_ms of the latest client `response.create` before the
  response was created, or, when the client did not ask for it, of the latest client
  `input_audio_buffer.commit` since the previous response, or (server VAD: the server commits) of the latest
  server `input_audio_buffer.committed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relay.core import events as ev
from relay.inspect.fields import TEXT_KEEP_CHARS, as_num, as_str, audio_ms, round_ms
from relay.inspect.reader import LogRecord


@dataclass
class UserItem:
    item_id: str
    input: str | None = None  # "audio" | "text" | other content type
    speech_started_ms: float | None = None
    speech_stopped_ms: float | None = None
    committed_ms: float | None = None
    transcript: str | None = None


@dataclass
class Turn:
    """One response and the user items that led to it (see the module docstring)."""

    index: int
    user_item_ids: list[str]
    response_id: str | None = None
    stop_ms: float | None = None
    request_ms: float | None = None
    response_created_ms: float | None = None
    first_audio_ms: float | None = None
    response_done_ms: float | None = None
    status: str | None = None
    assistant_item_ids: list[str] = field(default_factory=list)
    audio_out_ms: float = 0.0
    assistant_text: str = ""
    barge_in: bool = False
    truncated_audio_end_ms: float | None = None

    @property
    def speech_to_first_audio_ms(self) -> float | None:
        if self.stop_ms is None or self.first_audio_ms is None:
            return None
        return round_ms(self.first_audio_ms - self.stop_ms)

    @property
    def request_to_done_ms(self) -> float | None:
        if self.request_ms is None or self.response_done_ms is None:
            return None
        return round_ms(self.response_done_ms - self.request_ms)


class TurnTracker:
    """The turns of one session so far, fed one record at a time in seq order. Pure: records in, dicts out."""

    def __init__(self) -> None:
        self.items: dict[str, UserItem] = {}
        self.pending_user_items: list[str] = []
        self.queued_user_items: set[str] = set()
        self.turns: list[Turn] = []
        self.turn_by_response: dict[str, Turn] = {}
        self.turn_by_assistant_item: dict[str, Turn] = {}
        self.active_responses: set[str] = set()
        self.last_stop_ms: float | None = None
        self.pending_create_ms: float | None = None
        self.pending_create_event_id: str | None = None
        self.pending_commit_ms: float | None = None
        self.pending_server_commit_ms: float | None = None
        self.audio_in_ms = 0.0
        self.audio_out_ms = 0.0

    def _on_server_error(self, r: LogRecord) -> None:
        error = r.event.get("error")
        event_id = as_str(error.get("event_id")) if isinstance(error, dict) else None
        if event_id is not None and event_id == self.pending_create_event_id:
            # The response.create was refused: it must not be the request of the next response.
            self.pending_create_ms = None
            self.pending_create_event_id = None

    def _user_item(self, item_id: str) -> UserItem:
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = UserItem(item_id)
        return item

    def _add_pending_user_item(self, item_id: str) -> None:
        # committed and item.added both announce the same item: queue it once.
        if item_id not in self.queued_user_items:
            self.queued_user_items.add(item_id)
            self.pending_user_items.append(item_id)

    def _on_speech_started(self, r: LogRecord) -> None:
        item_id = as_str(r.event.get("item_id"))
        if item_id is not None:
            self._user_item(item_id).speech_started_ms = r.t_ms
        # Speech while a response is still running is a barge-in on that response.
        for response_id in self.active_responses:
            self.turn_by_response[response_id].barge_in = True

    def _on_speech_stopped(self, r: LogRecord) -> None:
        item_id = as_str(r.event.get("item_id"))
        if item_id is not None:
            self._user_item(item_id).speech_stopped_ms = r.t_ms
        self.last_stop_ms = r.t_ms

    def _on_committed(self, r: LogRecord) -> None:
        item_id = as_str(r.event.get("item_id"))
        if item_id is None:
            return
        self.pending_server_commit_ms = r.t_ms
        item = self._user_item(item_id)
        item.committed_ms = r.t_ms
        item.input = item.input or "audio"
        self._add_pending_user_item(item_id)

    def _on_item_added(self, r: LogRecord) -> None:
        item = r.event.get("item")
        if not isinstance(item, dict) or item.get("role") != "user":
            return
        item_id = as_str(item.get("id"))
        if item_id is None:
            return
        user = self._user_item(item_id)
        content = item.get("content")
        if isinstance(content, list) and content and isinstance(content[0], dict):
            kind = as_str(content[0].get("type")) or ""
            user.input = user.input or kind.removeprefix("input_")
            text = as_str(content[0].get("text"))
            if text and user.transcript is None:
                user.transcript = text[:TEXT_KEEP_CHARS]
        self._add_pending_user_item(item_id)

    def _on_transcription(self, r: LogRecord) -> None:
        item_id = as_str(r.event.get("item_id"))
        transcript = as_str(r.event.get("transcript"))
        if item_id is not None and transcript is not None:
            self._user_item(item_id).transcript = transcript[:TEXT_KEEP_CHARS]

    def _on_client_append(self, r: LogRecord) -> None:
        self.audio_in_ms += audio_ms(r.event.get("audio"))

    def _on_client_commit(self, r: LogRecord) -> None:
        self.pending_commit_ms = r.t_ms

    def _on_client_response_create(self, r: LogRecord) -> None:
        self.pending_create_ms = r.t_ms
        self.pending_create_event_id = as_str(r.event.get("event_id"))

    def _on_client_truncate(self, r: LogRecord) -> None:
        item_id = as_str(r.event.get("item_id"))
        turn = self.turn_by_assistant_item.get(item_id or "")
        if turn is not None:
            turn.truncated_audio_end_ms = as_num(r.event.get("audio_end_ms"))
            turn.barge_in = True

    def _response_turn(self, response_id: str, t_ms: float) -> Turn:
        """The turn of a response, opening it (and taking the pending user items) on first sight."""
        turn = self.turn_by_response.get(response_id)
        if turn is not None:
            return turn
        turn = Turn(index=len(self.turns) + 1, user_item_ids=self.pending_user_items, response_id=response_id)
        self.pending_user_items = []
        turn.response_created_ms = t_ms
        turn.stop_ms = self.last_stop_ms
        self.last_stop_ms = None
        # A client response.create is the request; else the client's commit; under server VAD the server's.
        create, commit, server_commit = self.pending_create_ms, self.pending_commit_ms, self.pending_server_commit_ms
        turn.request_ms = create if create is not None else commit if commit is not None else server_commit
        self.pending_create_ms = self.pending_commit_ms = self.pending_server_commit_ms = None
        self.pending_create_event_id = None
        self.turns.append(turn)
        self.turn_by_response[response_id] = turn
        self.active_responses.add(response_id)
        return turn

    @staticmethod
    def _response_id(r: LogRecord) -> str | None:
        response = r.event.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            return str(response["id"])
        return as_str(r.event.get("response_id")) or as_str(r.raw.get("response_id"))

    def _on_response_created(self, r: LogRecord) -> None:
        response_id = self._response_id(r)
        if response_id is not None:
            self._response_turn(response_id, r.t_ms)

    def _note_assistant_item(self, turn: Turn, item_id: str | None) -> None:
        if item_id is not None and item_id not in turn.assistant_item_ids:
            turn.assistant_item_ids.append(item_id)
            self.turn_by_assistant_item[item_id] = turn

    def _on_output_item_added(self, r: LogRecord) -> None:
        response_id = self._response_id(r)
        item = r.event.get("item")
        if response_id is not None and isinstance(item, dict):
            self._note_assistant_item(self._response_turn(response_id, r.t_ms), as_str(item.get("id")))

    def _on_audio_delta(self, r: LogRecord) -> None:
        delta_ms = audio_ms(r.event.get("delta"))
        self.audio_out_ms += delta_ms
        response_id = self._response_id(r)
        if response_id is None:
            return
        turn = self._response_turn(response_id, r.t_ms)
        if turn.first_audio_ms is None:
            turn.first_audio_ms = r.t_ms
        turn.audio_out_ms += delta_ms
        self._note_assistant_item(turn, as_str(r.event.get("item_id")))

    def _on_text_delta(self, r: LogRecord) -> None:
        response_id = self._response_id(r)
        delta = as_str(r.event.get("delta"))
        if response_id is None or delta is None:
            return
        turn = self._response_turn(response_id, r.t_ms)
        if len(turn.assistant_text) < TEXT_KEEP_CHARS:
            turn.assistant_text = (turn.assistant_text + delta)[:TEXT_KEEP_CHARS]

    def _on_response_done(self, r: LogRecord) -> None:
        response_id = self._response_id(r)
        if response_id is None:
            return
        turn = self._response_turn(response_id, r.t_ms)
        turn.response_done_ms = r.t_ms
        response = r.event.get("response")
        if isinstance(response, dict):
            turn.status = as_str(response.get("status"))
        self.active_responses.discard(response_id)

    def _on_relay_response_done(self, r: LogRecord) -> None:
        """The relay's own `response.done`: it ends, `failed`, a response an upstream drop cut (docs/resume.md). A
        response the client never saw (a server tool's, hidden) has no turn, and gets none."""
        response_id = self._response_id(r)
        if response_id is not None and response_id in self.turn_by_response:
            self._on_response_done(r)

    HANDLERS: dict[tuple[str, str], Any] = {
        ("server", ev.ERROR): _on_server_error,
        ("server", ev.INPUT_AUDIO_BUFFER_SPEECH_STARTED): _on_speech_started,
        ("server", ev.INPUT_AUDIO_BUFFER_SPEECH_STOPPED): _on_speech_stopped,
        ("server", ev.INPUT_AUDIO_BUFFER_COMMITTED): _on_committed,
        ("server", ev.CONVERSATION_ITEM_ADDED): _on_item_added,
        ("server", ev.CONVERSATION_ITEM_CREATED): _on_item_added,
        ("server", ev.INPUT_AUDIO_TRANSCRIPTION_COMPLETED): _on_transcription,
        ("server", ev.RESPONSE_CREATED): _on_response_created,
        ("server", ev.RESPONSE_OUTPUT_ITEM_ADDED): _on_output_item_added,
        ("server", ev.RESPONSE_OUTPUT_AUDIO_DELTA): _on_audio_delta,
        ("server", ev.RESPONSE_OUTPUT_TEXT_DELTA): _on_text_delta,
        ("server", ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA): _on_text_delta,
        ("server", ev.RESPONSE_DONE): _on_response_done,
        ("relay", ev.RESPONSE_DONE): _on_relay_response_done,
        ("client", ev.INPUT_AUDIO_BUFFER_APPEND): _on_client_append,
        ("client", ev.INPUT_AUDIO_BUFFER_COMMIT): _on_client_commit,
        ("client", ev.RESPONSE_CREATE): _on_client_response_create,
        ("client", ev.CONVERSATION_ITEM_TRUNCATE): _on_client_truncate,
    }

    # -- result --------------------------------------------------------------------------------------------

    def all_turns(self) -> list[Turn]:
        turns = list(self.turns)
        if self.pending_user_items:
            turns.append(Turn(index=len(turns) + 1, user_item_ids=list(self.pending_user_items)))
        return turns

    def turn_json(self, turn: Turn) -> dict[str, Any]:
        users = [self.items[i] for i in turn.user_item_ids if i in self.items]
        first_user = users[0] if users else None
        transcripts = [u.transcript for u in users if u.transcript]

        def t(value: float | None) -> float | None:
            return None if value is None else round_ms(value)

        return {
            "index": turn.index,
            "user_item_ids": list(turn.user_item_ids),
            "input": first_user.input if first_user else None,
            "user_transcript": " ".join(transcripts) if transcripts else None,
            "speech_started_ms": t(first_user.speech_started_ms) if first_user else None,
            "speech_stopped_ms": t(turn.stop_ms),
            "request_ms": t(turn.request_ms),
            "response_id": turn.response_id,
            "response_created_ms": t(turn.response_created_ms),
            "first_audio_ms": t(turn.first_audio_ms),
            "response_done_ms": t(turn.response_done_ms),
            "status": turn.status,
            "assistant_item_ids": list(turn.assistant_item_ids),
            "assistant_text": turn.assistant_text or None,
            "audio_out_s": round(turn.audio_out_ms / 1000, 3),
            "barge_in": turn.barge_in,
            "truncated_audio_end_ms": turn.truncated_audio_end_ms,
            "speech_to_first_audio_ms": turn.speech_to_first_audio_ms,
            "request_to_done_ms": turn.request_to_done_ms,
        }

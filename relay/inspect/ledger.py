"""Fold one session's records into its ledgers: errors, retrieves and their round trips, server tool calls,
saved audio and log gaps.

Boundary: everything a session summary lists besides its turns (those are `relay.inspect.turns`'s). Records in
(already read and de-duplicated by `relay.inspect.reader`), JSON-ready lists out.

Definition (documented for the README): *retrieve_round_trip* is a relay `conversation.item.retrieve` to the
relay-dir `conversation.item.retrieved` (matched by `item.id`) or `error` (matched by `error.event_id`) that
answers it (docs/retrieve-after-done.md).
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any

from relay.core import events as ev
from relay.inspect.fields import TEXT_KEEP_CHARS, as_num, as_str, error_code, round_ms
from relay.inspect.reader import LogRecord


@dataclass
class Retrieve:
    item_id: str
    sent_ms: float
    answered_ms: float | None = None
    result: str = "pending"  # retrieved | error | timeout | session_closed | pending

    @property
    def round_trip_ms(self) -> float | None:
        return None if self.answered_ms is None else round_ms(self.answered_ms - self.sent_ms)


class SessionLedger:
    """The lists of one session so far, fed one record at a time in seq order. Pure: records in, lists out."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.retrieves: list[Retrieve] = []
        self.pending_retrieves: dict[str, deque[Retrieve]] = defaultdict(deque)
        self.audio_saved: list[dict[str, Any]] = []
        self.gaps: list[dict[str, Any]] = []
        self.tool_calls: list[dict[str, Any]] = []

    def _on_log_gap(self, r: LogRecord) -> None:
        self.gaps.append(
            {k: r.event.get(k) for k in ("from_seq", "to_seq", "reason")} | {"t_ms": round_ms(r.t_ms)}
        )

    def _on_audio_saved(self, r: LogRecord) -> None:
        keys = ("item_id", "path", "url", "duration_ms", "audio_bytes", "rate", "source")
        self.audio_saved.append({k: r.event.get(k) for k in keys} | {"t_ms": round_ms(r.t_ms)})

    def _on_tool_call(self, r: LogRecord) -> None:
        """A server-side tool ran: what it was asked, what it answered, how long it took (docs/tools.md)."""
        output = r.event.get("output")
        if isinstance(output, str) and len(output) > TEXT_KEEP_CHARS:
            output = output[:TEXT_KEEP_CHARS] + "…"
        self.tool_calls.append(
            {
                "t_ms": round_ms(r.t_ms),
                "name": as_str(r.event.get("name")),
                "call_id": as_str(r.event.get("call_id")),
                "result": as_str(r.event.get("result")),
                "duration_ms": as_num(r.event.get("duration_ms")),
                "arguments": r.event.get("arguments"),
                "output": output,
            }
        )

    def _answer(self, item_id: str, result: str, answered_ms: float | None) -> bool:
        """Settle the oldest open retrieve of `item_id` (its round trip ends at `answered_ms`, when one is given);
        False when none was open."""
        pending = self.pending_retrieves.get(item_id)
        if not pending:
            return False
        retrieve = pending.popleft()
        retrieve.result = result
        if answered_ms is not None:
            retrieve.answered_ms = answered_ms
        return True

    def _on_retrieve_failed(self, r: LogRecord) -> None:
        item_id = as_str(r.event.get("item_id"))
        reason = as_str(r.event.get("reason")) or "error"
        error = r.event.get("error")
        message = None
        code = None
        if isinstance(error, dict):
            message = as_str(error.get("message"))
            code = as_str(error.get("code"))
        elif isinstance(error, str):
            message = error
        self._error(r, "retrieve_failed", code or reason, message, None, item_id)
        # A timeout or session end is not an answer: no round-trip sample for it.
        if item_id is not None and not self._answer(item_id, reason, r.t_ms if reason == "error" else None):
            # Already answered by a relay-dir error (counted there); record the reason it was given.
            for retrieve in reversed(self.retrieves):
                if retrieve.item_id == item_id:
                    retrieve.result = reason
                    break

    def _error(
        self, r: LogRecord, kind: str, code: str | None, message: str | None, event_id: str | None,
        item_id: str | None = None,
    ) -> None:
        self.errors.append(
            {"t_ms": round_ms(r.t_ms), "seq": r.seq, "kind": kind, "code": code, "message": message,
             "event_id": event_id, "item_id": item_id}
        )

    def _on_client_error(self, r: LogRecord) -> None:
        event = r.event
        self._error(r, "client_error", as_str(event.get("code")), as_str(event.get("message")),
                    as_str(event.get("event_id")))

    def _on_server_error(self, r: LogRecord) -> None:
        error = r.event.get("error")
        error = error if isinstance(error, dict) else {}
        self._error(r, "server_error", error_code(error), as_str(error.get("message")), as_str(error.get("event_id")))

    def _on_relay_error(self, r: LogRecord) -> None:
        # A relay-dir error is the upstream's answer to one of the relay's own frames (its retrieves).
        error = r.event.get("error")
        error = error if isinstance(error, dict) else {}
        event_id = as_str(error.get("event_id")) or ""
        prefix = ev.RELAY_RETRIEVE_EVENT_ID_PREFIX
        if event_id.startswith(prefix):
            self._answer(event_id[len(prefix):], "error", r.t_ms)
            return
        self._error(r, "relay_error", error_code(error), as_str(error.get("message")), event_id or None)

    def _on_relay_retrieve(self, r: LogRecord) -> None:
        item_id = as_str(r.event.get("item_id")) or as_str(r.raw.get("item_id"))
        if item_id is None:
            return
        retrieve = Retrieve(item_id=item_id, sent_ms=r.t_ms)
        self.retrieves.append(retrieve)
        self.pending_retrieves[item_id].append(retrieve)

    def _on_relay_retrieved(self, r: LogRecord) -> None:
        item = r.event.get("item")
        item_id = as_str(item.get("id")) if isinstance(item, dict) else as_str(r.raw.get("item_id"))
        self._answer(item_id or "", "retrieved", r.t_ms)

    HANDLERS: dict[tuple[str, str], Any] = {
        ("relay", ev.RELAY_LOG_GAP): _on_log_gap,
        ("relay", ev.RELAY_AUDIO_SAVED): _on_audio_saved,
        ("relay", ev.RELAY_RETRIEVE_FAILED): _on_retrieve_failed,
        ("relay", ev.RELAY_TOOL_CALL): _on_tool_call,
        ("relay", ev.RELAY_CLIENT_ERROR): _on_client_error,
        ("relay", ev.CONVERSATION_ITEM_RETRIEVE): _on_relay_retrieve,
        ("relay", ev.CONVERSATION_ITEM_RETRIEVED): _on_relay_retrieved,
        ("relay", ev.ERROR): _on_relay_error,
        ("server", ev.ERROR): _on_server_error,
    }

    def retrieves_json(self) -> dict[str, Any]:
        """The `retrieves` object of the summary: counts by result and one entry per retrieve."""
        retrieve_results = Counter(r.result for r in self.retrieves)
        return {
            "total": len(self.retrieves),
            "by_result": dict(sorted(retrieve_results.items())),
            "items": [
                {"item_id": r.item_id, "sent_ms": round_ms(r.sent_ms), "result": r.result,
                 "round_trip_ms": r.round_trip_ms}
                for r in self.retrieves
            ],
        }

"""What a session remembers so a new upstream can take over its conversation (docs/resume.md): the effective
configuration (`EffectiveConfig`: the deep merge of every `session.update` the upstream accepted) and the compact
history (`CompactHistory`: completed items as role, text and call ids, oldest dropped first past a byte cap).
Fed by `relay.core.resume.ResumeState` with what crosses the relay; read by its `Restore`. No I/O.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from relay.core.frames import deep_merge

# ---- the effective configuration ----------------------------------------------------------------------------


@dataclass
class _Update:
    event_id: object
    session: dict[str, Any]
    text: str | None  # the frame as the upstream got it, to send again if it is lost unanswered; None: the relay's


class EffectiveConfig:
    """`session.update`s in flight, answered in order: a `session.updated` accepts the oldest one (its session is
    merged in); an `error` naming one's event_id refuses it. A `session.updated` repeating the previous one word for
    word (Yandex has been seen answering one update twice) accepts nothing: the next update is still in flight."""

    def __init__(self) -> None:
        self.accepted: dict[str, Any] = {}
        self._in_flight: deque[_Update] = deque()
        self._last_answer: object = None  # the `session` of the last session.updated

    def sent(self, event_id: object, session: object, text: str) -> None:
        # A non-object session still takes its place in line: the upstream answers it too.
        self._in_flight.append(_Update(event_id, session if isinstance(session, dict) else {}, text))

    def relay_sent(self, event_id: str) -> None:
        """The relay's own `session.update` (the pins, at connect) is answered in line like a client's: it takes
        its `session.updated` (or `error`), so no client update is credited with it. Its fields are the overlay
        every restore adds anyway, so nothing of it is merged or sent again."""
        self._in_flight.append(_Update(event_id, {}, None))

    def updated(self, answer: object) -> None:
        """A `session.updated` whose `session` is `answer`."""
        repeat, self._last_answer = answer == self._last_answer, answer
        if self._in_flight and not repeat:
            update = self._in_flight.popleft()
            self.accepted = deep_merge(self.accepted, update.session)

    def refused(self, event_id: object) -> None:
        if not isinstance(event_id, str):
            return
        for update in self._in_flight:
            if update.event_id == event_id:
                self._in_flight.remove(update)
                return

    def upstream_lost(self) -> list[str]:
        """Updates the lost upstream never answered were not accepted: they are to be sent again (after the
        restore, so the client gets its answer), and stay in line for the new upstream's answers."""
        # The relay's own update is not sent again (a restore sends the pins itself): its place in line goes.
        self._last_answer = None  # the new upstream's answers are its own
        self._in_flight = deque(update for update in self._in_flight if update.text is not None)
        return [update.text for update in self._in_flight if update.text is not None]

    @property
    def awaiting_answer(self) -> bool:
        """Some `session.update` still waits for its answer."""
        return bool(self._in_flight)

    def session(self, overlay: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
        """What a new upstream is sent: the accepted merge, with the operator's overlay (pins, server tools) on top."""
        merged = deep_merge({"type": "realtime"}, self.accepted)
        return overlay(merged) if overlay is not None else merged


# ---- the compact history --------------------------------------------------------------------------------------


@dataclass
class HistoryItem:
    """One conversation item as much as a restore needs: no audio, only its text and call ids."""

    item_id: str
    kind: str  # "message" | "function_call" | "function_call_output"
    role: str | None = None
    text: str = ""
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    complete: bool = False
    size: int = 0

    def weigh(self) -> int:
        values = (self.item_id, self.text, self.call_id, self.name, self.arguments, self.output)
        # A client's text may hold a lone surrogate (valid JSON, no UTF-8): weighed, not refused.
        self.size = 64 + sum(len(value.encode("utf-8", "surrogatepass")) for value in values if value)
        return self.size

    def restore_item(self, *, keep_id: bool) -> dict[str, Any]:
        """The `item` of a `conversation.item.create` that re-creates this one (text in place of audio)."""
        item: dict[str, Any] = {"id": self.item_id} if keep_id else {}
        if self.kind == "function_call":
            item.update(type="function_call", call_id=self.call_id, name=self.name, arguments=self.arguments or "{}")
        elif self.kind == "function_call_output":
            item.update(type="function_call_output", call_id=self.call_id, output=self.output or "")
        else:
            part = "output_text" if self.role == "assistant" else "input_text"
            item.update(type="message", role=self.role, content=[{"type": part, "text": self.text}])
        return item

    @property
    def restorable(self) -> bool:
        if not self.complete:
            return False
        if self.kind == "function_call":
            return isinstance(self.call_id, str) and isinstance(self.name, str)
        if self.kind == "function_call_output":
            return isinstance(self.call_id, str)
        return self.role in ("user", "assistant", "system") and bool(self.text)


_TEXT_FIELDS: Final = ("text", "transcript")


def _content_text(content: object) -> str:
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, dict):
            for key in _TEXT_FIELDS:
                value = part.get(key)
                if isinstance(value, str) and value:
                    texts.append(value)
                    break
    return "".join(texts)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


class CompactHistory:
    """Items in the order they appeared, complete once the upstream said so; capped at `max_bytes` (the oldest
    items go first, counted in `dropped`)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, HistoryItem] = OrderedDict()
        self.bytes = 0
        self.dropped = 0

    def observe_item(self, raw: object, *, complete: bool) -> None:
        """An item as the upstream showed it (added, done); `complete` when the upstream says it is finished."""
        if not isinstance(raw, dict):
            return
        item_id = raw.get("id")
        if not isinstance(item_id, str):
            return
        kind = raw.get("type", "message")
        if kind not in ("message", "function_call", "function_call_output"):
            return
        entry = self.items.get(item_id)
        if entry is None:
            entry = HistoryItem(item_id, kind)
            self.items[item_id] = entry
        if kind == "message":
            entry.role = _str(raw.get("role")) or entry.role
            text = _content_text(raw.get("content"))
            if text:
                entry.text = text
        else:
            entry.call_id = _str(raw.get("call_id")) or entry.call_id
            entry.name = _str(raw.get("name")) or entry.name
            entry.arguments = _str(raw.get("arguments")) or entry.arguments
            entry.output = _str(raw.get("output")) or entry.output
        if complete or raw.get("status") == "completed":
            entry.complete = True
        self._reweigh(entry)

    def transcript(self, item_id: object, text: object) -> None:
        """A user audio item's transcript arrived (it may come after the item's done); it makes the item complete."""
        if not isinstance(item_id, str) or not isinstance(text, str):
            return
        entry = self.items.get(item_id)
        if entry is None:
            entry = HistoryItem(item_id, "message", role="user")
            self.items[item_id] = entry
        entry.text = text
        entry.complete = True
        self._reweigh(entry)

    def deleted(self, item_id: object) -> None:
        if isinstance(item_id, str):
            entry = self.items.pop(item_id, None)
            if entry is not None:
                self.bytes -= entry.size

    def _reweigh(self, entry: HistoryItem) -> None:
        self.bytes -= entry.size
        self.bytes += entry.weigh()
        while self.bytes > self.max_bytes and self.items:
            _, oldest = self.items.popitem(last=False)
            self.bytes -= oldest.size
            self.dropped += 1

    def restorable(self) -> list[HistoryItem]:
        return [entry for entry in self.items.values() if entry.restorable]

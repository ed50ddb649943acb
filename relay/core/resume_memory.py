"""What a session remembers of its conversation so a new upstream can take it over (docs/resume.md): the compact
history (`CompactHistory`: completed items as role, text and call ids, oldest dropped first past a byte cap).
Fed by `relay.core.resume.ResumeState` with what crosses the relay; read by its `Restore`. No I/O. The other half
of a restore, the effective configuration, comes from the line of session.updates (relay.core.update_line).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final


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

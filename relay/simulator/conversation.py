"""Conversation item commands: `conversation.item.create` / `.retrieve` / `.truncate` / `.delete`.

`ConversationItems` validates a client's item (message, function_call, function_call_output; text and
audio content per role) and places it in the conversation, answers a retrieve with the item's audio
(docs/retrieve-after-done.md), cuts an assistant item's audio at the point the user heard, and deletes
items. Truncating or deleting the item a response is streaming cancels that response.
"""

from __future__ import annotations

import base64
import copy
import math
from typing import Any

from relay.core import events as ev
from relay.simulator import replies
from relay.simulator.config import SessionConfigError, decode_client_audio
from relay.simulator.items import StoredItem, retrieved_wire
from relay.simulator.responses import Responses


class ConversationItems(Responses):
    """The client's commands on conversation items, on top of the session's state and responses."""

    def _find(self, event: dict[str, Any]) -> StoredItem:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'item_id'.", "item_id")
        stored = self.items.get(item_id)
        if stored is None:
            raise SessionConfigError("item_not_found", f"Item with item_id '{item_id}' not found.", "item_id")
        return stored

    def _item_create(self, event: dict[str, Any]) -> None:
        raw = event.get("item")
        if not isinstance(raw, dict):
            raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        after = event.get("previous_item_id")
        if after is not None and (not isinstance(after, str) or (after != "root" and after not in self.items)):
            raise SessionConfigError("invalid_value", f"Previous item with id '{after}' not found.", "previous_item_id")
        stored = self._parse_item(raw)
        self._store(stored, after)
        previous = self._previous_id(stored.item["id"])
        self._item_added(stored.item, previous)
        self._item_done(stored.item, previous)
        self._complete(stored.item)

    def _parse_item(self, raw: dict[str, Any]) -> StoredItem:
        kind = raw.get("type", "message")
        item_id = raw.get("id")
        if item_id is not None and (not isinstance(item_id, str) or not item_id or item_id in self.items):
            raise SessionConfigError("invalid_value", f"Invalid or duplicate item id {item_id!r}.", "item.id")
        base = {
            "id": item_id or self._mint("item"),
            "object": "realtime.item",
            "type": kind,
            "status": "completed",
        }
        if kind == "function_call_output":
            call_id, output = raw.get("call_id"), raw.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str):
                raise SessionConfigError(
                    "missing_required_parameter",
                    "function_call_output needs string 'call_id' and 'output'.",
                    "item.call_id" if not isinstance(call_id, str) else "item.output",
                )
            return StoredItem({**base, "call_id": call_id, "output": output})
        if kind == "function_call":
            name, arguments = raw.get("name"), raw.get("arguments", "{}")
            call_id = raw.get("call_id") or self._mint("call")
            if not isinstance(name, str) or not isinstance(arguments, str) or not isinstance(call_id, str):
                raise SessionConfigError("invalid_type", "function_call needs string 'name' and 'arguments'.", "item")
            self._calls[call_id] = name
            return StoredItem({**base, "call_id": call_id, "name": name, "arguments": arguments})
        if kind != "message":
            raise SessionConfigError("invalid_value", f"Unsupported item type {kind!r}.", "item.type")
        role = raw.get("role")
        allowed = {
            "user": ("input_text", "input_audio"),
            "system": ("input_text",),
            "assistant": ("output_text", "output_audio"),
        }
        if role not in allowed:
            raise SessionConfigError("invalid_value", f"Invalid role {role!r}.", "item.role")
        content = raw.get("content")
        if not isinstance(content, list) or not content:
            raise SessionConfigError("invalid_type", "A message needs a non-empty 'content' array.", "item.content")
        parts: list[dict[str, Any]] = []
        stored = StoredItem({**base, "role": role, "content": parts})
        for index, part in enumerate(content):
            where = f"item.content[{index}]"
            if not isinstance(part, dict) or part.get("type") not in allowed[role]:
                raise SessionConfigError("invalid_value", f"Unsupported content part for role {role}.", f"{where}.type")
            ptype = part["type"]
            if ptype in ("input_text", "output_text"):
                if not isinstance(part.get("text"), str):
                    raise SessionConfigError("invalid_type", "'text' must be a string.", f"{where}.text")
                parts.append({"type": ptype, "text": part["text"]})
                continue
            transcript = part.get("transcript")
            if transcript is not None and not isinstance(transcript, str):
                raise SessionConfigError("invalid_type", "'transcript' must be a string.", f"{where}.transcript")
            if "audio" in part:
                if not isinstance(part["audio"], str) or stored.audio is not None:
                    raise SessionConfigError("invalid_value", "One base64 'audio' string per item.", f"{where}.audio")
                samples = decode_client_audio(self._fmt, part["audio"], f"{where}.audio")
                stored.audio, stored.fmt, stored.audio_index = bytearray(samples), self._fmt, index
                if transcript is None:
                    transcript = replies.describe_speech(stored.audio_ms())
            parts.append({"type": ptype, "transcript": transcript})
        return stored

    def _retrieve(self, event: dict[str, Any], event_id: str | None) -> None:
        stored = self._find(event)
        if self.knobs.retrieve_fail:
            self._error(
                "retrieve_failed",
                "Retrieve failed (simulator knob retrieve_fail).",
                "item_id",
                event_id,
                kind="server_error",
            )
            return
        item = copy.deepcopy(stored.item)
        wire = retrieved_wire(stored)
        if wire is not None and not self.knobs.retrieve_no_audio:
            item["content"][stored.audio_index]["audio"] = base64.b64encode(wire).decode("ascii")
        self._emit(ev.CONVERSATION_ITEM_RETRIEVED, item=item)

    def _truncate(self, event: dict[str, Any]) -> None:
        stored = self._find(event)
        if stored.item.get("role") != "assistant" or stored.audio is None or stored.fmt is None:
            raise SessionConfigError("invalid_value", "Only assistant messages with audio can be truncated.", "item_id")
        content_index = event.get("content_index", 0)
        if content_index != stored.audio_index:
            raise SessionConfigError("invalid_value", f"Content index {content_index!r} has no audio.", "content_index")
        end = event.get("audio_end_ms")
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            raise SessionConfigError("invalid_type", "'audio_end_ms' must be a non-negative integer.", "audio_end_ms")
        if self._response is not None and self._response.stored is stored:
            self._cancel_response("client_cancelled")
        available = stored.audio_ms()
        if end > available + 1e-6:
            raise SessionConfigError(
                "invalid_value",
                f"Audio content of {available:.0f}ms is already shorter than {end}ms.",
                "audio_end_ms",
            )
        keep = math.floor(end * stored.fmt.rate / 1000.0 + 1e-6)
        del stored.audio[keep * 2 :]
        # GA: truncating drops the server-side transcript, so no unheard text stays in the context.
        stored.item["content"][stored.audio_index]["transcript"] = ""
        self._emit(
            ev.CONVERSATION_ITEM_TRUNCATED,
            item_id=stored.item["id"],
            content_index=content_index,
            audio_end_ms=end,
        )

    def _delete(self, event: dict[str, Any]) -> None:
        stored = self._find(event)
        if self._response is not None and self._response.stored is stored:
            self._cancel_response("client_cancelled")
        item_id = stored.item["id"]
        del self.items[item_id]
        if self._archive is not None:
            self._archive.remove(item_id)
        self._emit(ev.CONVERSATION_ITEM_DELETED, item_id=item_id)

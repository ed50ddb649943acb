"""Typed results of the Conversations REST API: items, pages and conversations as the API documents them.

Boundary: pure (no I/O): parsing the API's JSON answers into frozen dataclasses, and a short preview of any value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from relay.history.errors import InvalidResponse

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class ConversationItem:
    """One item as the API returned it; `raw` is the full JSON object."""

    id: str
    type: str
    role: str | None
    status: str | None
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> ConversationItem:
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise InvalidResponse(f"an item without a string 'id': {preview(value)}")
        role = value.get("role")
        status = value.get("status")
        item_type = value.get("type")
        return cls(
            id=value["id"],
            type=item_type if isinstance(item_type, str) else "",
            role=role if isinstance(role, str) else None,
            status=status if isinstance(status, str) else None,
            raw=value,
        )

    @property
    def text(self) -> str | None:
        """What the item says: message text or audio transcript parts joined, a call's name and arguments,
        a call output; None when it carries nothing readable."""
        raw = self.raw
        content = raw.get("content")
        if isinstance(content, list):
            pieces: list[str] = []
            for part in content:
                if not isinstance(part, dict):
                    continue
                for key in ("text", "transcript", "refusal"):
                    piece = part.get(key)
                    if isinstance(piece, str) and piece:
                        pieces.append(piece)
                        break
            return " ".join(pieces) if pieces else None
        if isinstance(content, str):
            return content
        if isinstance(raw.get("name"), str) and "arguments" in raw:
            arguments = raw["arguments"]
            return f"{raw['name']}({arguments if isinstance(arguments, str) else json.dumps(arguments)})"
        output = raw.get("output")
        if isinstance(output, str):
            return output
        if output is not None:
            return json.dumps(output, ensure_ascii=False)
        return None


@dataclass(frozen=True)
class ItemPage:
    """One page of `GET /conversations/{id}/items`."""

    items: list[ConversationItem]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def from_json(cls, value: Any) -> ItemPage:
        if not isinstance(value, dict) or value.get("object", "list") != "list" or not isinstance(value.get("data"), list):
            raise InvalidResponse(f"expected a list object with 'data', got {preview(value)}")
        first_id = value.get("first_id")
        last_id = value.get("last_id")
        return cls(
            items=[ConversationItem.from_json(item) for item in value["data"]],
            first_id=first_id if isinstance(first_id, str) else None,
            last_id=last_id if isinstance(last_id, str) else None,
            has_more=value.get("has_more") is True,
        )


@dataclass(frozen=True)
class Conversation:
    id: str
    created_at: int | None
    metadata: dict[str, Any]
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> Conversation:
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise InvalidResponse(f"expected a conversation object, got {preview(value)}")
        created_at = value.get("created_at")
        metadata = value.get("metadata")
        return cls(
            id=value["id"],
            created_at=created_at if isinstance(created_at, int) else None,
            metadata=metadata if isinstance(metadata, dict) else {},
            raw=value,
        )


def preview(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (RecursionError, ValueError):  # nested too deeply for the encoder's stack, or a circular value
        text = f"<a {type(value).__name__} too deeply nested to show>"
    return text if len(text) <= 200 else text[:200] + "..."

"""The simulator's Conversations REST store: conversations and their items, in memory.

Boundary: `ConversationStore` is pure (no I/O, no asyncio; the clock and id source are injectable) and holds
conversations and their items in insertion order. `relay.simulator.rest_routes` mounts the documented endpoints
(PROTOCOL.md "Conversations REST", reference/yandex-rest-listConversationItems.txt) on an aiohttp application:

    POST   /v1/conversations                      create  {"metadata"?, "items"?}
    GET    /v1/conversations/{id}                 get
    POST   /v1/conversations/{id}                 update  {"metadata"}
    DELETE /v1/conversations/{id}                 delete  -> {"id", "object": "conversation.deleted", ...}
    GET    /v1/conversations/{id}/items           list    ?limit=1..100 (20) &order=asc|desc (desc) &after=ID
                                                          &include[]=... (accepted, ignored, as Yandex does)
    POST   /v1/conversations/{id}/items           create  {"items": [...]} (1..20) -> list envelope
    GET    /v1/conversations/{id}/items/{item_id} get
    DELETE /v1/conversations/{id}/items/{item_id} delete  -> the conversation

Errors use the OpenAI shape `{"error": {"message", "type", "param", "code"}}`: 400 bad input (bad JSON, bad
query values, unknown `after` cursor), 401 missing or wrong key (only when the routes got an `api_key`;
both `Authorization: Api-Key <k>` and `Bearer <k>` are accepted), 404 unknown conversation or item, 405 other
methods.

Fault knobs, so a client's retry logic can be tested against a real server:
- store setting: `store.inject_faults(status, count, retry_after=None)` -> the next `count` requests
  (after auth) answer `status` (429 and 503 carry `Retry-After` when given), then normal service resumes;
- query parameters on any request: `sim_fault=STATUS&sim_fault_count=N&sim_retry_after=S` -> the first N
  requests carrying that same knob set to that same method+path answer STATUS; later identical requests
  (a client's retries) succeed. The knob parameters are not otherwise interpreted.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

JsonObject = dict[str, Any]

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
MAX_ITEMS_PER_CREATE: Final = 20
MAX_METADATA_PAIRS: Final = 16
MAX_METADATA_KEY_CHARS: Final = 64
MAX_METADATA_VALUE_CHARS: Final = 512
ORDERS: Final = ("asc", "desc")
MESSAGE_ROLES: Final = frozenset({"unknown", "user", "assistant", "system", "critic", "discriminator",
                                  "developer", "tool"})

FAULT_STATUS_PARAM: Final = "sim_fault"
FAULT_COUNT_PARAM: Final = "sim_fault_count"
FAULT_RETRY_AFTER_PARAM: Final = "sim_retry_after"


class ConversationApiError(Exception):
    """An API answer other than success; `body()` is the OpenAI-shaped error document."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> JsonObject:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, *, param: str | None = None,
                 code: str = "invalid_value") -> ConversationApiError:
    return ConversationApiError(400, message, param=param, code=code)


def _fault_error(status: int, retry_after: float | None) -> ConversationApiError:
    headers = {} if retry_after is None else {"Retry-After": _format_seconds(retry_after)}
    if status == 429:
        return ConversationApiError(429, "Rate limit exceeded (simulated quota fault).",
                                    type_="rate_limit_error", code="rate_limit_exceeded", headers=headers)
    if status == 401:
        return ConversationApiError(401, "Unauthenticated (simulated fault).", code="invalid_api_key")
    if status == 403:
        return ConversationApiError(403, "Permission denied (simulated fault).", type_="permission_error",
                                    code="permission_denied")
    if status >= 500:
        return ConversationApiError(status, "The server is temporarily unavailable (simulated fault).",
                                    type_="server_error", code="service_unavailable", headers=headers)
    return ConversationApiError(status, f"Simulated fault {status}.", code="simulated_fault", headers=headers)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


@dataclass
class _FaultPlan:
    status: int
    remaining: int
    retry_after: float | None


@dataclass
class _Conversation:
    record: JsonObject
    items: dict[str, JsonObject]  # insertion-ordered: the conversation's order


class ConversationStore:
    """In-memory conversations and items, with the documented pagination. Pure: no I/O."""

    def __init__(self, *, clock: Callable[[], float] = time.time,
                 new_id: Callable[[str], str] | None = None) -> None:
        self._clock = clock
        self._new_id = new_id or (lambda prefix: f"{prefix}_{secrets.token_hex(12)}")
        self._conversations: dict[str, _Conversation] = {}
        self._faults: list[_FaultPlan] = []
        self._query_faults: dict[tuple[str, str, int, int, float | None], int] = {}
        self.requests_served = 0  # every request the routes saw, faults included (tests count retries)

    # -- conversations ---------------------------------------------------------------------------------------
    def create_conversation(self, metadata: Mapping[str, Any] | None = None,
                            items: Iterable[Mapping[str, Any]] | None = None) -> JsonObject:
        checked_metadata = _check_metadata(metadata)
        new_items = [_normalize_input_item(item, index) for index, item in enumerate(items or ())]
        if len(new_items) > MAX_ITEMS_PER_CREATE:
            raise bad_request(f"At most {MAX_ITEMS_PER_CREATE} items can be added at a time.", param="items")
        conversation_id = self._new_id("conv")
        record: JsonObject = {"id": conversation_id, "object": "conversation",
                              "created_at": int(self._clock()), "metadata": checked_metadata}
        self._conversations[conversation_id] = _Conversation(record=record, items={})
        for item in new_items:
            self.add_item(conversation_id, item)
        return copy.deepcopy(record)

    def get_conversation(self, conversation_id: str) -> JsonObject:
        return copy.deepcopy(self._conversation(conversation_id).record)

    def update_conversation(self, conversation_id: str, metadata: Mapping[str, Any] | None) -> JsonObject:
        conversation = self._conversation(conversation_id)
        conversation.record["metadata"] = _check_metadata(metadata)
        return copy.deepcopy(conversation.record)

    def delete_conversation(self, conversation_id: str) -> JsonObject:
        self._conversation(conversation_id)
        del self._conversations[conversation_id]
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    # -- items -----------------------------------------------------------------------------------------------
    def add_item(self, conversation_id: str, item: Mapping[str, Any], *,
                 previous_item_id: str | None = None) -> JsonObject:
        """Store a copy of `item` (an id is assigned when missing) and return the stored copy.

        An item whose id is already stored replaces it in place (a realtime item completing, a transcript
        arriving). `previous_item_id` inserts right after that item (None: at the end; "root": at the start),
        like the realtime `conversation.item.create`.
        """
        conversation = self._conversation(conversation_id)
        stored = copy.deepcopy(dict(item))
        item_id = stored.get("id")
        if not isinstance(item_id, str) or not item_id:
            item_id = self._new_id("msg" if stored.get("type") == "message" else "item")
            # `id` first, as the API shows it.
            stored = {"id": item_id, **{key: value for key, value in stored.items() if key != "id"}}
        if item_id in conversation.items or previous_item_id is None:
            conversation.items[item_id] = stored
            return copy.deepcopy(stored)
        if previous_item_id != "root" and previous_item_id not in conversation.items:
            raise bad_request(f"Item with id '{previous_item_id}' not found in conversation "
                               f"'{conversation_id}'.", param="previous_item_id", code="item_not_found")
        rebuilt: dict[str, JsonObject] = {}
        if previous_item_id == "root":
            rebuilt[item_id] = stored
        for existing_id, existing in conversation.items.items():
            rebuilt[existing_id] = existing
            if existing_id == previous_item_id:
                rebuilt[item_id] = stored
        conversation.items = rebuilt
        return copy.deepcopy(stored)

    def create_items(self, conversation_id: str, items: Any) -> JsonObject:
        """REST `POST .../items`: validate and normalize client items, store them, return a list envelope."""
        self._conversation(conversation_id)
        if not isinstance(items, list) or not items:
            raise bad_request("'items' must be a non-empty array of item objects.", param="items")
        if len(items) > MAX_ITEMS_PER_CREATE:
            raise bad_request(f"At most {MAX_ITEMS_PER_CREATE} items can be added at a time.", param="items")
        normalized = [_normalize_input_item(item, index) for index, item in enumerate(items)]
        stored = [self.add_item(conversation_id, item) for item in normalized]
        return _list_envelope(stored, has_more=False)

    def list_items(self, conversation_id: str, *, limit: int = DEFAULT_LIMIT, order: str = "desc",
                   after: str | None = None) -> JsonObject:
        conversation = self._conversation(conversation_id)
        # bool is an int subclass: `limit=True` is a caller bug, not 1.
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise bad_request(f"Invalid 'limit': {limit!r}. Limit can range between 1 and {MAX_LIMIT}.",
                               param="limit")
        if order not in ORDERS:
            raise bad_request(f"Invalid 'order': {order!r}. Expected one of: 'asc', 'desc'.", param="order")
        ids = list(conversation.items)
        if order == "desc":
            ids.reverse()
        start = 0
        if after is not None:
            try:
                start = ids.index(after) + 1
            except ValueError:
                raise bad_request(f"Invalid 'after': no item with id '{after}' in conversation "
                                   f"'{conversation_id}'.", param="after", code="item_not_found") from None
        page_ids = ids[start:start + limit]
        page = [copy.deepcopy(conversation.items[item_id]) for item_id in page_ids]
        return _list_envelope(page, has_more=start + limit < len(ids))

    def get_item(self, conversation_id: str, item_id: str) -> JsonObject:
        return copy.deepcopy(self._item(conversation_id, item_id))

    def delete_item(self, conversation_id: str, item_id: str) -> JsonObject:
        self._item(conversation_id, item_id)
        conversation = self._conversations[conversation_id]
        del conversation.items[item_id]
        return copy.deepcopy(conversation.record)

    def item_count(self, conversation_id: str) -> int:
        return len(self._conversation(conversation_id).items)

    # -- fault knobs -----------------------------------------------------------------------------------------
    def inject_faults(self, status: int, count: int = 1, *, retry_after: float | None = None) -> None:
        """Make the next `count` requests answer `status` (queued after faults already armed)."""
        if not 400 <= status <= 599 or count < 1:
            raise ValueError(f"a fault needs a 4xx/5xx status and count >= 1, got {status}, {count}")
        self._faults.append(_FaultPlan(status=status, remaining=count, retry_after=retry_after))

    def take_fault(self, method: str, path: str, query: Mapping[str, str]) -> ConversationApiError | None:
        """The fault this request must answer with, if any (store faults first, then the query knob)."""
        if self._faults:
            plan = self._faults[0]
            plan.remaining -= 1
            if plan.remaining <= 0:
                self._faults.pop(0)
            return _fault_error(plan.status, plan.retry_after)
        if FAULT_STATUS_PARAM not in query:
            return None
        status = _knob_int(query, FAULT_STATUS_PARAM, default=0, low=400, high=599)
        count = _knob_int(query, FAULT_COUNT_PARAM, default=1, low=1, high=1000)
        retry_after = _knob_seconds(query)
        key = (method, path, status, count, retry_after)
        remaining = self._query_faults.setdefault(key, count)
        if remaining <= 0:
            return None
        self._query_faults[key] = remaining - 1
        return _fault_error(status, retry_after)

    # -- lookups ---------------------------------------------------------------------------------------------
    def _conversation(self, conversation_id: str) -> _Conversation:
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            raise ConversationApiError(404, f"Conversation with id '{conversation_id}' not found.",
                                       param="conversation_id", code="conversation_not_found")
        return conversation

    def _item(self, conversation_id: str, item_id: str) -> JsonObject:
        item = self._conversation(conversation_id).items.get(item_id)
        if item is None:
            raise ConversationApiError(404, f"Item with id '{item_id}' not found in conversation "
                                            f"'{conversation_id}'.", param="item_id", code="item_not_found")
        return item


def _list_envelope(items: list[JsonObject], *, has_more: bool) -> JsonObject:
    return {"object": "list", "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": has_more}


def _knob_int(query: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid simulator knob '{name}': {raw!r}.", param=name) from None
    if not low <= value <= high:
        raise bad_request(f"Invalid simulator knob '{name}': {value} not in {low}..{high}.", param=name)
    return value


def _knob_seconds(query: Mapping[str, str]) -> float | None:
    raw = query.get(FAULT_RETRY_AFTER_PARAM)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise bad_request(f"Invalid simulator knob '{FAULT_RETRY_AFTER_PARAM}': {raw!r}.",
                           param=FAULT_RETRY_AFTER_PARAM)
    return value


def _check_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise bad_request("'metadata' must be an object of string keys and string values.", param="metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(f"'metadata' can have at most {MAX_METADATA_PAIRS} pairs.", param="metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise bad_request("'metadata' keys and values must be strings.", param="metadata")
        if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            raise bad_request(f"'metadata' keys are at most {MAX_METADATA_KEY_CHARS} characters and values "
                               f"at most {MAX_METADATA_VALUE_CHARS}.", param="metadata")
    return dict(metadata)


def _normalize_input_item(item: Any, index: int) -> JsonObject:
    """A client's input item as the API stores it: messages get `type`, `status` and a content-part list."""
    param = f"items[{index}]"
    if not isinstance(item, Mapping):
        raise bad_request(f"Invalid '{param}': expected an object.", param=param)
    stored = copy.deepcopy(dict(item))
    item_type = stored.get("type", "message")
    if not isinstance(item_type, str) or not item_type:
        raise bad_request(f"Invalid '{param}.type': expected a string.", param=f"{param}.type")
    item_id = stored.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id):
        raise bad_request(f"Invalid '{param}.id': expected a non-empty string.", param=f"{param}.id")
    stored["type"] = item_type
    if item_type != "message":
        return stored
    role = stored.get("role")
    if role not in MESSAGE_ROLES:
        raise bad_request(f"Invalid '{param}.role': {role!r}.", param=f"{param}.role")
    content = stored.get("content")
    if isinstance(content, str):
        # The SDK's ResponseOutputText requires `annotations`; input text has none.
        if role == "assistant":
            stored["content"] = [{"type": "output_text", "text": content, "annotations": []}]
        else:
            stored["content"] = [{"type": "input_text", "text": content}]
    elif not isinstance(content, list) or not all(
            isinstance(part, Mapping) and isinstance(part.get("type"), str) for part in content):
        raise bad_request(f"Invalid '{param}.content': expected a string or an array of content parts "
                           "with a string 'type'.", param=f"{param}.content")
    stored.setdefault("status", "completed")
    return stored

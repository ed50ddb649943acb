"""The simulator's Conversations REST routes: aiohttp handlers in front of `ConversationStore`.

Boundary: HTTP only (auth header, JSON bodies, query parsing, error responses); every decision about
conversations and items is the store's (`relay.simulator.rest_store`, which documents the endpoints).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from relay.simulator.rest_store import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ConversationApiError,
    ConversationStore,
    JsonObject,
    bad_request,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(error: ConversationApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=error.headers)


def _authorized(request: web.Request, api_key: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() not in ("api-key", "bearer"):
        return False
    return secrets.compare_digest(credential.strip().encode(), api_key.encode())


async def _json_body(request: web.Request, *, required: bool) -> JsonObject:
    """The request body as a JSON object; an empty body is `{}` unless the endpoint requires one."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ConversationApiError(413, f"Request body too large: {exc.text}",
                                   code="body_too_large") from None
    if not raw.strip():
        if required:
            raise bad_request("A JSON object body is required.", code="invalid_json")
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad_request("We could not parse the JSON body of your request.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return body


def _limit_from_query(request: web.Request) -> int:
    raw = request.query.getall("limit", [])
    if not raw:
        return DEFAULT_LIMIT
    if len(raw) > 1:
        raise bad_request("'limit' given more than once.", param="limit")
    text = raw[0].strip()
    if not text.lstrip("-").isdigit() or len(text) > 12:
        raise bad_request(f"Invalid 'limit': {raw[0]!r}. Expected an integer between 1 and {MAX_LIMIT}.",
                           param="limit")
    return int(text)


def _single_query(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_request(f"'{name}' given more than once.", param=name)
    return values[0] if values else None


def add_conversation_routes(app: web.Application, store: ConversationStore, *, api_key: str | None) -> None:
    """Mount the Conversations REST endpoints under `/v1` on `app`, served from `store`."""

    def endpoint(handler: Callable[[web.Request], Awaitable[Any]], status: int = 200) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            store.requests_served += 1
            try:
                if api_key is not None and not _authorized(request, api_key):
                    raise ConversationApiError(
                        401, "Missing or invalid credentials: send 'Authorization: Api-Key <key>' or "
                             "'Authorization: Bearer <token>'.", code="invalid_api_key")
                fault = store.take_fault(request.method, request.path, request.query)
                if fault is not None:
                    raise fault
                return web.json_response(await handler(request), status=status)
            except ConversationApiError as error:
                return _error_response(error)
        return wrapped

    async def create_conversation(request: web.Request) -> JsonObject:
        body = await _json_body(request, required=False)
        items = body.get("items")
        if items is not None and not isinstance(items, list):
            raise bad_request("'items' must be an array of item objects.", param="items")
        return store.create_conversation(metadata=body.get("metadata"), items=items)

    async def get_conversation(request: web.Request) -> JsonObject:
        return store.get_conversation(request.match_info["conversation_id"])

    async def update_conversation(request: web.Request) -> JsonObject:
        conversation_id = request.match_info["conversation_id"]
        store.get_conversation(conversation_id)  # 404 before 400, as for every other call on it
        body = await _json_body(request, required=True)
        if "metadata" not in body:
            raise bad_request("Missing required parameter: 'metadata'.", param="metadata",
                               code="missing_required_parameter")
        return store.update_conversation(conversation_id, body["metadata"])

    async def delete_conversation(request: web.Request) -> JsonObject:
        return store.delete_conversation(request.match_info["conversation_id"])

    async def list_items(request: web.Request) -> JsonObject:
        conversation_id = request.match_info["conversation_id"]
        store.get_conversation(conversation_id)
        order = _single_query(request, "order")
        return store.list_items(conversation_id, limit=_limit_from_query(request),
                                order="desc" if order is None else order,
                                after=_single_query(request, "after"))

    async def create_items(request: web.Request) -> JsonObject:
        conversation_id = request.match_info["conversation_id"]
        store.get_conversation(conversation_id)
        body = await _json_body(request, required=True)
        return store.create_items(conversation_id, body.get("items"))

    async def get_item(request: web.Request) -> JsonObject:
        return store.get_item(request.match_info["conversation_id"], request.match_info["item_id"])

    async def delete_item(request: web.Request) -> JsonObject:
        return store.delete_item(request.match_info["conversation_id"], request.match_info["item_id"])

    def not_allowed(allowed: str) -> Handler:
        async def answer(request: web.Request) -> web.StreamResponse:
            error = ConversationApiError(405, f"Method {request.method} is not allowed on {request.path}.",
                                         code="method_not_allowed", headers={"Allow": allowed})
            return _error_response(error)
        return answer

    collection = "/v1/conversations"
    conversation = "/v1/conversations/{conversation_id}"
    items = "/v1/conversations/{conversation_id}/items"
    item = "/v1/conversations/{conversation_id}/items/{item_id}"
    router = app.router
    router.add_post(collection, endpoint(create_conversation))
    router.add_route("*", collection, not_allowed("POST"))
    router.add_get(conversation, endpoint(get_conversation), allow_head=False)
    router.add_post(conversation, endpoint(update_conversation))
    router.add_delete(conversation, endpoint(delete_conversation))
    router.add_route("*", conversation, not_allowed("GET, POST, DELETE"))
    router.add_get(items, endpoint(list_items), allow_head=False)
    router.add_post(items, endpoint(create_items))
    router.add_route("*", items, not_allowed("GET, POST"))
    router.add_get(item, endpoint(get_item), allow_head=False)
    router.add_delete(item, endpoint(delete_item))
    router.add_route("*", item, not_allowed("GET, DELETE"))

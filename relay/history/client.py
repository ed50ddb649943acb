"""Async client of the Conversations REST API (CONTRACT C9): list, page through, get, create and delete.

Boundary: HTTP through an aiohttp `ClientSession` the caller owns (one per process: `create_http_session`), to
the REST base (`relay.settings.rest_base_url`) with the relay's upstream credentials. Answers become typed
results; failures become the `RestError` subclasses below, whose messages name the cause. Retries happen
only when the caller passes a `RetryPolicy` with more than one try (`history` does; the serve proxy never
retries and does not use this module's request path at all). Prints nothing; retry notices go to an
optional callback.

    RestError (relay.errors)
    ├── ConversationsApiError       the API answered with an error status (status, api_message, body)
    │   ├── BadRequest              400: the API's own message is shown
    │   ├── AuthenticationFailed    401: the key or IAM token is bad or expired
    │   ├── PermissionDenied        403: missing role ai.models.user / key scope
    │   ├── NotFound                404: unknown conversation or item
    │   ├── QuotaExceeded           429: quota or rate limit
    │   ├── ServerError             5xx
    │   └── UnexpectedStatus        anything else
    ├── RestConnectionError         the API could not be reached or timed out
    └── InvalidResponse             a success answer that is not the documented JSON
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from relay.errors import RestError

JsonObject = dict[str, Any]
AuthSource = Mapping[str, str] | Callable[[], Mapping[str, str]]

DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=60, connect=10, sock_read=30)
MAX_RETRY_AFTER_SECONDS: Final = 30.0
# How much of an error body goes into a message: enough for any API message, bounded for HTML error pages.
MAX_ERROR_TEXT_CHARS: Final = 500
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


# -- errors ----------------------------------------------------------------------------------------


class ConversationsApiError(RestError):
    """The API answered with an error status."""

    def __init__(
        self, message: str, *, status: int, api_message: str, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.api_message = api_message
        self.body = body
        self.retry_after = retry_after


class BadRequest(ConversationsApiError):
    """400: the request was rejected; the API's message says why (e.g. `limit` out of 1..100)."""


class AuthenticationFailed(ConversationsApiError):
    """401: the API key or IAM token is bad or expired."""


class PermissionDenied(ConversationsApiError):
    """403: the credentials lack the role `ai.models.user` or the key lacks its scope."""


class NotFound(ConversationsApiError):
    """404: no such conversation or item."""


class QuotaExceeded(ConversationsApiError):
    """429: a quota or rate limit was hit."""


class ServerError(ConversationsApiError):
    """5xx: the API failed on its side."""


class UnexpectedStatus(ConversationsApiError):
    """Any other non-success status."""


class RestConnectionError(RestError):
    """The REST base could not be reached, or the answer did not arrive in time."""


class InvalidResponse(RestError):
    """A success status whose body is not the documented JSON."""


def _explain(status: int, reason: str, api_message: str, target: str) -> tuple[type[ConversationsApiError], str]:
    said = f" (API: {api_message})" if api_message else ""
    if status == 400:
        return BadRequest, f"400 Bad Request: {api_message or 'the API rejected the request'}"
    if status == 401:
        return AuthenticationFailed, (
            "401 Unauthorized: the API key or IAM token was rejected (bad or "
            f"expired); check YANDEX_API_KEY / YANDEX_IAM_TOKEN{said}"
        )
    if status == 403:
        return PermissionDenied, (
            "403 Forbidden: the credentials are valid but not allowed here: the "
            "service account needs the role ai.models.user in the folder (an API key "
            f"also needs the scope yc.ai.foundationModels.execute){said}"
        )
    if status == 404:
        return NotFound, f"404 Not Found: {target} does not exist (unknown or deleted){said}"
    if status == 429:
        return QuotaExceeded, f"429 Too Many Requests: quota or rate limit exceeded; try again later{said}"
    if 500 <= status <= 599:
        return ServerError, f"{status} {reason}: the API failed on its side{said}"
    return UnexpectedStatus, f"{status} {reason}: unexpected answer{said}"


def _api_message(body: Any, text: str) -> str:
    """The API's own message: OpenAI `{"error": {"message"}}`, gRPC-gateway `{"message"}`, or the raw text."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return " ".join(text.split())[:MAX_ERROR_TEXT_CHARS]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


# -- typed results ---------------------------------------------------------------------------------


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
            raise InvalidResponse(f"an item without a string 'id': {_preview(value)}")
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
            raise InvalidResponse(f"expected a list object with 'data', got {_preview(value)}")
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
            raise InvalidResponse(f"expected a conversation object, got {_preview(value)}")
        created_at = value.get("created_at")
        metadata = value.get("metadata")
        return cls(
            id=value["id"],
            created_at=created_at if isinstance(created_at, int) else None,
            metadata=metadata if isinstance(metadata, dict) else {},
            raw=value,
        )


def _preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 200 else text[:200] + "..."


# -- retry policy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_tries` attempts; waits `Retry-After` (capped) or exponential backoff with full jitter."""

    max_tries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_cap: float = MAX_RETRY_AFTER_SECONDS

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        # Full jitter: many clients hitting one quota do not retry in lockstep.
        return rng.uniform(ceiling / 2, ceiling)


NO_RETRY: Final = RetryPolicy(max_tries=1)
HISTORY_RETRY: Final = RetryPolicy()


@dataclass(frozen=True)
class RetryNotice:
    """Told to the `on_retry` callback before each wait."""

    attempt: int
    max_tries: int
    delay: float
    cause: str


def create_http_session(*, timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT) -> aiohttp.ClientSession:
    """The process's HTTP session for the REST API: pooled, keep-alive connections (reused across calls)."""
    connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)
    # aiohttp (3.14 client.py `_request`) re-sends a GET/HEAD/PUT/DELETE/OPTIONS once, unasked, when its
    # connection fails with ServerDisconnectedError/ClientOSError, whether or not it was a reused keep-alive
    # one. The proxy must never retry (C4, C9) and `history` counts its tries itself (at most 4), so that hidden
    # retry is off. There is no public switch (no session or per-request option, and a dedicated or
    # `force_close` connector does not help since fresh connections are retried too); this is the attribute
    # aiohttp's own `test_utils.TestClient` clears for the same reason. tests/test_review_server_proxy_retry.py
    # fails if an aiohttp upgrade renames it.
    session._retry_connection = False
    return session


# -- the client ------------------------------------------------------------------------------------


class ConversationsClient:
    """Calls of the Conversations REST API on one base URL, through a caller-owned session."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        auth: AuthSource,
        *,
        retry: RetryPolicy = NO_RETRY,
        on_retry: Callable[[RetryNotice], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._auth = auth
        self._retry = retry
        self._on_retry = on_retry
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._log = structlog.get_logger()

    # -- conversations
    async def create_conversation(
        self, *, metadata: Mapping[str, str] | None = None, items: Iterable[Mapping[str, Any]] | None = None
    ) -> Conversation:
        body: JsonObject = {}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if items is not None:
            body["items"] = [dict(item) for item in items]
        return Conversation.from_json(
            await self._request("POST", ("conversations",), json_body=body, target="the conversations collection")
        )

    async def get_conversation(self, conversation_id: str) -> Conversation:
        return Conversation.from_json(
            await self._request("GET", ("conversations", _id(conversation_id)), target=f"conversation {conversation_id!r}")
        )

    async def update_conversation(self, conversation_id: str, metadata: Mapping[str, str]) -> Conversation:
        return Conversation.from_json(
            await self._request(
                "POST",
                ("conversations", _id(conversation_id)),
                json_body={"metadata": dict(metadata)},
                target=f"conversation {conversation_id!r}",
            )
        )

    async def delete_conversation(self, conversation_id: str) -> JsonObject:
        answer = await self._request(
            "DELETE", ("conversations", _id(conversation_id)), target=f"conversation {conversation_id!r}"
        )
        if not isinstance(answer, dict):
            raise InvalidResponse(f"expected a deletion object, got {_preview(answer)}")
        return answer

    # -- items
    async def create_items(self, conversation_id: str, items: Iterable[Mapping[str, Any]]) -> ItemPage:
        return ItemPage.from_json(
            await self._request(
                "POST",
                ("conversations", _id(conversation_id), "items"),
                json_body={"items": [dict(item) for item in items]},
                target=f"conversation {conversation_id!r}",
            )
        )

    async def list_items(
        self,
        conversation_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        include: Iterable[str] = (),
    ) -> ItemPage:
        """One page. Values are sent as given: the API, not this client, judges `limit` and `order`."""
        query: list[tuple[str, str]] = []
        if limit is not None:
            query.append(("limit", str(limit)))
        if order is not None:
            query.append(("order", order))
        if after is not None:
            query.append(("after", after))
        query.extend(("include[]", value) for value in include)
        return ItemPage.from_json(
            await self._request(
                "GET", ("conversations", _id(conversation_id), "items"), query=query, target=f"conversation {conversation_id!r}"
            )
        )

    async def iter_pages(
        self,
        conversation_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        include: Iterable[str] = (),
    ) -> AsyncIterator[ItemPage]:
        """Every page from `after` on, following `after=last_id` until `has_more` is false."""
        include = tuple(include)
        seen_cursors: set[str] = set()
        cursor = after
        while True:
            page = await self.list_items(conversation_id, limit=limit, order=order, after=cursor, include=include)
            yield page
            if not page.has_more:
                return
            # A server that says "more" without a new cursor would loop us forever.
            if page.last_id is None or not page.items or page.last_id in seen_cursors:
                raise InvalidResponse(
                    f"has_more is true but the page gives no new cursor (last_id={page.last_id!r}, {len(page.items)} items)"
                )
            seen_cursors.add(page.last_id)
            cursor = page.last_id

    async def iter_items(
        self,
        conversation_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        include: Iterable[str] = (),
    ) -> AsyncIterator[ConversationItem]:
        async for page in self.iter_pages(conversation_id, limit=limit, order=order, after=after, include=include):
            for item in page.items:
                yield item

    async def get_item(self, conversation_id: str, item_id: str, *, include: Iterable[str] = ()) -> ConversationItem:
        return ConversationItem.from_json(
            await self._request(
                "GET",
                ("conversations", _id(conversation_id), "items", _id(item_id)),
                query=[("include[]", value) for value in include],
                target=f"item {item_id!r} of conversation {conversation_id!r}",
            )
        )

    async def delete_item(self, conversation_id: str, item_id: str) -> Conversation:
        return Conversation.from_json(
            await self._request(
                "DELETE",
                ("conversations", _id(conversation_id), "items", _id(item_id)),
                target=f"item {item_id!r} of conversation {conversation_id!r}",
            )
        )

    # -- transport
    def _headers(self) -> dict[str, str]:
        auth = self._auth() if callable(self._auth) else self._auth
        return {"Accept": "application/json", **auth}

    async def _request(
        self,
        method: str,
        segments: tuple[str, ...],
        *,
        target: str,
        query: list[tuple[str, str]] | None = None,
        json_body: JsonObject | None = None,
    ) -> Any:
        # Encoded by hand so an id can never add path segments ("/" or ".." inside an id stay inside it).
        path = "/".join(_path_segment(segment) for segment in segments)
        url = URL(f"{self._base}/{path}", encoded=True)
        if query:
            url = url.with_query(query)
        # Retrying a POST after an answer could create twice; 429 is refused before any work, and a failed
        # connect sent nothing, so those two are safe for every method.
        idempotent = method in IDEMPOTENT_METHODS
        attempt = 0
        while True:
            attempt += 1
            retryable: bool
            cause: str
            retry_after: float | None = None
            try:
                return await self._attempt(method, url, target=target, json_body=json_body)
            except ConversationsApiError as exc:
                retryable = exc.status == 429 or (idempotent and 500 <= exc.status <= 599)
                retry_after = exc.retry_after
                cause = str(exc)
                failure: RestError = exc
            except RestConnectionError as exc:
                retryable = idempotent or isinstance(exc.__cause__, aiohttp.ClientConnectorError)
                cause = str(exc)
                failure = exc
            if not retryable or attempt >= self._retry.max_tries:
                raise failure
            delay = self._retry.delay(attempt, retry_after, self._rng)
            notice = RetryNotice(attempt=attempt, max_tries=self._retry.max_tries, delay=delay, cause=cause)
            self._log.debug(
                "relay.rest_retry",
                method=method,
                url=str(url.with_query(None)),
                attempt=attempt,
                delay=round(delay, 3),
                cause=cause,
            )
            if self._on_retry is not None:
                self._on_retry(notice)
            await self._sleep(delay)

    async def _attempt(self, method: str, url: URL, *, target: str, json_body: JsonObject | None) -> Any:
        where = f"{method} {url.with_query(None)}"
        try:
            async with self._http.request(method, url, json=json_body, headers=self._headers()) as response:
                text = await response.text(errors="replace")
                status = response.status
                reason = response.reason or ""
                retry_after_header = response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise RestConnectionError(f"{where}: no answer in time ({exc.__class__.__name__})") from exc
        except aiohttp.ClientError as exc:
            raise RestConnectionError(f"{where}: cannot reach the REST API: {exc}") from exc
        try:
            body: Any = json.loads(text) if text.strip() else None
        except ValueError:
            body = None
            if 200 <= status <= 299:
                raise InvalidResponse(f"{where}: answer {status} is not JSON: {_preview(text)}") from None
        if 200 <= status <= 299:
            return body
        kind, message = _explain(status, reason, _api_message(body, text), target)
        raise kind(
            message,
            status=status,
            api_message=_api_message(body, text),
            body=body,
            retry_after=parse_retry_after(retry_after_header),
        )


def _path_segment(segment: str) -> str:
    # quote() leaves dots alone, and a bare "." or ".." segment would be resolved away by the server.
    if segment in (".", ".."):
        return "%2E" * len(segment)
    return quote(segment, safe="")


def _id(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id must be a non-empty string, got {value!r}")
    return value

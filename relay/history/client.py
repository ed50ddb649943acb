"""Async client of the Conversations REST API (docs/history.md): list, page through, get, create and delete.

Boundary: HTTP through an aiohttp `ClientSession` the caller owns (one per process: `create_http_session`), to
the REST base (`relay.settings.rest_base_url`) with the relay's upstream credentials. Answers become typed
results; failures become the `RestError` subclasses below, whose messages name the cause. Retries happen
only when the caller passes a `RetryPolicy` with more than one try (`history` does; the serve proxy never
retries and does not use this module's request path at all). Prints nothing; retry notices go to an
optional callback.
The errors are in `relay.history.errors`, the typed results in `relay.history.models`.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from relay.errors import RestError
from relay.history.errors import (
    ConversationsApiError,
    InvalidResponse,
    RestConnectionError,
    api_message_of,
    explain_status,
    parse_retry_after,
)
from relay.history.models import Conversation, ConversationItem, ItemPage, preview

JsonObject = dict[str, Any]
AuthSource = Mapping[str, str] | Callable[[], Mapping[str, str]]

DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=60, connect=10, sock_read=30)
MAX_RETRY_AFTER_SECONDS: Final = 30.0
# How much of an error body goes into a message: enough for any API message, bounded for HTML error pages.
MAX_ERROR_TEXT_CHARS: Final = 500
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
# `iter_pages` stops after this many pages (a million items at the API's largest page): a server that keeps
# handing out new cursors must not keep a listing, and its set of followed cursors, growing forever.
MAX_PAGES: Final = 10_000


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


async def _failures_are_final(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
    """aiohttp re-sends an idempotent request once, unasked, when its connection fails with `ClientOSError` or
    `ServerDisconnectedError`. The REST proxy must never retry (a client's request is the client's to repeat) and
    `history` counts its own tries, so those two leave the middleware chain as their parent class,
    `ClientConnectionError`, which aiohttp reports without re-sending."""
    try:
        return await handler(request)
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        raise aiohttp.ClientConnectionError(str(exc) or exc.__class__.__name__) from exc


def create_http_session(*, timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT) -> aiohttp.ClientSession:
    """The process's HTTP session for the REST API: pooled, keep-alive connections (reused across calls), and no
    request ever sent twice by the library itself."""
    connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, raise_for_status=False, middlewares=(_failures_are_final,)
    )


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
            raise InvalidResponse(f"expected a deletion object, got {preview(answer)}")
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
        max_pages: int = MAX_PAGES,
    ) -> AsyncIterator[ItemPage]:
        """Every page from `after` on, following `after=last_id` until `has_more` is false.

        A server that answers "more" without moving on (no cursor, no items, or a page ending on a cursor already
        followed) ends the walk with `InvalidResponse`; a page that ends on a followed cursor goes back over items
        already yielded, so it is refused before any of them is yielded twice. So does a walk that would go past
        `max_pages` pages."""
        include = tuple(include)
        seen_cursors: set[str] = set()
        cursor = after
        pages = 0
        while True:
            if pages >= max_pages:
                raise InvalidResponse(
                    f"stopped after {max_pages} pages with has_more still true; the listing goes on after={cursor!r}"
                )
            pages += 1
            page = await self.list_items(conversation_id, limit=limit, order=order, after=cursor, include=include)
            if page.last_id is not None and page.last_id in seen_cursors:
                raise InvalidResponse(
                    f"the API went back to a page already listed (last_id={page.last_id!r} again): no new cursor"
                )
            yield page
            if not page.has_more:
                return
            # A server that says "more" without a new cursor would loop us forever.
            if page.last_id is None or not page.items:
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
        max_pages: int = MAX_PAGES,
    ) -> AsyncIterator[ConversationItem]:
        async for page in self.iter_pages(
            conversation_id, limit=limit, order=order, after=after, include=include, max_pages=max_pages
        ):
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
        except (ValueError, RecursionError) as exc:
            # RecursionError: arrays or objects nested deeper than the parser's stack (`[[[[...`).
            body = None
            if 200 <= status <= 299:
                what = "is JSON nested too deeply to read" if isinstance(exc, RecursionError) else "is not JSON"
                raise InvalidResponse(f"{where}: answer {status} {what}: {preview(text)}") from None
        if 200 <= status <= 299:
            return body
        kind, message = explain_status(status, reason, api_message_of(body, text), target)
        raise kind(
            message,
            status=status,
            api_message=api_message_of(body, text),
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

"""relay.history.client against the real simulator REST store on 127.0.0.1: pages, errors, retries."""

from __future__ import annotations

import random
import socket

import aiohttp
import pytest
from aiohttp import web

from relay.errors import RestError
from relay.history.client import (
    HISTORY_RETRY,
    NO_RETRY,
    ConversationsClient,
    RetryNotice,
    RetryPolicy,
    create_http_session,
)
from relay.history.errors import (
    AuthenticationFailed,
    BadRequest,
    InvalidResponse,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RestConnectionError,
    ServerError,
    UnexpectedStatus,
    parse_retry_after,
)
from relay.history.models import (
    ConversationItem,
)
from tests.support.conversations_fixtures import UPSTREAM_KEY, RestSim, running_sim, serving

AUTH = {"Authorization": f"Api-Key {UPSTREAM_KEY}"}
# Tiny waits so retry tests stay fast; Retry-After given by the server still wins over these.
FAST_RETRY = RetryPolicy(max_tries=4, backoff_base=0.001, backoff_max=0.002)


class RecordedSleeps:
    """Stands in for asyncio.sleep: records the waits the client asks for, without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _client(http: aiohttp.ClientSession, sim: RestSim, *, retry: RetryPolicy = NO_RETRY,
            sleep: RecordedSleeps | None = None, notices: list[RetryNotice] | None = None,
            auth: dict[str, str] | None = None) -> ConversationsClient:
    return ConversationsClient(http, sim.base_url, AUTH if auth is None else auth, retry=retry,
                               sleep=sleep or RecordedSleeps(), rng=random.Random(7),
                               on_retry=notices.append if notices is not None else None)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_iter_items_returns_250_items_once_each_in_order(order: str) -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, ids = sim.conversation_with_items(250)
        client = _client(http, sim)
        items = [item async for item in client.iter_items(conversation_id, limit=100, order=order)]
        assert [item.id for item in items] == (ids if order == "asc" else ids[::-1])
        assert len({item.id for item in items}) == 250
        assert len([seen for seen in sim.seen if seen.raw_path.endswith("/items")]) == 3


async def test_iter_items_starts_after_the_cursor() -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, ids = sim.conversation_with_items(30)
        client = _client(http, sim)
        items = [item.id async for item in client.iter_items(conversation_id, limit=7, order="asc",
                                                             after=ids[9])]
        assert items == ids[10:]


async def test_list_items_sends_limit_order_after_and_repeated_include() -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, ids = sim.conversation_with_items(5)
        page = await _client(http, sim).list_items(conversation_id, limit=2, order="asc", after=ids[0],
                                                   include=["a.b", "c.d"])
        assert [item.id for item in page.items] == ids[1:3]
        assert page.first_id == ids[1] and page.last_id == ids[2] and page.has_more is True
        include = "include%5B%5D=a.b&include%5B%5D=c.d"
        assert sim.seen[-1].raw_query == f"limit=2&order=asc&after={ids[0]}&{include}"


async def test_the_http_session_reuses_one_connection() -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, _ = sim.conversation_with_items(50)
        assert len([item async for item in _client(http, sim).iter_items(conversation_id, limit=10)]) == 50
        assert len(sim.seen) == 5
        assert len({seen.peer_port for seen in sim.seen}) == 1


@pytest.mark.parametrize(("limit", "param"), [(0, "limit"), (101, "limit")])
async def test_out_of_range_limit_is_sent_and_the_api_message_shown(limit: int, param: str) -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, _ = sim.conversation_with_items(1)
        with pytest.raises(BadRequest) as caught:
            await _client(http, sim).list_items(conversation_id, limit=limit)
        assert caught.value.status == 400
        assert "Invalid 'limit'" in str(caught.value) and "between 1 and 100" in str(caught.value)
        assert sim.seen[-1].raw_query == f"limit={limit}"


async def test_wrong_key_is_authentication_failed_naming_the_key() -> None:
    async with running_sim() as sim, create_http_session() as http:
        with pytest.raises(AuthenticationFailed) as caught:
            await _client(http, sim, auth={"Authorization": "Api-Key wrong"}).list_items("conv_x")
        assert "401" in str(caught.value) and "bad or expired" in str(caught.value)
        assert "YANDEX_API_KEY" in str(caught.value)


async def test_forbidden_is_permission_denied_naming_the_role() -> None:
    async with running_sim() as sim, create_http_session() as http:
        sim.store.inject_faults(403, 1)
        with pytest.raises(PermissionDenied) as caught:
            await _client(http, sim, retry=FAST_RETRY).list_items("conv_x")
        assert "ai.models.user" in str(caught.value) and "403" in str(caught.value)
        assert len(sim.seen) == 1  # 403 is not retried


async def test_unknown_conversation_is_not_found_naming_it() -> None:
    async with running_sim() as sim, create_http_session() as http:
        with pytest.raises(NotFound) as caught:
            await _client(http, sim, retry=FAST_RETRY).list_items("conv_missing")
        assert "conv_missing" in str(caught.value) and "404" in str(caught.value)
        assert len(sim.seen) == 1


async def test_unknown_item_is_not_found_naming_the_item() -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, _ = sim.conversation_with_items(1)
        with pytest.raises(NotFound) as caught:
            await _client(http, sim).get_item(conversation_id, "msg_missing")
        assert "item 'msg_missing'" in str(caught.value)


async def test_quota_is_quota_exceeded_after_the_last_try() -> None:
    async with running_sim() as sim, create_http_session() as http:
        sim.store.inject_faults(429, 10, retry_after=0)
        sleeps = RecordedSleeps()
        with pytest.raises(QuotaExceeded) as caught:
            await _client(http, sim, retry=FAST_RETRY, sleep=sleeps).list_items("conv_x")
        assert "429" in str(caught.value) and "quota" in str(caught.value)
        assert len(sim.seen) == 4 and sleeps.delays == [0, 0, 0]


async def test_injected_429_then_success_is_retried_honouring_retry_after() -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, ids = sim.conversation_with_items(3)
        sim.store.inject_faults(429, 2, retry_after=1)
        sleeps = RecordedSleeps()
        notices: list[RetryNotice] = []
        page = await _client(http, sim, retry=FAST_RETRY, sleep=sleeps, notices=notices).list_items(
            conversation_id, order="asc")
        assert [item.id for item in page.items] == ids
        assert sleeps.delays == [1.0, 1.0]
        assert [notice.attempt for notice in notices] == [1, 2] and "429" in notices[0].cause


async def test_injected_503_then_success_is_retried_with_backoff() -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, _ = sim.conversation_with_items(3)
        sim.store.inject_faults(503, 3)
        sleeps = RecordedSleeps()
        policy = RetryPolicy(max_tries=4, backoff_base=0.5, backoff_max=8)
        page = await _client(http, sim, retry=policy, sleep=sleeps).list_items(conversation_id)
        assert len(page.items) == 3 and len(sim.seen) == 4
        # Exponential with jitter: each wait within [ceiling/2, ceiling] of 0.5, 1, 2.
        for delay, ceiling in zip(sleeps.delays, (0.5, 1.0, 2.0), strict=True):
            assert ceiling / 2 <= delay <= ceiling


async def test_retry_after_beyond_thirty_seconds_is_capped() -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, _ = sim.conversation_with_items(1)
        sim.store.inject_faults(429, 1, retry_after=3600)
        sleeps = RecordedSleeps()
        await _client(http, sim, retry=HISTORY_RETRY, sleep=sleeps).list_items(conversation_id)
        assert sleeps.delays == [30.0]


async def test_without_a_retry_policy_nothing_is_retried() -> None:
    async with running_sim() as sim, create_http_session() as http:
        sim.store.inject_faults(503, 1)
        with pytest.raises(ServerError) as caught:
            await _client(http, sim).list_items("conv_x")
        assert caught.value.status == 503 and len(sim.seen) == 1


async def test_a_post_is_not_retried_after_a_server_error() -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, _ = sim.conversation_with_items(0)
        sim.store.inject_faults(503, 1)
        with pytest.raises(ServerError):
            await _client(http, sim, retry=FAST_RETRY).create_items(conversation_id, [{"role": "user",
                                                                                       "content": "x"}])
        assert len(sim.seen) == 1


async def test_a_post_is_retried_after_429() -> None:
    async with running_sim() as sim, create_http_session() as http:
        conversation_id, _ = sim.conversation_with_items(0)
        sim.store.inject_faults(429, 1, retry_after=0)
        page = await _client(http, sim, retry=FAST_RETRY).create_items(conversation_id,
                                                                       [{"role": "user", "content": "x"}])
        assert len(page.items) == 1 and sim.store.item_count(conversation_id) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_connection_is_retried_then_a_connection_error() -> None:
    sleeps = RecordedSleeps()
    async with create_http_session() as http:
        client = ConversationsClient(http, f"http://127.0.0.1:{_closed_port()}/v1", AUTH, retry=FAST_RETRY,
                                     sleep=sleeps)
        with pytest.raises(RestConnectionError) as caught:
            await client.list_items("conv_x")
    assert "cannot reach" in str(caught.value)
    assert len(sleeps.delays) == 3


async def test_full_client_crud_against_the_simulator() -> None:
    async with running_sim() as sim, create_http_session() as http:
        client = _client(http, sim)
        conversation = await client.create_conversation(metadata={"a": "1"},
                                                        items=[{"role": "user", "content": "hi"}])
        assert conversation.metadata == {"a": "1"} and conversation.created_at is not None
        page = await client.create_items(conversation.id, [{"role": "assistant", "content": "hello there"}])
        item = await client.get_item(conversation.id, page.items[0].id)
        assert item.role == "assistant" and item.text == "hello there"
        assert (await client.update_conversation(conversation.id, {"a": "2"})).metadata == {"a": "2"}
        assert (await client.get_conversation(conversation.id)).metadata == {"a": "2"}
        assert (await client.delete_item(conversation.id, item.id)).id == conversation.id
        assert (await client.delete_conversation(conversation.id))["deleted"] is True
        with pytest.raises(NotFound):
            await client.get_conversation(conversation.id)


@pytest.mark.parametrize("bad_id", ["a/b", "..", ".", "x?y=1", "x#y", "%2F", "conv x", "\u043a\u043e\u0442"])
async def test_odd_ids_stay_one_path_segment(bad_id: str) -> None:
    async with running_sim() as sim, create_http_session() as http:
        with pytest.raises(NotFound):
            await _client(http, sim).list_items(bad_id)
        assert sim.seen[-1].raw_path.startswith("/v1/conversations/")
        assert sim.seen[-1].raw_path.endswith("/items")
        assert sim.seen[-1].raw_path.count("/") == 4
        assert sim.seen[-1].raw_query == ""


async def test_empty_id_is_refused_before_any_request() -> None:
    async with running_sim() as sim, create_http_session() as http:
        with pytest.raises(ValueError):
            await _client(http, sim).list_items("")
        assert sim.seen == []


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, "not json", InvalidResponse),
    (200, '{"object": "list"}', InvalidResponse),
    (200, '{"object": "list", "data": [{"no": "id"}]}', InvalidResponse),
    (200, '{"object": "list", "data": [{"id": "a"}], "has_more": true, "last_id": null}', InvalidResponse),
    (418, "<html>teapot</html>", UnexpectedStatus),
    (502, "", ServerError),
])
async def test_a_misbehaving_server_gives_clean_errors(status: int, body: str,
                                                       expected: type[RestError]) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", answer)
    async with serving(app) as root, create_http_session() as http:
        client = ConversationsClient(http, f"{root}/v1", AUTH)
        with pytest.raises(expected):
            async for _ in client.iter_items("conv_x"):
                pass


async def test_has_more_with_a_repeated_cursor_stops_instead_of_looping() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "a"}], "first_id": "a", "last_id": "a",
                                  "has_more": True})

    app = web.Application()
    app.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(app) as root, create_http_session() as http:
        client = ConversationsClient(http, f"{root}/v1", AUTH)
        with pytest.raises(InvalidResponse, match="no new cursor"):
            async for _ in client.iter_items("conv_x"):
                pass


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412500.0) == 0.0
    for garbage in (None, "", "soon", "nan", "1e999x"):
        assert parse_retry_after(garbage) is None


def test_item_text_reads_text_transcripts_and_calls() -> None:
    def item(raw: dict[str, object]) -> ConversationItem:
        return ConversationItem.from_json({"id": "i", **raw})

    assert item({"type": "message", "content": [{"type": "input_audio", "transcript": "hi"},
                                                 {"type": "input_text", "text": "there"}]}).text == "hi there"
    assert item({"type": "message", "content": [{"type": "output_audio", "transcript": None}]}).text is None
    assert item({"type": "function_call", "name": "f", "arguments": "{}"}).text == "f({})"
    assert item({"type": "function_call_output", "output": "42"}).text == "42"
    assert item({"type": "mcp_list_tools"}).text is None

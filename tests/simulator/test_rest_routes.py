"""The simulator's Conversations REST routes over real HTTP on 127.0.0.1: shapes, auth, errors, the SDK."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI, AuthenticationError, BadRequestError, NotFoundError
from yarl import URL

from tests.support.conversations_fixtures import UPSTREAM_KEY, running_sim

AUTH = {"Authorization": f"Api-Key {UPSTREAM_KEY}"}


def _assert_openai_error(body: Any, *, param: str | None = None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param


async def test_both_api_key_and_bearer_are_accepted() -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as http:
        for header in (f"Api-Key {UPSTREAM_KEY}", f"Bearer {UPSTREAM_KEY}"):
            response = await http.post(f"{sim.base_url}/conversations", headers={"Authorization": header})
            assert response.status == 200
            assert (await response.json())["object"] == "conversation"


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {UPSTREAM_KEY}", "Api-Key", ""])
async def test_missing_or_wrong_key_gets_401_in_openai_shape(header: str | None) -> None:
    async with running_sim() as sim, aiohttp.ClientSession() as http:
        headers = {} if header is None else {"Authorization": header}
        response = await http.get(f"{sim.base_url}/conversations/conv_x/items", headers=headers)
        assert response.status == 401
        _assert_openai_error(await response.json())


async def test_without_an_api_key_no_auth_is_required() -> None:
    async with running_sim(api_key=None) as sim, aiohttp.ClientSession() as http:
        response = await http.post(f"{sim.base_url}/conversations", json={"metadata": {"a": "b"}})
        assert response.status == 200


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "limit=", "limit=1.5",
                                   "limit=1&limit=2", "order=up", "order=", "after=msg_unknown",
                                   "limit=99999999999999999999"])
async def test_bad_query_values_get_400(query: str) -> None:
    async with running_sim() as sim, aiohttp.ClientSession(headers=AUTH) as http:
        conversation_id, _ = sim.conversation_with_items(3)
        response = await http.get(f"{sim.base_url}/conversations/{conversation_id}/items?{query}")
        assert response.status == 400
        _assert_openai_error(await response.json())


async def test_include_is_accepted_and_ignored() -> None:
    async with running_sim() as sim, aiohttp.ClientSession(headers=AUTH) as http:
        conversation_id, ids = sim.conversation_with_items(3)
        response = await http.get(
            f"{sim.base_url}/conversations/{conversation_id}/items"
            "?include[]=message.output_text.logprobs&include[]=file_search_call.results&order=asc")
        assert response.status == 200
        assert [item["id"] for item in (await response.json())["data"]] == ids


@pytest.mark.parametrize("body", [b"{", b"[1,2]", b'"text"', b"\xff\xfe", b"[" * 100_000])
async def test_garbage_json_bodies_get_400(body: bytes) -> None:
    async with running_sim() as sim, aiohttp.ClientSession(headers=AUTH) as http:
        conversation_id, _ = sim.conversation_with_items(1)
        for url in (f"{sim.base_url}/conversations", f"{sim.base_url}/conversations/{conversation_id}/items",
                    f"{sim.base_url}/conversations/{conversation_id}"):
            response = await http.post(url, data=body, headers={"Content-Type": "application/json"})
            assert response.status == 400, url
            _assert_openai_error(await response.json())


async def test_oversized_body_gets_413_in_openai_shape() -> None:
    async with running_sim() as sim, aiohttp.ClientSession(headers=AUTH) as http:
        response = await http.post(f"{sim.base_url}/conversations", data=b" " * (2 * 1024 * 1024))
        assert response.status == 413
        _assert_openai_error(await response.json())


@pytest.mark.parametrize("path", ["/conversations/conv_nope", "/conversations/conv_nope/items",
                                  "/conversations/%2E%2E/items", "/conversations/a%2Fb/items",
                                  "/conversations/%00%ff/items/x"])
async def test_unknown_or_odd_ids_get_404(path: str) -> None:
    async with running_sim() as sim, aiohttp.ClientSession(headers=AUTH) as http:
        response = await http.get(URL(sim.base_url + path, encoded=True))
        assert response.status == 404
        _assert_openai_error(await response.json())


async def test_other_methods_get_405_with_allow() -> None:
    async with running_sim() as sim, aiohttp.ClientSession(headers=AUTH) as http:
        response = await http.put(f"{sim.base_url}/conversations/conv_x/items")
        assert response.status == 405
        assert response.headers["Allow"] == "GET, POST"
        _assert_openai_error(await response.json())


async def test_update_requires_metadata() -> None:
    async with running_sim() as sim, aiohttp.ClientSession(headers=AUTH) as http:
        conversation_id, _ = sim.conversation_with_items(0)
        response = await http.post(f"{sim.base_url}/conversations/{conversation_id}", json={})
        assert response.status == 400
        _assert_openai_error(await response.json(), param="metadata")


async def test_query_fault_knob_answers_503_then_serves() -> None:
    async with running_sim() as sim, aiohttp.ClientSession(headers=AUTH) as http:
        conversation_id, _ = sim.conversation_with_items(2)
        url = f"{sim.base_url}/conversations/{conversation_id}/items?sim_fault=503&sim_retry_after=0"
        first = await http.get(url)
        second = await http.get(url)
        assert first.status == 503 and first.headers["Retry-After"] == "0"
        _assert_openai_error(await first.json())
        assert second.status == 200 and len((await second.json())["data"]) == 2


async def test_openai_sdk_pages_through_the_simulator() -> None:
    async with running_sim() as sim:
        conversation_id, ids = sim.conversation_with_items(45)
        client = AsyncOpenAI(base_url=sim.base_url, api_key=UPSTREAM_KEY, max_retries=0)
        try:
            listed = [item.id async for item in client.conversations.items.list(conversation_id, limit=10,
                                                                                 order="asc")]
            newest = [item.id async for item in client.conversations.items.list(conversation_id, limit=100)]
        finally:
            await client.close()
        assert listed == ids
        assert newest == ids[::-1]
        list_calls = [seen for seen in sim.seen if seen.raw_path.endswith("/items")]
        assert len(list_calls) == 5 + 1  # 45 items at 10 a page, then one page of 100


async def test_openai_sdk_crud_round_trip() -> None:
    async with running_sim() as sim:
        client = AsyncOpenAI(base_url=sim.base_url, api_key=UPSTREAM_KEY, max_retries=0)
        try:
            conversation = await client.conversations.create(metadata={"who": "test"},
                                                             items=[{"role": "user", "content": "hi"}])
            created = await client.conversations.items.create(
                conversation.id, items=[{"type": "message", "role": "assistant", "content": "hello"}])
            item = await client.conversations.items.retrieve(str(created.data[0].id),
                                                             conversation_id=conversation.id)
            updated = await client.conversations.update(conversation.id, metadata={"who": "changed"})
            after_delete = await client.conversations.items.delete(str(item.id), conversation_id=conversation.id)
            remaining = [i async for i in client.conversations.items.list(conversation.id)]
            deleted = await client.conversations.delete(conversation.id)
            with pytest.raises(NotFoundError):
                await client.conversations.retrieve(conversation.id)
        finally:
            await client.close()
        assert conversation.metadata == {"who": "test"}
        assert item.type == "message" and item.role == "assistant"
        assert updated.metadata == {"who": "changed"}
        assert after_delete.id == conversation.id
        assert len(remaining) == 1 and remaining[0].role == "user"  # type: ignore[union-attr]
        assert deleted.deleted is True


async def test_openai_sdk_sees_limit_errors_and_bad_keys_as_its_own_exceptions() -> None:
    async with running_sim() as sim:
        conversation_id, _ = sim.conversation_with_items(1)
        good = AsyncOpenAI(base_url=sim.base_url, api_key=UPSTREAM_KEY, max_retries=0)
        bad = AsyncOpenAI(base_url=sim.base_url, api_key="nope", max_retries=0)
        try:
            with pytest.raises(BadRequestError, match="between 1 and 100"):
                await good.conversations.items.list(conversation_id, limit=101)
            with pytest.raises(AuthenticationError):
                await bad.conversations.items.list(conversation_id)
        finally:
            await good.close()
            await bad.close()


async def test_realtime_shaped_items_parse_in_the_sdk() -> None:
    async with running_sim() as sim:
        conversation_id = sim.store.create_conversation()["id"]
        sim.store.add_item(conversation_id, {
            "id": "item_audio1", "object": "realtime.item", "type": "message", "status": "completed",
            "role": "user", "content": [{"type": "input_audio", "transcript": "hello there"}]})
        client = AsyncOpenAI(base_url=sim.base_url, api_key=UPSTREAM_KEY, max_retries=0)
        try:
            items = [item async for item in client.conversations.items.list(conversation_id)]
        finally:
            await client.close()
        assert items[0].id == "item_audio1"
        assert items[0].content[0].transcript == "hello there"  # type: ignore[union-attr,index]

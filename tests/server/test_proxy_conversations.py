"""relay.server.proxy: `/v1/conversations...` forwarded to the real simulator REST store on 127.0.0.1.

The proxy is mounted in a small aiohttp app the way `serve` mounts it (after a client-token check), in front of
the simulator's REST routes, which record what reached them. The SDK and raw aiohttp clients talk to the proxy.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from openai import AsyncOpenAI, BadRequestError, NotFoundError
from yarl import URL

from relay.history.client import create_http_session
from relay.server.proxy import proxy_conversations
from tests.support.conversations_fixtures import UPSTREAM_KEY, RestSim, running_sim, serving

CLIENT_TOKEN = "client-token-abc123"
CLIENT_AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
UPSTREAM_AUTH = {"Authorization": f"Api-Key {UPSTREAM_KEY}"}


@dataclass
class Proxied:
    sim: RestSim
    base_url: str  # the proxy's http://127.0.0.1:PORT/v1


def proxy_app(http: aiohttp.ClientSession, rest_base: str) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        # Stands in for serve's client auth, which runs before the proxy.
        if request.headers.get("Authorization") != f"Bearer {CLIENT_TOKEN}":
            return web.json_response({"error": {"message": "unauthorized", "type": "invalid_request_error",
                                                "param": None, "code": "invalid_api_key"}}, status=401)
        return await proxy_conversations(request, http=http, rest_base=rest_base, auth_header=UPSTREAM_AUTH)

    app = web.Application()
    app.router.add_route("*", "/v1/conversations", handle)
    app.router.add_route("*", "/v1/conversations/{tail:.*}", handle)
    return app


@asynccontextmanager
async def proxied() -> AsyncIterator[Proxied]:
    async with running_sim() as sim, create_http_session() as http, \
            serving(proxy_app(http, sim.base_url)) as root:
        yield Proxied(sim=sim, base_url=f"{root}/v1")


async def test_openai_sdk_auto_paginates_through_the_proxy() -> None:
    async with proxied() as p:
        conversation_id, ids = p.sim.conversation_with_items(250)
        client = AsyncOpenAI(base_url=p.base_url, api_key=CLIENT_TOKEN, max_retries=0)
        try:
            oldest_first = [item.id async for item in client.conversations.items.list(
                conversation_id, limit=100, order="asc")]
            newest_first = [item.id async for item in client.conversations.items.list(conversation_id, limit=33)]
        finally:
            await client.close()
        assert oldest_first == ids
        assert newest_first == ids[::-1]


async def test_openai_sdk_crud_through_the_proxy() -> None:
    async with proxied() as p:
        client = AsyncOpenAI(base_url=p.base_url, api_key=CLIENT_TOKEN, max_retries=0)
        try:
            conversation = await client.conversations.create(metadata={"via": "proxy"})
            created = await client.conversations.items.create(conversation.id,
                                                              items=[{"role": "user", "content": "hello"}])
            with pytest.raises(BadRequestError, match="between 1 and 100"):
                await client.conversations.items.list(conversation.id, limit=0)
            await client.conversations.items.delete(str(created.data[0].id), conversation_id=conversation.id)
            deleted = await client.conversations.delete(conversation.id)
            with pytest.raises(NotFoundError):
                await client.conversations.retrieve(conversation.id)
        finally:
            await client.close()
        assert conversation.metadata == {"via": "proxy"}
        assert deleted.deleted is True


async def test_the_clients_authorization_and_cookies_never_reach_upstream() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        conversation_id, _ = p.sim.conversation_with_items(2)
        response = await http.get(f"{p.base_url}/conversations/{conversation_id}/items",
                                  headers={**CLIENT_AUTH, "Cookie": "session=abc", "X-Custom": "dropped"})
        assert response.status == 200
        seen = p.sim.seen[-1]
        assert seen.headers.getall("Authorization") == [f"Api-Key {UPSTREAM_KEY}"]
        assert "Cookie" not in seen.headers
        assert "X-Custom" not in seen.headers  # only allow-listed client headers travel with the key
        assert CLIENT_TOKEN not in str(dict(seen.headers))


async def test_the_upstream_key_never_reaches_the_client() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        conversation_id, _ = p.sim.conversation_with_items(2)
        answers = [
            await http.get(f"{p.base_url}/conversations/{conversation_id}/items", headers=CLIENT_AUTH),
            await http.get(f"{p.base_url}/conversations/conv_missing", headers=CLIENT_AUTH),
            await http.get(f"{p.base_url}/conversations/{conversation_id}/items?limit=0", headers=CLIENT_AUTH),
        ]
        for answer in answers:
            body = await answer.text()
            assert UPSTREAM_KEY not in body
            assert all(UPSTREAM_KEY not in value for value in answer.headers.values())


async def test_an_unauthenticated_client_is_refused_and_nothing_is_forwarded() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        response = await http.get(f"{p.base_url}/conversations/conv_x/items",
                                  headers={"Authorization": f"Api-Key {UPSTREAM_KEY}"})
        assert response.status == 401
        assert p.sim.seen == []


async def test_hop_by_hop_headers_are_dropped_both_ways() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        conversation_id, _ = p.sim.conversation_with_items(1)
        response = await http.get(f"{p.base_url}/conversations/{conversation_id}/items", headers={
            **CLIENT_AUTH, "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "5",
            "TE": "trailers", "Proxy-Authorization": "Basic eA==", "Upgrade": "h2c"})
        assert response.status == 200
        seen = p.sim.seen[-1].headers
        for name in ("X-Secret-Hop", "Keep-Alive", "TE", "Proxy-Authorization", "Upgrade"):
            assert name not in seen, name
        assert seen["Host"] == URL(p.sim.base_url).raw_authority  # the API's own Host, not the proxy's


async def test_the_apis_answer_headers_pass_but_its_cookies_cors_and_hop_by_hop_ones() -> None:
    sent = {
        "Content-Type": "application/json", "Retry-After": "3", "X-Request-Id": "req_1", "X-Api-Specific": "1",
        "Set-Cookie": "sid=upstream", "Access-Control-Allow-Origin": "*", "Connection": "X-Hop-Listed",
        "X-Hop-Listed": "1", "Keep-Alive": "timeout=5",
    }  # fmt: skip

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=b"{}", status=429, headers=sent)

    api = web.Application()
    api.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(api) as root, create_http_session() as http, serving(proxy_app(http, f"{root}/v1")) as proxy, \
            aiohttp.ClientSession() as client:
        response = await client.get(f"{proxy}/v1/conversations/conv_x/items", headers=CLIENT_AUTH)
        assert response.status == 429
        for name in ("Content-Type", "Retry-After", "X-Request-Id", "X-Api-Specific"):
            assert response.headers.get(name) == sent[name], name
        for name in ("Set-Cookie", "Access-Control-Allow-Origin", "X-Hop-Listed", "Keep-Alive"):
            assert name not in response.headers, name


async def test_no_header_the_client_did_not_send_is_made_up_on_the_way() -> None:
    async with proxied() as p, aiohttp.ClientSession(skip_auto_headers=("Accept", "Accept-Encoding",
                                                                        "User-Agent")) as http:
        conversation_id, _ = p.sim.conversation_with_items(1)
        response = await http.get(f"{p.base_url}/conversations/{conversation_id}/items", headers=CLIENT_AUTH)
        assert response.status == 200
        assert set(p.sim.seen[-1].headers) == {"Host", "Authorization"}


async def test_a_compressed_answer_passes_through_undecoded() -> None:
    async with proxied() as p, aiohttp.ClientSession(auto_decompress=False) as http:
        conversation_id, _ = p.sim.conversation_with_items(1)
        direct = await http.get(f"{p.sim.base_url}/conversations/{conversation_id}/items",
                                headers={**UPSTREAM_AUTH, "Accept-Encoding": "gzip"})
        via_proxy = await http.get(f"{p.base_url}/conversations/{conversation_id}/items",
                                   headers={**CLIENT_AUTH, "Accept-Encoding": "gzip"})
        assert via_proxy.status == 200
        assert p.sim.seen[-1].headers["Accept-Encoding"] == "gzip"
        assert via_proxy.headers["Content-Encoding"] == direct.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await via_proxy.read()) == gzip.decompress(await direct.read())


async def test_method_query_and_repeated_include_pass_through_byte_for_byte() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        conversation_id, ids = p.sim.conversation_with_items(5)
        query = f"limit=2&order=asc&after={ids[0]}&include[]=a.b&include%5B%5D=c.d&x=%20y"
        response = await http.get(URL(f"{p.base_url}/conversations/{conversation_id}/items?{query}",
                                      encoded=True), headers=CLIENT_AUTH)
        body = await response.json()
        assert response.status == 200
        assert [item["id"] for item in body["data"]] == ids[1:3]
        assert p.sim.seen[-1].raw_query == query
        assert p.sim.seen[-1].method == "GET"


async def test_status_and_openai_error_bodies_pass_through() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        conversation_id, _ = p.sim.conversation_with_items(1)
        for url, status in ((f"{p.base_url}/conversations/conv_missing/items", 404),
                            (f"{p.base_url}/conversations/{conversation_id}/items?limit=101", 400),
                            (f"{p.base_url}/conversations/{conversation_id}/items?order=sideways", 400)):
            direct = await http.get(url.replace(p.base_url, p.sim.base_url), headers=UPSTREAM_AUTH)
            via_proxy = await http.get(url, headers=CLIENT_AUTH)
            assert via_proxy.status == direct.status == status
            assert await via_proxy.read() == await direct.read()
            assert via_proxy.headers["Content-Type"] == direct.headers["Content-Type"]


async def test_request_bodies_stream_through_posts_and_deletes() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        conversation_id, _ = p.sim.conversation_with_items(0)

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"items": [{"role": "user", '
            await asyncio.sleep(0)
            yield b'"content": "streamed in two chunks"}]}'

        created = await http.post(f"{p.base_url}/conversations/{conversation_id}/items", data=chunks(),
                                  headers={**CLIENT_AUTH, "Content-Type": "application/json"})
        assert created.status == 200
        item = (await created.json())["data"][0]
        assert item["content"][0]["text"] == "streamed in two chunks"
        assert p.sim.seen[-1].headers.get("Transfer-Encoding") == "chunked"
        deleted = await http.delete(f"{p.base_url}/conversations/{conversation_id}/items/{item['id']}",
                                    headers=CLIENT_AUTH)
        assert deleted.status == 200 and p.sim.seen[-1].method == "DELETE"
        assert p.sim.store.item_count(conversation_id) == 0


async def test_garbage_bodies_get_the_apis_own_400() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        for body in (b"{", b"[]", b"\xff"):
            response = await http.post(f"{p.base_url}/conversations", data=body,
                                       headers={**CLIENT_AUTH, "Content-Type": "application/json"})
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "invalid_json"


async def test_a_large_body_arrives_with_its_length() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        conversation_id, _ = p.sim.conversation_with_items(0)
        text = "x" * 300_000
        response = await http.post(f"{p.base_url}/conversations/{conversation_id}/items", headers=CLIENT_AUTH,
                                   json={"items": [{"role": "user", "content": text}]})
        assert response.status == 200
        assert p.sim.store.list_items(conversation_id)["data"][0]["content"][0]["text"] == text
        assert p.sim.seen[-1].headers["Content-Length"] == str(response.request_info.headers["Content-Length"])


async def test_the_proxy_never_retries() -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        conversation_id, _ = p.sim.conversation_with_items(1)
        p.sim.store.inject_faults(503, 1, retry_after=0)
        response = await http.get(f"{p.base_url}/conversations/{conversation_id}/items", headers=CLIENT_AUTH)
        assert response.status == 503
        assert response.headers["Retry-After"] == "0"
        assert len(p.sim.seen) == 1


@pytest.mark.parametrize("path", ["/conversations/..%2F..%2Frealtime", "/conversations/%2E%2E/%2e%2e/x",
                                  "/conversations/./items", "/conversations/x%5C..%5C..%5Cresponses",
                                  # Servlet-style servers drop ";params" before resolving dot segments.
                                  "/conversations/..;/..;/responses", "/conversations/x/..%3Bjsessionid=1/..;x/realtime"])
async def test_dot_segments_never_climb_out_of_conversations(path: str) -> None:
    async with proxied() as p, aiohttp.ClientSession() as http:
        response = await http.get(URL(p.base_url + path, encoded=True), headers=CLIENT_AUTH)
        assert response.status == 404
        assert "error" in await response.json()
        assert p.sim.seen == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_rest_base_is_a_502_in_openai_shape() -> None:
    async with create_http_session() as http, \
            serving(proxy_app(http, f"http://127.0.0.1:{_closed_port()}/v1")) as root, \
            aiohttp.ClientSession() as client:
        response = await client.get(f"{root}/v1/conversations/conv_x/items", headers=CLIENT_AUTH)
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["code"] == "upstream_unavailable" and error["type"] == "server_error"
        assert UPSTREAM_KEY not in error["message"]


async def test_a_path_outside_conversations_is_not_forwarded() -> None:
    async with running_sim() as sim, create_http_session() as http:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await proxy_conversations(request, http=http, rest_base=sim.base_url,
                                             auth_header=UPSTREAM_AUTH)

        app = web.Application()
        app.router.add_route("*", "/v1/{tail:.*}", handle)
        async with serving(app) as root, aiohttp.ClientSession() as client:
            for path in ("/v1/realtime/client_secrets", "/v1/conversationsX", "/v1/responses"):
                response = await client.post(root + path, headers=CLIENT_AUTH)
                assert response.status == 404
        assert sim.seen == []

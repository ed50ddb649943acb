"""Attacks on a local relay with auth off (loopback bind, no tokens): a website the user visits must not be able
to use it, by cross-site WebSocket, by a CORS preflight or by DNS rebinding; the page, the SDK and local tools
on loopback keep working.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from relay.server.access import is_loopback_host, loopback_request_allowed
from tests.server.test_auth import upgrade_status
from tests.support.relay_fixtures import RunningRelay, running_relay, running_relay_process

EVIL = "https://evil.example"


async def raw_status(relay: RunningRelay, head: bytes) -> int:
    """Status of one hand-written request (any Host bytes at all), 0 when the relay closed without answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(head)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        return int(line.split()[1]) if line else 0
    finally:
        writer.close()


async def test_a_websocket_from_a_foreign_origin_is_refused_without_an_upstream(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        status, _ = await upgrade_status(relay, {"Origin": EVIL})
        assert status == 403
        assert relay.sim_handshakes == 0 and relay.log_files() == []


async def test_a_refused_request_is_logged_by_serve(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.get(relay.ws_url.replace("ws://", "http://"), headers={"Origin": EVIL}) as response:
            assert response.status == 403
        refused = await relay.wait_for_log("relay.request_refused")
        assert refused["origin"] == EVIL and refused["path"] == "/v1/realtime"


async def test_the_page_origin_and_originless_clients_still_connect(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        assert (await upgrade_status(relay, {"Origin": relay.base_url}))[0] == 101  # the page, same origin
        assert (await upgrade_status(relay))[0] == 101  # the SDK and tools send no Origin
        local = {"Host": f"localhost:{relay.port}", "Origin": f"http://localhost:{relay.port}"}
        assert (await upgrade_status(relay, local))[0] == 101


async def test_a_local_frontend_listed_in_allowed_origins_connects(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"allowed_origins": "http://localhost:5173"}) as relay:
        assert (await upgrade_status(relay, {"Origin": "http://localhost:5173"}))[0] == 101
        assert (await upgrade_status(relay, {"Origin": "http://localhost:5174"}))[0] == 403


async def test_listing_a_frontend_keeps_the_relays_own_page_working(tmp_path: Path) -> None:
    """allowed_origins adds origins; the page the relay serves itself (its own origin) still connects, reads the
    REST proxy and passes the auth probe."""
    async with running_relay(tmp_path, settings={"allowed_origins": "http://localhost:5173"}) as relay:
        own = {"Origin": relay.base_url}
        assert (await upgrade_status(relay, own))[0] == 101
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{relay.base_url}/relay/auth", headers=own) as response:
                assert response.status == 204
            async with http.post(f"{relay.base_url}/v1/conversations", json={}, headers=own) as response:
                assert response.status != 403
        assert (await upgrade_status(relay, {"Origin": EVIL}))[0] == 403


async def test_a_cross_origin_preflight_and_read_of_the_rest_proxy_are_refused(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        preflight = {"Origin": EVIL, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "content-type"}
        async with http.options(f"{relay.base_url}/v1/conversations", headers=preflight) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.post(f"{relay.base_url}/v1/conversations", json={}, headers={"Origin": EVIL}) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_dns_rebinding_a_foreign_host_name_is_refused_on_every_route(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        for path in ("/", "/v1/conversations", "/metrics", "/relay/auth"):
            rebound = {"Host": f"attacker.example:{relay.port}"}
            async with http.get(relay.base_url + path, headers=rebound) as response:
                assert response.status == 403, path
        assert (await upgrade_status(relay, {"Host": f"attacker.example:{relay.port}"}))[0] == 403
        assert relay.sim_handshakes == 0


@pytest.mark.parametrize(
    "host",
    [
        b"",
        b"attacker.example",
        b"127.0.0.1.attacker.example",
        b"localhost.attacker.example",
        b"127.0.0.1:abc",
        b"127.0.0.1:80:80",
        b"[::1",
        b"[::1]x",
        b"user@127.0.0.1",
        b"10.0.0.1",
        b"\xff\xfe",
        b"0x7f000001",
    ],
)
async def test_garbage_host_headers_are_refused_not_crashed_on(tmp_path: Path, host: bytes) -> None:
    async with running_relay(tmp_path) as relay:
        status = await raw_status(relay, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        assert status in (400, 403)
        ok = await raw_status(relay, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert ok == 200


@pytest.mark.parametrize("settings", [{}, {"client_tokens": "tok"}], ids=["auth off", "auth on"])
async def test_a_second_host_or_origin_header_is_a_400_whatever_the_first_says(tmp_path: Path, settings: dict[str, str]) -> None:
    async with running_relay(tmp_path, settings=settings) as relay:
        own = f"127.0.0.1:{relay.port}".encode()
        upgrade = b"GET /v1/realtime HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        upgrade += b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer tok\r\n"
        for extra in (
            b"Host: " + own + b"\r\nHost: evil.example\r\n",
            b"Host: " + own + b"\r\nOrigin: http://" + own + b"\r\nOrigin: https://evil.example\r\n",
        ):
            assert await raw_status(relay, upgrade + extra + b"\r\n") == 400
            healthz = b"GET /healthz HTTP/1.1\r\n" + extra + b"Connection: close\r\n\r\n"
            assert await raw_status(relay, healthz) == 400
        assert relay.sim_handshakes == 0
        assert await raw_status(relay, upgrade + b"Host: " + own + b"\r\n\r\n") == 101


async def test_loopback_names_with_any_port_are_served(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        for host in (b"127.0.0.1", b"127.0.0.1:1", b"localhost:65535", b"LOCALHOST", b"[::1]:8080", b"[::1]", b"127.1.2.3:80"):
            head = b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
            assert await raw_status(relay, head) == 200, host


async def test_with_client_tokens_the_host_rule_gives_way_to_token_auth(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"client_tokens": "tok"}) as relay, aiohttp.ClientSession() as http:
        async with http.get(relay.base_url + "/healthz", headers={"Host": "relay.example.com"}) as response:
            assert response.status == 200  # a reverse proxy's name; tokens guard everything but public routes


def test_the_rule_itself() -> None:
    assert loopback_request_allowed("127.0.0.1:8080", None, ())
    assert loopback_request_allowed("127.0.0.1:8080", "http://127.0.0.1:8080", ())
    assert not loopback_request_allowed("127.0.0.1:8080", "http://127.0.0.1:8081", ())
    assert not loopback_request_allowed("127.0.0.1:8080", "https://127.0.0.1:8080", ())
    assert loopback_request_allowed("127.0.0.1:8080", "https://127.0.0.1:8080", (), "https")  # serve with TLS
    assert not loopback_request_allowed("127.0.0.1:8080", "http://127.0.0.1:8080", (), "https")
    assert not loopback_request_allowed("127.0.0.1:8080", "null", ())
    assert loopback_request_allowed("127.0.0.1:8080", "null", ("null",))
    assert not loopback_request_allowed(None, None, ())
    assert not is_loopback_host("[::ffff:7f00:1]x")
    assert is_loopback_host("[::1]:1")

"""Cross-origin embedding: CORS headers only for origins listed in allowed_origins, never by default."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support.relay_fixtures import running_relay

APP = "https://app.example"


async def test_a_preflight_from_a_listed_origin_is_answered_without_a_token(tmp_path: Path) -> None:
    settings = {"client_tokens": "tok", "allowed_origins": APP}
    async with running_relay(tmp_path, settings=settings) as relay, aiohttp.ClientSession() as http:
        headers = {"Origin": APP, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
        async with http.options(f"{relay.base_url}/relay/auth", headers=headers) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == APP
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


async def test_no_origin_gets_cors_headers_by_default(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"client_tokens": "tok"}) as relay, aiohttp.ClientSession() as http:
        preflight = {"Origin": APP, "Access-Control-Request-Method": "GET"}
        async with http.options(f"{relay.base_url}/relay/auth", headers=preflight) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
        good = {"Origin": APP, "Authorization": "Bearer tok"}
        async with http.get(f"{relay.base_url}/relay/auth", headers=good) as response:
            assert response.status == 204
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_allowed_origins_get_cors_headers_and_others_do_not(tmp_path: Path) -> None:
    settings = {"client_tokens": "tok", "allowed_origins": APP}
    async with running_relay(tmp_path, settings=settings) as relay, aiohttp.ClientSession() as http:
        good = {"Origin": APP, "Authorization": "Bearer tok"}
        async with http.get(f"{relay.base_url}/relay/auth", headers=good) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == APP
        async with http.get(f"{relay.base_url}/static/relay-client.js", headers={"Origin": APP}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == APP
        evil = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        async with http.options(f"{relay.base_url}/relay/auth", headers=evil) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_the_streamed_conversations_proxy_carries_cors_headers_for_a_listed_origin(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"allowed_origins": APP}) as relay, aiohttp.ClientSession() as http:
        async with http.post(f"{relay.base_url}/v1/conversations", json={}, headers={"Origin": APP}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == APP


async def test_health_routes_carry_no_cors_headers(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"allowed_origins": APP}) as relay, aiohttp.ClientSession() as http:
        async with http.get(f"{relay.base_url}/metrics", headers={"Origin": APP}) as response:
            assert "Access-Control-Allow-Origin" not in response.headers

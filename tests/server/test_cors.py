"""Cross-origin embedding: CORS on the routes a page on another origin calls, limited by allowed_origins."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support.relay_fixtures import running_relay


async def test_a_preflight_for_the_auth_probe_is_answered_without_a_token(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"client_tokens": "tok"}) as relay, aiohttp.ClientSession() as http:
        headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
        async with http.options(f"{relay.base_url}/relay/auth", headers=headers) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


async def test_allowed_origins_get_cors_headers_and_others_do_not(tmp_path: Path) -> None:
    settings = {"client_tokens": "tok", "allowed_origins": "https://app.example"}
    async with running_relay(tmp_path, settings=settings) as relay, aiohttp.ClientSession() as http:
        good = {"Origin": "https://app.example", "Authorization": "Bearer tok"}
        async with http.get(f"{relay.base_url}/relay/auth", headers=good) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        async with http.get(f"{relay.base_url}/static/relay-client.js", headers={"Origin": "https://app.example"}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        evil = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        async with http.options(f"{relay.base_url}/relay/auth", headers=evil) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_the_streamed_conversations_proxy_carries_cors_headers(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.post(f"{relay.base_url}/v1/conversations", json={}, headers={"Origin": "https://app.example"}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"


async def test_health_routes_carry_no_cors_headers(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.get(f"{relay.base_url}/metrics", headers={"Origin": "https://app.example"}) as response:
            assert "Access-Control-Allow-Origin" not in response.headers

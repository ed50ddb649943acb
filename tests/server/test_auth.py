"""Client auth of `serve` (docs/security.md): static and minted tokens, the browser subprotocol, origins, probes.

Every refusal is checked on the relay's side (HTTP status before the upgrade) and on the simulator's side (no
upstream handshake, no session log).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.server.auth import TokenAuthority
from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.timing import seconds

STATIC = "static-token-for-tests"
SECRET = "shared-hmac-secret-for-replicas-0123456789"


async def upgrade_status(
    relay: RunningRelay, headers: dict[str, str] | None = None, protocols: tuple[str, ...] = (), query: str = ""
) -> tuple[int, str | None]:
    """(HTTP status of the upgrade: 101 when it succeeded, the chosen subprotocol). Closes the socket at once."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(
                relay.ws_url + query,
                headers=headers or {},
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_close=seconds(5)),
            ) as ws:
                first = await ws.receive_json(timeout=seconds(5))
                assert first["type"] == "session.created"
                return 101, ws.protocol
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, None


async def mint(relay: RunningRelay, token: str | None = STATIC, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else ({"json": body} if body is not None else {})
        async with http.post(relay.base_url + "/v1/realtime/client_secrets", headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


def assert_no_upstream(relay: RunningRelay) -> None:
    assert relay.sim_handshakes == 0
    assert relay.state.bridges == set()
    assert relay.log_files() == []


@pytest.fixture
async def relay(tmp_path: Path) -> Any:
    async with running_relay(tmp_path, settings={"client_tokens": STATIC, "token_secret": SECRET}) as running:
        yield running


async def test_missing_token_gets_401_and_no_upstream_socket(relay: RunningRelay) -> None:
    assert await upgrade_status(relay) == (401, None)
    assert_no_upstream(relay)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-token",
        "Bearer " + STATIC + "x",
        "Bearer " + STATIC[:-1],
        "Basic " + STATIC,
        STATIC,
        "Bearer",
        "Bearer    ",
        "Api-Key",
        "Bearer rt1.\u00b2.abc.def",
        "Bearer rt1.99999999999999999999.abc." + "A" * 43,
        "Bearer \u00e9\u00ff" + STATIC,
    ],
)
async def test_unknown_or_garbage_token_gets_401_and_no_upstream_socket(relay: RunningRelay, header: str) -> None:
    assert (await upgrade_status(relay, {"Authorization": header}))[0] == 401
    assert_no_upstream(relay)


def test_minted_tokens_start_with_ek_like_openai_client_secrets_and_older_unprefixed_ones_still_verify() -> None:
    # Client libraries tell an ephemeral key by `ek_` (the openai JavaScript SDK allows only those in a browser).
    authority = TokenAuthority([], SECRET.encode())
    for session in (None, {"instructions": "pinned"}):
        value = authority.mint(60, session=session).value
        assert value.startswith("ek_rt")
        grant = authority.minted_grant(value)
        assert grant is not None and grant.session == (session or {})
        assert authority.verify(value.removeprefix("ek_"))  # minted by a replica from before the prefix
        for forged in ("ek_" + value, "EK_" + value[3:], "xk_" + value[3:], "ek_" + value[3:-1]):
            assert not authority.verify(forged)


def test_minted_token_with_trailing_characters_does_not_verify() -> None:
    authority = TokenAuthority([], SECRET.encode())
    value = authority.mint(60).value
    assert authority.verify(value)
    for suffix in ("\n", " ", ".", "=", "\x00"):
        assert not authority.verify(value + suffix)


async def test_static_token_as_bearer_opens_a_session(relay: RunningRelay) -> None:
    assert await upgrade_status(relay, {"Authorization": f"Bearer {STATIC}"}) == (101, None)
    assert relay.sim_handshakes == 1


async def test_static_token_as_api_key_opens_a_session(relay: RunningRelay) -> None:
    assert (await upgrade_status(relay, {"Authorization": f"Api-Key {STATIC}"}))[0] == 101


async def test_browser_subprotocol_token_is_accepted_and_answered_with_realtime(relay: RunningRelay) -> None:
    status = await upgrade_status(relay, protocols=("realtime", f"openai-insecure-api-key.{STATIC}"))
    assert status == (101, "realtime")


async def test_browser_subprotocol_with_a_wrong_token_gets_401(relay: RunningRelay) -> None:
    status = await upgrade_status(relay, protocols=("realtime", "openai-insecure-api-key.nope"))
    assert status == (401, None)
    assert_no_upstream(relay)


@pytest.mark.parametrize("query", ["?token=" + STATIC, "?api_key=" + STATIC, "?authorization=Bearer%20" + STATIC])
async def test_token_in_the_query_string_is_never_accepted(relay: RunningRelay, query: str) -> None:
    assert (await upgrade_status(relay, query=query))[0] == 401
    assert_no_upstream(relay)


async def test_minted_token_opens_a_session(relay: RunningRelay) -> None:
    status, body = await mint(relay)
    assert status == 200
    assert set(body) == {"value", "expires_at"}
    assert abs(body["expires_at"] - (time.time() + relay.settings.token_ttl_seconds)) < 5
    assert await upgrade_status(relay, {"Authorization": f"Bearer {body['value']}"}) == (101, None)
    assert await upgrade_status(relay, protocols=("realtime", f"openai-insecure-api-key.{body['value']}")) == (101, "realtime")


async def test_expired_minted_token_gets_401(relay: RunningRelay) -> None:
    authority = TokenAuthority([], SECRET.encode())
    expired = authority.mint(10, now=time.time() - 11).value
    assert (await upgrade_status(relay, {"Authorization": f"Bearer {expired}"}))[0] == 401
    assert_no_upstream(relay)


async def test_tampered_minted_token_gets_401(relay: RunningRelay) -> None:
    _, body = await mint(relay)
    prefix, expires_at, nonce, signature = body["value"].split(".")
    later = f"{prefix}.{int(expires_at) + 3600}.{nonce}.{signature}"
    flipped = f"{prefix}.{expires_at}.{nonce}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"
    other_nonce = f"{prefix}.{expires_at}.{nonce}x.{signature}"
    for token in (later, flipped, other_nonce):
        assert (await upgrade_status(relay, {"Authorization": f"Bearer {token}"}))[0] == 401
    assert_no_upstream(relay)


async def test_token_from_a_replica_with_the_same_secret_file_verifies(tmp_path: Path) -> None:
    secret_file = tmp_path / "token-secret"
    secret_file.write_text(SECRET + "\n")
    common = {"client_tokens": STATIC, "token_secret_file": str(secret_file)}
    async with running_relay(tmp_path / "a", settings=common) as first, running_relay(tmp_path / "b", settings=common) as second:
        _, body = await mint(first)
        assert await upgrade_status(second, {"Authorization": f"Bearer {body['value']}"}) == (101, None)


async def test_token_from_a_replica_with_another_secret_gets_401(tmp_path: Path, relay: RunningRelay) -> None:
    async with running_relay(tmp_path / "other", settings={"client_tokens": STATIC, "token_secret": "another-secret-of-at-least-32-bytes!"}) as other:
        _, body = await mint(other)
    assert (await upgrade_status(relay, {"Authorization": f"Bearer {body['value']}"}))[0] == 401
    assert_no_upstream(relay)


async def test_client_secrets_needs_a_static_token(relay: RunningRelay) -> None:
    _, minted = await mint(relay)
    assert (await mint(relay, token=None))[0] == 401
    assert (await mint(relay, token="wrong"))[0] == 401
    status, body = await mint(relay, token=minted["value"])
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("ttl", [10, 7200])
async def test_client_secrets_honours_expires_after_within_bounds(relay: RunningRelay, ttl: int) -> None:
    status, body = await mint(relay, body={"expires_after": {"seconds": ttl}})
    assert status == 200
    assert abs(body["expires_at"] - (time.time() + ttl)) < 5


@pytest.mark.parametrize("expires_after", [{"anchor": "created_at"}, {}])
async def test_client_secrets_without_seconds_gets_the_default_lifetime(relay: RunningRelay, expires_after: Any) -> None:
    """As OpenAI's endpoint: `seconds` defaults (to `token_ttl_seconds` here)."""
    status, body = await mint(relay, body={"expires_after": expires_after})
    assert status == 200
    assert abs(body["expires_at"] - (time.time() + relay.settings.token_ttl_seconds)) < 5


@pytest.mark.parametrize(
    "body",
    [
        {"expires_after": {"seconds": 9}},
        {"expires_after": {"seconds": 7201}},
        {"expires_after": {"seconds": -1}},
        {"expires_after": {"seconds": "60"}},
        {"expires_after": {"seconds": 60.5}},
        {"expires_after": {"seconds": True}},
        {"expires_after": 60},
        [1, 2],
        "text",
    ],
)
async def test_client_secrets_refuses_bad_bodies_with_400(relay: RunningRelay, body: Any) -> None:
    status, answer = await mint(relay, body=body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"null", b"{" * 600 + b"}" * 600])
async def test_client_secrets_refuses_unparseable_bodies_with_400(relay: RunningRelay, raw: bytes) -> None:
    assert (await mint(relay, raw=raw))[0] == 400


async def test_client_secrets_with_an_empty_body_uses_the_default_ttl(relay: RunningRelay) -> None:
    status, body = await mint(relay, raw=b"")
    assert status == 200
    assert abs(body["expires_at"] - (time.time() + relay.settings.token_ttl_seconds)) < 5


async def test_auth_probe_answers_204_for_a_valid_token_and_401_otherwise(relay: RunningRelay) -> None:
    _, minted = await mint(relay)
    async with aiohttp.ClientSession() as http:
        for token, expected in ((STATIC, 204), (minted["value"], 204), ("nope", 401), (None, 401)):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(relay.base_url + "/relay/auth", headers=headers) as resp:
                assert resp.status == expected, token


async def test_public_routes_need_no_token(relay: RunningRelay) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/healthz", "/readyz", "/metrics"):
            async with http.get(relay.base_url + path) as resp:
                assert resp.status == 200, path


async def test_saved_audio_and_conversations_need_a_token(relay: RunningRelay) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/relay/sessions/sess_x/items/item_x.wav", "/v1/conversations", "/v1/conversations/conv_1/items"):
            async with http.get(relay.base_url + path) as resp:
                assert resp.status == 401, path


async def test_loopback_without_tokens_has_auth_off(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        assert relay.state.auth_required is False
        assert await upgrade_status(relay) == (101, None)


async def test_wrong_origin_is_refused_before_the_upgrade(tmp_path: Path) -> None:
    settings = {"client_tokens": STATIC, "allowed_origins": "https://app.example,http://127.0.0.1:3000"}
    async with running_relay(tmp_path, settings=settings) as relay:
        auth = {"Authorization": f"Bearer {STATIC}"}
        assert (await upgrade_status(relay, {**auth, "Origin": "https://evil.example"}))[0] == 403
        assert_no_upstream(relay)
        assert (await upgrade_status(relay, {**auth, "Origin": "https://app.example"}))[0] == 101
        assert (await upgrade_status(relay, {**auth, "Origin": relay.base_url}))[0] == 101  # the relay's own page
        async with aiohttp.ClientSession() as http:
            async with http.get(relay.base_url + "/relay/auth", headers={**auth, "Origin": "https://evil.example"}) as resp:
                assert resp.status == 401


async def test_official_openai_sdk_mints_a_token_and_connects_with_it(relay: RunningRelay) -> None:
    from openai import AsyncOpenAI

    backend = AsyncOpenAI(api_key=STATIC, base_url=relay.base_url + "/v1")
    secret = await backend.realtime.client_secrets.create(expires_after={"anchor": "created_at", "seconds": 120})
    assert abs(secret.expires_at - (time.time() + 120)) < 5
    browser_like = AsyncOpenAI(api_key=secret.value, base_url=relay.base_url + "/v1")
    async with browser_like.realtime.connect(model="speech-realtime-250923") as connection:
        event = await asyncio.wait_for(connection.recv(), seconds(5))
        assert event.type == "session.created"
    refused = AsyncOpenAI(api_key="not-a-token", base_url=relay.base_url + "/v1")
    with pytest.raises(Exception, match="401"):
        async with refused.realtime.connect(model="speech-realtime-250923") as connection:
            await connection.recv()
    assert relay.sim_handshakes == 1


async def test_plain_get_on_the_realtime_route_is_a_400_and_opens_nothing(relay: RunningRelay) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(relay.ws_url.replace("ws://", "http://"), headers=relay.auth_headers()) as resp:
            assert resp.status == 400
        async with http.post(relay.ws_url.replace("ws://", "http://"), headers=relay.auth_headers()) as resp:
            assert resp.status == 405
    assert_no_upstream(relay)


async def test_saved_audio_is_served_with_a_token_and_nothing_else_is(relay: RunningRelay) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url + "?relay_events=1", headers=relay.auth_headers()) as ws:
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
            await ws.send_json({"type": "conversation.item.create", "item": item})
            await ws.send_json({"type": "response.create"})
            while (saved := await ws.receive_json(timeout=seconds(5)))["type"] != "relay.audio_saved":
                pass
        url = relay.base_url + saved["url"]
        async with http.get(url, headers=relay.auth_headers()) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "audio/wav"
            assert (await resp.read())[:4] == b"RIFF"
        async with http.get(url) as resp:
            assert resp.status == 401
        (relay.data_dir / "sessions" / "secret.wav").write_bytes(b"RIFF-not-yours")
        session_id = saved["url"].split("/")[3]
        for path in (
            f"/relay/sessions/{session_id}/items/item_unknown.wav",
            f"/relay/sessions/{session_id}/items/..%2Fsecret.wav",
            f"/relay/sessions/{session_id}/items/%2E%2E.wav",
            "/relay/sessions/..%2F..%2Fetc/items/passwd.wav",
            f"/relay/sessions/{session_id}/items/.wav",
            f"/relay/sessions/{session_id}/items/item_x.wav%0A",
            f"/relay/sessions/{session_id}/items/a/b.wav",
            "/relay/sessions/" + "a" * 65 + "/items/x.wav",
        ):
            async with http.get(relay.base_url + path, headers=relay.auth_headers()) as resp:
                assert resp.status == 404, path
                # The same answer as an unknown id, whatever the id's shape: it tells nothing.
                assert (await resp.json())["error"]["code"] == "not_found", path


async def test_client_secrets_refuses_a_page_on_a_foreign_origin_like_every_guarded_route(tmp_path: Path) -> None:
    settings = {"client_tokens": STATIC, "token_secret": SECRET, "allowed_origins": "https://app.example"}
    async with running_relay(tmp_path, settings=settings) as relay, aiohttp.ClientSession() as http:
        url = relay.base_url + "/v1/realtime/client_secrets"
        auth = {"Authorization": f"Bearer {STATIC}"}
        async with http.post(url, headers={**auth, "Origin": "https://evil.example"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "origin_not_allowed"
        async with http.post(url, headers={**auth, "Origin": "https://app.example"}) as resp:
            assert resp.status == 200
        # A backend minting for its pages sends no Origin at all.
        async with http.post(url, headers=auth) as resp:
            assert resp.status == 200

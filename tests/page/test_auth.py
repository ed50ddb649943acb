"""Browser tier: the page against a relay with client auth on (RELAY_CLIENT_TOKENS).

The page asks for a token when `/relay/auth` answers 401, reports a refused token as "auth failed" (a browser
sees the refused upgrade only as close 1006), and with a token minted by `POST /v1/realtime/client_secrets`
connects through the `openai-insecure-api-key.<token>` subprotocol and fetches saved WAVs with
`Authorization: Bearer`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.page_fixtures import RelayProcess, chromium_args, require_chromium, speech_wav, start_relay
from tests.support.timing import seconds

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

STATIC_TOKEN = "page-test-static-token"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_chromium()
    process = start_relay(tmp_path_factory.mktemp("auth_relay"), env={"RELAY_CLIENT_TOKENS": STATIC_TOKEN})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_wav(
        tmp_path_factory.mktemp("auth_speech") / "speech.wav", "Testing the relay with a token", lead_s=0.3, tail_s=4.0
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(speech: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=require_chromium(), args=chromium_args(speech))
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any, relay: RelayProcess) -> AsyncIterator[Any]:
    context = await browser.new_context()
    p = await context.new_page()
    p.set_default_timeout(seconds(20) * 1000)
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    await p.goto(relay.url)
    await p.wait_for_selector("body[data-ready=true]")
    yield p
    await context.close()
    assert errors == [], errors


async def mint(relay: RelayProcess) -> str:
    """What a web frontend's backend does: mint a short-lived client token with its static token."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{relay.url}v1/realtime/client_secrets",
            json={"expires_after": {"seconds": 120}},
            headers={"Authorization": f"Bearer {STATIC_TOKEN}"},
        ) as response:
            assert response.status == 200
            body = await response.json()
    assert isinstance(body["value"], str)
    return body["value"]


async def test_the_token_field_appears_when_the_relay_needs_a_token(page: Any) -> None:
    assert await page.get_attribute("body", "data-auth") == "required"
    assert await page.locator("#token").is_visible()


async def test_connecting_without_a_token_asks_for_one(page: Any) -> None:
    await page.click("#connect")
    error = page.locator("#error[data-kind=auth_failed]")
    await error.wait_for()
    assert "needs a client token" in await error.inner_text()


async def test_a_wrong_token_shows_auth_failed_and_opens_no_session(page: Any, relay: RelayProcess) -> None:
    sessions_before = len(list(relay.log_dir.glob("*/*.jsonl")))
    await page.fill("#token", "not-a-valid-token")
    await page.click("#connect")
    error = page.locator("#error[data-kind=auth_failed]")
    await error.wait_for()
    assert "auth failed" in await error.inner_text()
    assert await page.get_attribute("#status", "data-state") == "failed"
    assert len(list(relay.log_dir.glob("*/*.jsonl"))) == sessions_before


async def test_a_tampered_minted_token_shows_auth_failed(page: Any, relay: RelayProcess) -> None:
    minted = await mint(relay)
    tampered = minted[:-2] + ("AA" if not minted.endswith("AA") else "BB")
    await page.fill("#token", tampered)
    await page.click("#connect")
    await page.locator("#error[data-kind=auth_failed]").wait_for()


async def test_a_minted_token_connects_and_fetches_saved_audio_with_it(page: Any, relay: RelayProcess) -> None:
    token = await mint(relay)
    await page.fill("#token", token)
    await page.click("#connect")
    await page.wait_for_selector("#status[data-state=open]")
    assert await page.evaluate("relayPage.client.ws.protocol") == "realtime"
    await page.click("#mic")
    saved = page.locator("#saved li").first
    await saved.wait_for()
    async with page.expect_request(lambda r: r.url.endswith(".wav")) as request_info:
        async with page.expect_response(lambda r: r.url.endswith(".wav")) as response_info:
            await saved.locator("button.play").click()
    request = await request_info.value
    response = await response_info.value
    assert (await request.all_headers())["authorization"] == f"Bearer {token}"
    assert response.status == 200
    await page.locator('#saved li[data-state="decoded"]').first.wait_for()
    assert await page.locator("#error").is_hidden()

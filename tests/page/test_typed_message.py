"""Browser tier: a message typed into the page is sent as a user item and a response request, shown in the
conversation as the user's line, and answered (the simulator echoes it), with no microphone at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.support.page_fixtures import RelayProcess, chromium_args, require_chromium, start_relay
from tests.support.timing import seconds

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    relay: RelayProcess = start_relay(tmp_path_factory.mktemp("typed"))
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=require_chromium(), args=chromium_args(None))
            page = await browser.new_page()
            page.set_default_timeout(seconds(15) * 1000)
            await page.goto(relay.url)
            await page.wait_for_selector("body[data-ready=true]")
            yield page
            await browser.close()
    finally:
        relay.stop()


async def test_typing_is_off_until_the_session_has_started(page: Any) -> None:
    assert await page.locator("#say-text").is_disabled()
    await page.click("#connect")
    await page.wait_for_selector("#status[data-state=open]")
    assert await page.locator("#say-text").is_enabled()


async def test_a_typed_message_shows_as_the_users_line_and_is_answered(page: Any) -> None:
    await page.fill("#say-text", "what is the capital of peru")
    await page.press("#say-text", "Enter")
    user = page.locator("#transcript li.user", has_text="what is the capital of peru")
    await user.wait_for()
    assert await page.input_value("#say-text") == ""  # cleared for the next message
    reply = page.locator('#transcript li.assistant[data-done="true"]', has_text="what is the capital of peru")
    await reply.wait_for()  # the simulator's answer repeats what it was told
    sent = await page.eval_on_selector_all("#console tbody tr.event.client", "rows => rows.map(r => r.dataset.type)")
    assert sent[-2:] == ["conversation.item.create", "response.create"]


async def test_typing_turns_off_when_the_session_ends(page: Any) -> None:
    await page.click("#connect")  # reads "Disconnect" while connected
    await page.wait_for_selector("#status[data-state=idle]")
    assert await page.locator("#say-text").is_disabled()
    assert await page.locator("#say-send").is_disabled()

"""Browser tier: the page's conversation panel shows the server-side tool calls the relay ran for the model
(name, result, time; arguments and output when the operator sets `tool_details_to_client`), from the
`relay.tool_call` events, in conversation order, and never the hidden function-call items themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.page_fixtures import chromium_args, eventually, open_session, require_chromium, speech_wav, start_relay
from tests.support.timing import seconds

pytestmark = [pytest.mark.browser]

TOOLS = [{"name": "current_time", "handler": "python:relay.tools.examples:current_time"}]


@pytest.mark.parametrize("details", [False, True])
async def test_the_conversation_panel_shows_a_server_tool_call_before_the_answer(tmp_path: Path, details: bool) -> None:
    from playwright.async_api import async_playwright

    require_chromium()
    env = {
        "RELAY_TOOLS": json.dumps(TOOLS),
        "RELAY_TOOL_DETAILS_TO_CLIENT": str(details).lower(),
        "RELAY_SIM_KNOBS": '{"tool_on_audio": true}',  # the simulated model calls the first tool on a spoken turn
    }
    relay = start_relay(tmp_path / "relay", env=env)
    speech = speech_wav(tmp_path / "speech.wav", "What time is it", lead_s=0.3, tail_s=4.0)
    errors: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=require_chromium(), args=chromium_args(speech))
            page = await browser.new_page()
            page.set_default_timeout(seconds(20) * 1000)
            page.on("pageerror", lambda e: errors.append(str(e)))
            await open_session(page, relay.url)
            await page.click("#mic")
            answer = page.locator("#transcript li.assistant[data-done=true]").first
            await answer.wait_for()
            tool = page.locator("#transcript li.tool").first
            tool_text = await tool.locator(".text").inner_text()
            order: list[str] = await page.eval_on_selector_all(
                "#transcript li", "items => items.map(li => li.classList.contains('tool') ? 'tool' : li.dataset.role)"
            )
            answer_text = await answer.locator(".text").inner_text()
            details_count = await tool.locator(".tool-details").count()
            details_text = await tool.locator(".tool-details").inner_text() if details_count else ""
            await browser.close()
    finally:
        relay.stop()
    assert not errors
    assert tool_text.startswith("current_time · ok · ") and tool_text.endswith(" ms")
    assert answer_text.startswith("Tool current_time returned")
    assert order.index("tool") < order.index("assistant")
    assert (details_count == 1) is details
    if details:
        assert details_text.startswith("{} → ") and '"tz": "UTC"' in details_text
    records: list[dict[str, Any]] = await eventually(
        lambda: [r for r in relay.session_records() if r["type"] == "relay.tool_call"]
    )
    assert records and records[0]["event"]["result"] == "ok"

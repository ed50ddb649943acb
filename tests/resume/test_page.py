"""Browser tier: a voice session from the page survives the simulator dropping its upstream socket twice; the
user hears the next reply and `recall` shows the earlier context (docs/resume.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.page_fixtures import chromium_args, eventually, require_chromium, speech_wav, start_relay
from tests.support.timing import seconds

pytestmark = pytest.mark.browser


def completed_reply_after_second_resume(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    resumed = [i for i, r in enumerate(records) if r["type"] == "relay.upstream_resumed"]
    if len(resumed) < 2:
        return None
    for record in records[resumed[1] :]:
        kind, status = record["type"], record["event"].get("response", {}).get("status")
        if record["dir"] == "server" and kind == "response.done" and status == "completed":
            return record
    return None


def no_response_in_flight(records: list[dict[str, Any]]) -> bool:
    """Every committed voice turn got its response, and every response ended (the relay's failed ones too). A
    turn committed just before a drop, before its response started, gets none (docs/resume.md, "What it cannot
    do"): the drop stands in for its response."""
    waiting = False  # a committed turn whose response has not started
    for record in records:
        if record["type"] == "input_audio_buffer.committed":
            if waiting:
                return False
            waiting = True
        elif record["type"] in ("response.created", "relay.upstream_interrupted"):
            waiting = False
    created = sum(1 for r in records if r["type"] == "response.created")
    ended = sum(1 for r in records if r["type"] == "response.done")
    return not waiting and created == ended


async def test_a_voice_session_from_the_page_survives_two_drops(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    chromium = require_chromium()
    speech = speech_wav(tmp_path / "speech.wav", "Hello relay this is a browser test", lead_s=0.3, tail_s=4.0)
    # The embedded simulator drops its first two sockets after 60 events each: mid-reply, twice.
    knobs = {"close_after": 60, "close_after_sessions": 2}
    relay = start_relay(tmp_path / "relay", env={"RELAY_SIM_KNOBS": json.dumps(knobs)})
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=chromium_args(speech))
            page = await browser.new_page()
            page.set_default_timeout(seconds(30) * 1000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(relay.url)
            await page.wait_for_selector("body[data-ready=true]")
            await page.click("#connect")
            await page.wait_for_selector("#status[data-state=open]")
            await page.click("#mic")
            done = await eventually(lambda: completed_reply_after_second_resume(relay.session_records()), timeout=60)
            assert done, "no completed reply after the second resume"
            reply_item = done["event"]["response"]["output"][0]["id"]
            # The user hears it: its transcript completes and the speaker plays its audio through.
            reply = page.locator(f'#transcript li.assistant[data-item-id="{reply_item}"][data-done=true] .text')
            assert (await reply.inner_text()).startswith("Echo of [speech")
            played_before = await page.evaluate("relayPage.client.playedMs")
            await page.wait_for_function(f"relayPage.client.playedMs > {played_before}")
            await page.click("#mic")  # the microphone off: the next turn is typed, once the looping speech's
            # replies end (a timed-out wait would send the typed turn into a live response)
            assert await eventually(lambda: no_response_in_flight(relay.session_records()), timeout=15)
            await page.evaluate(
                """relayPage.client.send({type: 'conversation.item.create',
                     item: {type: 'message', role: 'user', content: [{type: 'input_text', text: 'recall'}]}});
                   relayPage.client.send({type: 'response.create'});"""
            )
            recalled = page.locator("#transcript li.assistant[data-done=true] .text", has_text="Earlier you said:")
            text = await recalled.first.inner_text()
            rows = await page.eval_on_selector_all("#console tbody tr.event", "rows => rows.map(r => r.dataset.type)")
            assert await page.locator("#error").is_hidden()
            await browser.close()
    finally:
        relay.stop()
    assert "[speech" in text  # the voice turns from before the drops reached the new upstream as transcripts
    assert rows.count("session.created") == 1
    assert rows.count("relay.upstream_interrupted") == 2 and rows.count("relay.upstream_resumed") == 2
    assert "error" not in rows
    assert errors == []
    ended = [r for r in relay.session_records() if r["type"] == "relay.session_ended"]
    assert ended[-1]["event"]["resumes"] == 2

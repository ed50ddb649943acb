"""Browser tier: barge-in. The fake microphone speaks again while the assistant's reply is still playing.

The looped WAV has only ~1.3 s of silence between repetitions, shorter than the simulator's echo reply, so the
second repetition starts (`input_audio_buffer.speech_started`) mid-reply. The page must stop playback at once
and send `conversation.item.truncate` for the assistant item with the milliseconds actually played.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.page_fixtures import (
    RelayProcess,
    chromium_args,
    eventually,
    open_session,
    require_chromium,
    speech_wav,
    start_relay,
)
from tests.support.timing import seconds

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

RECORD_BARGE_IN = """() => {
  const c = relayPage.client;
  window.bargeIns = [];
  c.addEventListener('bargein', (e) => {
    const at = {...e.detail, playedAtBargeIn: c.playedSamples, playedAtNextStop: null};
    window.bargeIns.push(at);
    // The next end of user speech comes ~2 s later; nothing may have played in between.
    c.addEventListener('input_audio_buffer.speech_stopped', () => { at.playedAtNextStop = c.playedSamples; },
                       {once: true});
  });
}"""


@dataclass
class BargeIn:
    page: Any
    relay: RelayProcess
    item_id: str
    audio_end_ms: int


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_chromium()
    process = start_relay(tmp_path_factory.mktemp("bargein_relay"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speech_wav(
        tmp_path_factory.mktemp("bargein_speech") / "speech.wav", "Please interrupt the assistant now", lead_s=0.3, tail_s=1.0
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def barge_in(relay: RelayProcess, speech: Path) -> AsyncIterator[BargeIn]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=require_chromium(), args=chromium_args(speech))
        page = await browser.new_page()
        page.set_default_timeout(seconds(20) * 1000)
        await open_session(page, relay.url)
        await page.evaluate(RECORD_BARGE_IN)
        await page.click("#mic")
        await page.wait_for_function("window.bargeIns.length > 0 && window.bargeIns[0].playedAtNextStop !== null")
        first = await page.evaluate("window.bargeIns[0]")
        yield BargeIn(page, relay, first["itemId"], first["audioEndMs"])
        await browser.close()


async def test_speech_during_the_reply_sends_truncate_with_the_played_milliseconds(barge_in: BargeIn) -> None:
    def truncates() -> list[dict[str, Any]]:
        return [r for r in barge_in.relay.session_records() if r["dir"] == "client" and r["type"] == "conversation.item.truncate"]

    records = await eventually(truncates)
    assert records, "no conversation.item.truncate reached the relay"
    event = records[0]["event"]
    assert event["item_id"] == barge_in.item_id
    assert event["content_index"] == 0
    assert event["audio_end_ms"] == barge_in.audio_end_ms
    assert "client_event" not in records[0]  # not clamped: no more than the relay forwarded


async def test_the_truncated_point_is_inside_the_reply(barge_in: BargeIn) -> None:
    # The user spoke again ~1.3 s after finishing: some of the reply was heard, not all of it.
    def through_the_truncate() -> list[dict[str, Any]]:
        # The relay's log is written behind the page: once the page's truncate is in it, so is every delta of
        # the reply the relay forwarded before it (one writer, in order).
        records = barge_in.relay.session_records()
        truncated = any(r["dir"] == "client" and r["type"] == "conversation.item.truncate" for r in records)
        return records if truncated else []

    records = await eventually(through_the_truncate)
    assert records, "no conversation.item.truncate reached the relay's log"
    forwarded_ms = sum(
        r["event"]["delta"]["audio_ms"]
        for r in records
        if r["type"] == "response.output_audio.delta" and r["item_id"] == barge_in.item_id
    )
    assert 100 < barge_in.audio_end_ms < forwarded_ms


async def test_playback_stops_at_once_and_stays_stopped(barge_in: BargeIn) -> None:
    played = await barge_in.page.evaluate("window.bargeIns[0]")
    assert played["playedAtNextStop"] == played["playedAtBargeIn"]


async def test_the_server_confirms_the_truncation(barge_in: BargeIn) -> None:
    await barge_in.page.wait_for_selector('#console tbody tr.event[data-type="conversation.item.truncated"]', state="attached")
    errors = await barge_in.page.eval_on_selector_all('#console tbody tr.event[data-type="error"]', "rows => rows.length")
    assert errors == 0


async def test_the_transcript_marks_the_interrupted_reply(barge_in: BargeIn) -> None:
    li = barge_in.page.locator(f'#transcript li[data-item-id="{barge_in.item_id}"]')
    assert await li.get_attribute("data-truncated-ms") == str(barge_in.audio_end_ms)

"""Browser tier, the whole story: a voice session from the page at `/` through `serve` and the simulator, then
`logs --html` of it shows both voices as waveform lanes under the timeline and plays the recording."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.cli.main import main
from tests.support.page_fixtures import chromium_args, eventually, open_session, require_chromium, speech_wav, start_relay
from tests.support.recording_helpers import RECORDING_DURATION_JS

pytestmark = pytest.mark.browser

# The recording player's position once the page has handled the next click (a listener on the document runs after
# the timeline's own): where the click sought to, before the playback it starts moves the position on.
CLICK_POSITION_JS = """() => document.addEventListener("click", () => {
  window.positionAtClick = document.getElementById("recording").currentTime;
}, { once: true })"""


async def test_a_page_session_is_recorded_and_logs_html_shows_and_plays_both_voices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.async_api import async_playwright

    chromium = require_chromium()
    speech = speech_wav(tmp_path / "speech.wav", "Hello relay please record this", lead_s=0.3, tail_s=4.0)
    relay = start_relay(tmp_path / "relay")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=chromium_args(speech))
            try:
                page = await browser.new_page()
                await open_session(page, relay.url)
                await page.click("#mic")
                await page.locator("#transcript li.assistant[data-done=true]").first.wait_for()
                await page.wait_for_function("relayPage.client.playedMs > 500")
                await page.close()  # the user leaves: the session ends and its recording is saved

                def ended() -> list[dict[str, Any]]:
                    # relay.session_ended is the session's last record, written after relay.recording_saved: the
                    # log that `logs --html` reads below is then complete, and `records` is the same log.
                    records = relay.session_records()
                    return records if any(r["type"] == "relay.session_ended" for r in records) else []

                records = await eventually(ended, timeout=10)
                assert records, "the session did not end in the relay's log"
                (record,) = [r for r in records if r["type"] == "relay.recording_saved"]
                out = tmp_path / "report" / "session.html"
                assert main(["logs", str(relay.log_dir), "--html", str(out), "--data-dir", str(relay.data_dir)]) == 0
                capsys.readouterr()

                report = await browser.new_page()
                await report.goto(out.as_uri())
                duration = await report.evaluate(RECORDING_DURATION_JS)
                assert duration == pytest.approx(record["event"]["duration_ms"] / 1000, abs=0.05)
                data = await report.evaluate("() => JSON.parse(document.getElementById('recording-data').textContent)")

                def loud_at(peaks: list[int], t_ms: float, span_ms: float = 400) -> int:
                    first = int(t_ms / data["bucket_ms"])
                    return max(peaks[first : first + int(span_ms / data["bucket_ms"])] or [0])

                started = next(r for r in records if r["type"] == "input_audio_buffer.speech_started")
                first_append = next(r for r in records if r["type"] == "input_audio_buffer.append")
                spoken_ms = first_append["t_ms"] + started["event"]["audio_start_ms"]
                reply_ms = next(r for r in records if r["type"] == "response.output_audio.delta")["t_ms"]
                assert loud_at(data["left"], spoken_ms) >= 5  # the user's voice where the user spoke
                assert loud_at(data["right"], reply_ms) >= 5  # the assistant's where its reply crossed
                assert loud_at(data["right"], spoken_ms, 200) == 0  # and not while only the user spoke
                # A click on the assistant's lane plays the recording from there.
                lane = report.locator('[data-wave-track="right"]')
                await lane.scroll_into_view_if_needed()
                box = await lane.bounding_box()
                assert box is not None
                end_ms = max(data["duration_ms"], records[-1]["t_ms"])
                scale = (box["width"] - 40) / end_ms
                await report.evaluate(CLICK_POSITION_JS)
                await report.mouse.click(box["x"] + reply_ms * scale, box["y"] + box["height"] / 2)
                await report.wait_for_function("() => window.positionAtClick !== undefined")
                position = await report.evaluate("() => window.positionAtClick")
                assert position == pytest.approx(reply_ms / 1000, abs=0.1)
            finally:
                await browser.close()
    finally:
        assert relay.stop() == 0

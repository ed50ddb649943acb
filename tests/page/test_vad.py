"""Browser tier: the page shows the microphone level and what the server's voice detector hears (listening /
speech / waiting for reply), and after 10 s without detected speech a hint says what to check, so a microphone
the VAD never hears (headless Chromium's silent fake device) does not look like a dead page."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.page_fixtures import ARTIFACTS, RelayProcess, chromium_args, require_chromium, speech_wav, start_relay
from tests.support.tiers import require
from tests.support.timing import seconds

pytestmark = [pytest.mark.browser]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    require_chromium()
    process = start_relay(tmp_path_factory.mktemp("vad_relay"))
    yield process
    process.stop()


def silence_wav(path: Path) -> Path:
    sox = require("sox", "sox is not installed (make system-deps)")
    subprocess.run([sox, "-n", "-r", "48000", "-c", "1", "-b", "16", str(path), "trim", "0", "2"], check=True, timeout=seconds(30))
    return path


async def open_page(pw: Any, relay: RelayProcess, mic_wav: Path) -> tuple[Any, Any]:
    browser = await pw.chromium.launch(executable_path=require_chromium(), args=chromium_args(mic_wav))
    page = await (await browser.new_context(viewport={"width": 1400, "height": 900})).new_page()
    page.set_default_timeout(seconds(20) * 1000)
    await page.goto(relay.url)
    await page.wait_for_selector("body[data-ready=true]")
    assert await page.inner_text("#vad") == "mic off"
    await page.click("#connect")
    await page.wait_for_selector("#status[data-state=open]")
    await page.click("#mic")
    await page.wait_for_selector("#vad[data-state=listening]")
    return browser, page


async def test_speech_moves_the_vad_state_through_speech_and_waiting_back_to_listening(
    relay: RelayProcess, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    speech = speech_wav(tmp_path / "speech.wav", "Hello relay this is a voice activity test", lead_s=0.3, tail_s=4.0)
    async with async_playwright() as pw:
        browser, page = await open_page(pw, relay, speech)
        try:
            await page.wait_for_function(
                "() => window.relayPage.vad.history.join(' ').includes('listening speech waiting listening')"
            )
            states = await page.evaluate("() => window.relayPage.vad.history")
            assert states[:5] == ["off", "listening", "speech", "waiting", "listening"], states
            assert await page.locator("#vad-hint").is_hidden()
            db = await page.inner_text("#mic-db")
            assert db.endswith(" dBFS") and db != "- dBFS"
        finally:
            await browser.close()


async def test_a_microphone_the_vad_never_hears_gets_a_hint_after_10_seconds(relay: RelayProcess, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser, page = await open_page(pw, relay, silence_wav(tmp_path / "silence.wav"))
        try:
            started = await page.evaluate("() => performance.now()")
            assert await page.locator("#vad-hint").is_hidden()
            await page.wait_for_selector("#vad-hint", state="visible", timeout=seconds(25) * 1000)
            waited = await page.evaluate("() => performance.now()") - started
            assert waited >= 9_000  # not before the 10 s (measured from the state change, just before `started`)
            assert await page.get_attribute("#vad", "data-state") == "listening"
            assert "No speech detected for 10 s" in await page.inner_text("#vad-hint")
            assert await page.get_attribute("body", "data-vad-hint") == "true"
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "page_vad_hint.png"))
            await page.click("#mic")  # stopping the microphone clears the hint and the state
            await page.wait_for_selector("#vad[data-state=off]")
            assert await page.locator("#vad-hint").is_hidden()
        finally:
            await browser.close()

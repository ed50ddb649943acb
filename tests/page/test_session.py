"""Browser tier: the page at `/` holds a spoken turn through `realtime-relay serve` and the simulator.

One relay (auth off) and one Chromium whose fake microphone loops an espeak-ng utterance followed by silence.
The module's fixture connects, starts the microphone and waits for the first turn to be complete (assistant
transcript done, both items saved); each test then checks one thing the page or the relay shows about it.
Tests run in file order; the last two change the session (input rate, reconnect).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.page_fixtures import (
    ARTIFACTS,
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

SPEECH = re.compile(r"^\[speech \d+\.\d\d s\]$")


@dataclass
class Turn:
    page: Any
    relay: RelayProcess
    user_item: str
    assistant_item: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_chromium()
    process = start_relay(tmp_path_factory.mktemp("page_relay"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 4 s of silence after the words: the reply (~2.5 s) is over before the looped file speaks again.
    return speech_wav(
        tmp_path_factory.mktemp("speech") / "speech.wav", "Hello relay this is a browser test", lead_s=0.3, tail_s=4.0
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def turn(relay: RelayProcess, speech: Path) -> AsyncIterator[Turn]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=require_chromium(), args=chromium_args(speech))
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        page.set_default_timeout(seconds(20) * 1000)
        state = Turn(page, relay, "", "")
        context.on("request", lambda r: state.requests.append(r.url))
        page.on("pageerror", lambda e: state.errors.append(str(e)))
        await open_session(page, relay.url)
        await page.click("#mic")
        assistant = page.locator("#transcript li.assistant[data-done=true]").first
        await assistant.wait_for()
        state.assistant_item = await assistant.get_attribute("data-item-id") or ""
        state.user_item = await page.locator("#transcript li.user").first.get_attribute("data-item-id") or ""
        for item in (state.user_item, state.assistant_item):
            await page.locator(f'#saved li[data-item-id="{item}"]').wait_for()
        yield state
        await browser.close()


async def test_the_token_field_is_hidden_when_auth_is_off(turn: Turn) -> None:
    assert await turn.page.get_attribute("body", "data-auth") == "off"
    assert not await turn.page.locator("#token-row").is_visible()


async def test_the_user_transcript_and_the_assistant_reply_appear(turn: Turn) -> None:
    user = await turn.page.locator(f'#transcript li[data-item-id="{turn.user_item}"] .text').inner_text()
    reply = await turn.page.locator(f'#transcript li[data-item-id="{turn.assistant_item}"] .text').inner_text()
    assert SPEECH.match(user), user
    assert reply == f"Echo of {user}."


async def test_the_assistant_audio_is_actually_played(turn: Turn) -> None:
    li = turn.page.locator(f'#saved li[data-item-id="{turn.assistant_item}"]')
    reply_s = float(re.search(r"(\d+\.\d\d) s", await li.inner_text()).group(1))  # type: ignore[union-attr]
    # The worklet's counter at the context rate: the whole reply goes through the speaker, not just a start.
    await turn.page.wait_for_function(f"relayPage.client.playedMs >= {reply_s * 1000 * 0.95}")
    played = await turn.page.evaluate("relayPage.client.playedSamples")
    assert played > 0
    assert int(await turn.page.get_attribute("#played", "data-samples") or 0) > 0


async def test_the_level_meters_moved_with_the_speech_and_the_reply(turn: Turn) -> None:
    peaks = await turn.page.evaluate("relayPage.meterPeaks")
    assert peaks["mic"] > -50, peaks
    assert peaks["speaker"] > -50, peaks


async def test_a_saved_item_loads_from_the_relay_and_decodes(turn: Turn) -> None:
    li = turn.page.locator(f'#saved li[data-item-id="{turn.assistant_item}"]')
    url = await li.get_attribute("data-url")
    assert url is not None and url.endswith(f"/{turn.assistant_item}.wav")
    async with turn.page.expect_response(lambda r: r.url.endswith(url)) as response_info:
        await li.locator("button.play").click()
    response = await response_info.value
    assert response.status == 200
    assert response.headers["content-type"] == "audio/wav"
    await turn.page.locator(f'#saved li[data-item-id="{turn.assistant_item}"][data-state="decoded"]').wait_for()
    decoded_ms = int(await li.get_attribute("data-decoded-ms") or 0)
    listed_s = float(re.search(r"(\d+\.\d\d) s", await li.inner_text()).group(1))  # type: ignore[union-attr]
    assert abs(decoded_ms - listed_s * 1000) < 20
    saved = turn.relay.data_dir / "sessions"
    assert len(list(saved.glob(f"*/{turn.assistant_item}.wav"))) == 1


async def test_the_event_console_lists_the_turn_in_order(turn: Turn) -> None:
    rows = await turn.page.eval_on_selector_all(
        "#console tbody tr.event", "rows => rows.map(r => [r.dataset.dir, r.dataset.type])"
    )
    wanted = [
        ("client", "input_audio_buffer.append"),
        ("server", "input_audio_buffer.speech_started"),
        ("server", "input_audio_buffer.speech_stopped"),
        ("server", "response.created"),
        ("server", "response.output_audio.delta"),
        ("server", "response.done"),
    ]
    positions = [rows.index(list(w)) for w in wanted]
    assert positions == sorted(positions)
    types = {t for _, t in rows}
    assert {"session.created", "conversation.item.input_audio_transcription.completed", "relay.audio_saved"} <= types


async def test_the_console_summarizes_audio_instead_of_dumping_it(turn: Turn) -> None:
    text = await turn.page.inner_text("#console")
    assert re.search(r"\d+ chunks · \d+ ms · \d+ bytes of audio", text)
    longest_word = max(len(w) for w in text.split())
    assert longest_word < 200  # no base64 payload anywhere


async def test_the_console_filter_shows_only_matching_types(turn: Turn) -> None:
    page = turn.page
    await page.fill("#filter", "speech_")
    visible = await page.eval_on_selector_all(
        "#console tbody tr.event", "rows => rows.filter(r => !r.hidden).map(r => r.dataset.type)"
    )
    assert visible and all("speech_" in t for t in visible)
    await page.fill("#filter", "")
    await page.uncheck("#show-client")
    visible_dirs = await page.eval_on_selector_all(
        "#console tbody tr.event", "rows => [...new Set(rows.filter(r => !r.hidden).map(r => r.dataset.dir))]"
    )
    assert visible_dirs == ["server"]
    await page.check("#show-client")


async def test_microphone_audio_goes_up_in_20_ms_chunks_at_the_session_rate(turn: Turn) -> None:
    def appends() -> list[dict[str, Any]]:
        return [r for r in turn.relay.session_records() if r["type"] == "input_audio_buffer.append"]

    records = await eventually(lambda: len(appends()) > 50 and appends())
    assert {(r["event"]["audio"]["audio_bytes"], r["event"]["audio"]["audio_ms"]) for r in records} == {(960, 20)}


async def test_the_page_shows_no_error_and_loads_nothing_from_elsewhere(turn: Turn) -> None:
    assert await turn.page.locator("#error").is_hidden()
    assert turn.errors == []
    origin = turn.relay.url.rstrip("/")
    assert all(u.startswith((origin, "blob:", "data:")) for u in turn.requests), turn.requests


async def test_the_page_screenshot_shows_the_turn(turn: Turn) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "page.png"
    await turn.page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    for selector in ("#transcript li.user", "#transcript li.assistant", "#saved li", "#console tbody tr"):
        assert await turn.page.locator(selector).first.is_visible(), selector


async def test_a_new_input_rate_is_followed_from_the_session_update_on(turn: Turn) -> None:
    page = turn.page
    await page.evaluate(
        """relayPage.client.send({type: 'session.update', event_id: 'evt_rate',
             session: {audio: {input: {format: {type: 'audio/pcm', rate: 16000}}}}})"""
    )
    await page.wait_for_function("relayPage.client.inputCodec && relayPage.client.inputCodec.rate === 16000")
    await page.wait_for_function("relayPage.client.session.audio.input.format.rate === 16000")  # session.updated
    assert "in: pcm 16000 Hz" in await page.inner_text("#session-info")

    def appends_after_update() -> list[tuple[int, float]]:
        records = turn.relay.session_records()
        update = max((i for i, r in enumerate(records) if r.get("event_id") == "evt_rate"), default=None)
        if update is None:  # not flushed to the log yet
            return []
        after = [r for r in records[update + 1 :] if r["type"] == "input_audio_buffer.append"]
        sizes = [(r["event"]["audio"]["audio_bytes"], r["event"]["audio"]["audio_ms"]) for r in after]
        return sizes if len(sizes) >= 10 else []

    # The server reads every append after the update at 16 kHz (events apply in order), so the page encodes them so
    # from the moment it sends the update, and the relay reads them so: every one is 20 ms of 16 kHz PCM.
    sizes = await eventually(appends_after_update)
    assert set(sizes) == {(640, 20)}, sizes


async def test_disconnect_then_connect_again_opens_a_new_session(turn: Turn) -> None:
    page = turn.page
    await page.click("#connect")  # the button reads "Disconnect" while connected
    await page.wait_for_selector("#status[data-state=idle]")
    assert await page.locator("#mic").is_disabled()
    await page.click("#connect")
    await page.wait_for_selector("#status[data-state=open]")
    assert await page.locator("#error").is_hidden()
    # The status is open once the socket is; session.created is a frame that follows, after the upstream connected.
    await page.locator('#console tbody tr.event[data-type="session.created"]').nth(1).wait_for(state="attached")
    created = await page.eval_on_selector_all('#console tbody tr.event[data-type="session.created"]', "rows => rows.length")
    assert created == 2

"""Browser tier: the `--html` timeline opened from disk in Debian's Chromium shows lanes, marks and records."""

from __future__ import annotations

import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.cli.main import main
from tests.support.logs_fixtures import SessionLog, two_turn_session
from tests.support.tiers import require
from tests.support.timing import seconds

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]

# Whether a lane has a mark inside the timeline's visible stretch (marks are drawn for the scroll position).
IN_VIEW_JS = """(lane) => {
  const timeline = document.getElementById("timeline");
  return [...document.querySelectorAll(`.lane[data-lane="${lane}"] .mark`)].some((m) => {
    const x = parseFloat(m.style.left);
    return x >= timeline.scrollLeft && x <= timeline.scrollLeft + timeline.clientWidth;
  });
}"""


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    chromium = require("/usr/bin/chromium", "Chromium is not installed at /usr/bin/chromium (make system-deps)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        # The page must work offline: any request other than the file itself fails the test.
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))
        p = await context.new_page()
        p.set_default_timeout(seconds(10) * 1000)
        errors: list[str] = []
        p.on("pageerror", lambda e: errors.append(str(e)))
        yield p
        assert errors == [], errors
        assert all(url.startswith("file://") for url in requests), requests
        await browser.close()


def render(tmp_path: Path, log: SessionLog, capsys: pytest.CaptureFixture[str]) -> Path:
    log.write(tmp_path / "logs")
    page_path = tmp_path / f"{log.session_id}.html"
    assert main(["logs", str(tmp_path / "logs"), "--session", log.session_id, "--html", str(page_path)]) == 0
    capsys.readouterr()
    return page_path


async def test_the_timeline_shows_three_lanes_with_one_mark_per_record(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log = two_turn_session("sess_browser")
    html_path = render(tmp_path, log, capsys)
    await page.goto(html_path.as_uri())
    for lane in ("client", "server", "relay"):
        assert await page.locator(f'.lane[data-lane="{lane}"]').is_visible()
        expected = sum(1 for r in log.records if r["dir"] == lane)
        assert await page.locator(f'.lane[data-lane="{lane}"] .mark').count() == expected
    assert await page.locator(".turn").count() == 2
    assert await page.locator(".latency-mark").all_inner_texts() == ["400 ms", "900 ms"]
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "logs_timeline.png"), full_page=True)


async def test_clicking_a_mark_shows_its_full_record(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log = two_turn_session("sess_click")
    html_path = render(tmp_path, log, capsys)
    await page.goto(html_path.as_uri())
    done = next(r for r in log.records if r["type"] == "response.done")
    mark = page.locator(f'.mark[data-seq="{done["seq"]}"]')
    await mark.hover()
    assert "response.done" in await page.locator("#hover-info").inner_text()
    await mark.click()
    assert json.loads(await page.locator("#detail").inner_text()) == done
    assert "server · response.done · seq" in await page.locator("#detail-title").inner_text()
    await page.keyboard.press("ArrowRight")
    following = log.records[log.records.index(done) + 1]
    assert json.loads(await page.locator("#detail").inner_text()) == following


async def test_error_marks_are_red_and_a_turn_band_shows_the_turn(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log = SessionLog("sess_err")
    log.voice_turn(n=1, speech_started=100.0, speech_stopped=600.0, first_audio=900.0, transcript="hi")
    log.server_error(1500.0, "invalid_value", "nope")
    html_path = render(tmp_path, log, capsys)
    await page.goto(html_path.as_uri())
    error_mark = page.locator('.lane[data-lane="server"] .mark.error')
    assert await error_mark.count() == 1
    colour = await error_mark.evaluate("m => getComputedStyle(m).backgroundColor")
    assert colour == "rgb(214, 40, 40)"
    await page.locator('.turn[data-turn="1"]').click()
    assert json.loads(await page.locator("#detail").inner_text())["user_transcript"] == "hi"


async def test_hiding_audio_chunks_leaves_only_the_other_marks(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log = two_turn_session("sess_hide")
    html_path = render(tmp_path, log, capsys)
    await page.goto(html_path.as_uri())
    await page.locator("#hide-audio").check()
    audio = {"input_audio_buffer.append", "response.output_audio.delta"}
    assert await page.locator(".mark.audio").count() == 0
    assert await page.locator(".mark").count() == sum(1 for r in log.records if r["type"] not in audio)


async def test_dense_audio_chunks_share_a_mark_until_zoomed_in(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ten minutes of 20 ms chunks: 30000 appends cannot each get a pixel; zooming in separates them.
    log = SessionLog("sess_long")
    log.started()
    log.append_stream(0.0, 600_000.0, chunk_ms=20.0)
    log.voice_turn(n=1, speech_started=1000.0, speech_stopped=599_000.0, first_audio=599_500.0)
    html_path = render(tmp_path, log, capsys)
    await page.goto(html_path.as_uri())
    client = page.locator('.lane[data-lane="client"] .mark')
    at_fit = await client.count()
    assert 0 < at_fit < 1000
    assert "more audio chunk(s) here" in (await client.first.get_attribute("title") or "")
    # 4096x: 20 ms chunks land ~20 px apart, each with its own mark.
    for _ in range(12):
        await page.locator("#zoom-in").click()
    # A zoom draws at the old scroll position, then scrolls; the scroll redraws the marks in a later frame.
    await page.wait_for_function(IN_VIEW_JS, arg="client")
    zoomed = await client.evaluate_all("marks => marks.map(m => Number(m.dataset.seq))")
    assert len(zoomed) > 2
    assert zoomed == list(range(zoomed[0], zoomed[0] + len(zoomed)))  # consecutive chunks, none merged
    first = page.locator(f'.mark[data-seq="{zoomed[1]}"]')
    await first.click()
    assert json.loads(await page.locator("#detail").inner_text())["seq"] == zoomed[1]
    # Scrolled deep into a zoomed timeline, every lane still says which lane it is.
    timeline = await page.locator("#timeline").bounding_box()
    for label in await page.locator(".lane-label").all():
        box = await label.bounding_box()
        assert box is not None and timeline["x"] <= box["x"] < timeline["x"] + 20, await label.inner_text()


async def test_a_saved_wav_next_to_the_logs_is_linked_and_plays_from_the_page(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # The relay ran in tmp_path: ./logs and ./data; the page goes elsewhere and links the WAV relatively.
    log = two_turn_session("sess_wav")
    wav_path = tmp_path / "data" / "sessions" / "sess_wav" / "item_a1.wav"
    wav_path.parent.mkdir(parents=True)
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(b"\x00\x00" * 12000)  # 0.5 s
    log.write(tmp_path / "logs")
    html_path = tmp_path / "reports" / "sess_wav.html"
    assert main(["logs", str(tmp_path / "logs"), "--html", str(html_path)]) == 0
    capsys.readouterr()
    await page.goto(html_path.as_uri())
    link = page.locator("a.wav").first
    assert await link.get_attribute("href") == "../data/sessions/sess_wav/item_a1.wav"
    duration = await page.evaluate(
        """() => new Promise((resolve) => {
             const audio = document.querySelector("audio");
             audio.addEventListener("loadedmetadata", () => resolve(audio.duration));
             audio.addEventListener("error", () => resolve(-1));
             audio.preload = "auto";
             audio.load();
           })"""
    )
    assert duration == pytest.approx(0.5, abs=0.01)


async def test_long_unbroken_texts_wrap_instead_of_widening_the_page(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log = two_turn_session("sess_wide")
    last_ms = max(r["t_ms"] for r in log.records)
    event = {"name": "big", "call_id": "call_1", "result": "ok", "duration_ms": 1.0, "arguments": "{}", "output": "x" * 3000}
    log.add(last_ms + 1.0, "relay", "relay.tool_call", event)
    html_path = render(tmp_path, log, capsys)
    await page.goto(html_path.as_uri())
    assert await page.locator("table.tools").is_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 1400


@pytest.mark.parametrize("t_ms", [1e12, 1e300])
async def test_a_corrupted_enormous_t_ms_still_gives_a_page_with_a_few_axis_ticks(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str], t_ms: float
) -> None:
    # A valid-looking record whose t_ms is absurd (a flipped bit in a log) stretches the timeline to it: the axis
    # must still get a handful of ticks, not one per hour of that span (which never finishes loading).
    log = two_turn_session("sess_corrupt")
    last = log.finished()[-1]
    corrupted = dict(last, t_ms=t_ms, seq=last["seq"] + 1)
    with log.write(tmp_path / "logs").open("a") as handle:
        handle.write(json.dumps(corrupted) + "\n")
    html_path = tmp_path / "sess_corrupt.html"
    assert main(["logs", str(tmp_path / "logs"), "--html", str(html_path)]) == 0
    capsys.readouterr()
    await page.goto(html_path.as_uri())
    assert 1 <= await page.locator("#axis-track .tick").count() <= 50
    assert await page.locator(".mark").count() >= 2


@pytest.mark.parametrize("item_id", ["constructor", "__proto__", "toString"])
async def test_an_item_id_named_like_an_object_member_gets_no_saved_audio_link(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str], item_id: str
) -> None:
    log = two_turn_session("sess_proto")
    last_ms = max(r["t_ms"] for r in log.records)
    record = log.add(last_ms + 1.0, "relay", "conversation.item.retrieve", {"item_id": item_id})
    html_path = render(tmp_path, log, capsys)
    await page.goto(html_path.as_uri())
    await page.locator(f'.mark[data-seq="{record["seq"]}"]').click()
    assert json.loads(await page.locator("#detail").inner_text())["event"]["item_id"] == item_id
    assert await page.locator("#detail a").count() == 0


async def test_clicking_a_record_of_an_item_with_a_saved_wav_links_the_audio(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log = two_turn_session("sess_detail_wav")
    wav_path = tmp_path / "data" / "sessions" / "sess_detail_wav" / "item_a1.wav"
    wav_path.parent.mkdir(parents=True)
    wav_path.write_bytes(b"RIFF")
    html_path = render(tmp_path, log, capsys)
    await page.goto(html_path.as_uri())
    retrieve = next(r for r in log.records if r["type"] == "conversation.item.retrieve")
    await page.locator(f'.mark[data-seq="{retrieve["seq"]}"]').click()
    link = page.locator("#detail a")
    assert await link.get_attribute("href") == "data/sessions/sess_detail_wav/item_a1.wav"
    assert "saved audio of item_a1" in await link.inner_text()

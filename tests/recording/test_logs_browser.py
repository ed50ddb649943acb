"""Browser tier: the `logs --html` page of a recorded session draws both channels as waveform lanes under the
timeline and plays the recording, seeking to the moment clicked on a lane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.cli.main import main
from tests.inspect.test_timeline_browser import ARTIFACTS, page  # noqa: F401  (the page fixture: Chromium, offline)
from tests.recording.test_logs import write_recording
from tests.support.logs_fixtures import two_turn_session
from tests.support.recording_helpers import RECORDING_DURATION_JS

pytestmark = pytest.mark.browser

# The recording player's position once the page has handled the next click (a listener on the document runs after
# the timeline's own): where the click sought to, before the playback it starts moves the position on.
CLICK_POSITION_JS = """() => document.addEventListener("click", () => {
  window.positionAtClick = document.getElementById("recording").currentTime;
}, { once: true })"""


async def test_the_recording_lanes_are_drawn_under_the_timeline_and_a_click_plays_from_there(
    tmp_path: Path, page: Any, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    log = two_turn_session("sess_play")
    log.write(tmp_path / "logs")
    write_recording(tmp_path / "data" / "sessions" / "sess_play" / "recording.wav", 6.0, (0.3, 1.2), (1.6, 2.0))
    html_path = tmp_path / "sess_play.html"
    assert main(["logs", str(tmp_path / "logs"), "--html", str(html_path), "--data-dir", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    await page.goto(html_path.as_uri())
    duration = await page.evaluate(RECORDING_DURATION_JS)
    assert duration == pytest.approx(6.0, abs=0.01)
    # Ink where each channel has sound, none where it is silent: sampled from the canvases' pixels.
    ink = """([wave, ms]) => {
        const canvas = document.querySelector(`canvas[data-wave="${wave}"]`);
        const track = canvas.parentElement;
        const scale = (track.getBoundingClientRect().width - 40) / 6000;
        const x = Math.round(ms * scale - parseFloat(canvas.style.left));
        const pixels = canvas.getContext("2d").getImageData(x, 0, 1, canvas.height).data;
        let alpha = 0; for (let i = 3; i < pixels.length; i += 4) alpha += pixels[i];
        return alpha;
      }"""
    assert await page.evaluate(ink, ["left", 700]) > 0 and await page.evaluate(ink, ["left", 1800]) == 0
    assert await page.evaluate(ink, ["right", 1800]) > 0 and await page.evaluate(ink, ["right", 700]) == 0
    # A click on the assistant lane at ~1.8 s seeks the player there.
    lane = page.locator('[data-wave-track="right"]')
    box = await lane.bounding_box()
    assert box is not None
    scale = (box["width"] - 40) / 6000
    await page.evaluate(CLICK_POSITION_JS)
    await page.mouse.click(box["x"] + 1800 * scale, box["y"] + box["height"] / 2)
    await page.wait_for_function("() => window.positionAtClick !== undefined")
    position = await page.evaluate("() => window.positionAtClick")
    assert position == pytest.approx(1.8, abs=0.05)
    assert await page.locator(".playhead").first.is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "logs_recording.png"), full_page=True)

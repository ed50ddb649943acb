"""`GET /relay/sessions/{session_id}/recording.wav`: the same token and id rules as saved item audio, and HTTP
Range requests so a player can seek."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.timing import seconds

STATIC = "static-token-for-recordings"


@pytest.fixture
async def relay(tmp_path: Path) -> Any:
    async with running_relay(tmp_path, settings={"client_tokens": STATIC, "token_secret": "x" * 32}) as running:
        yield running


async def one_session(relay: RunningRelay, http: aiohttp.ClientSession) -> str:
    """A text turn with audio; returns the session id once the recording is saved."""
    async with http.ws_connect(relay.ws_url, headers=relay.auth_headers()) as ws:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        await ws.send_json({"type": "conversation.item.create", "item": item})
        await ws.send_json({"type": "response.create"})
        while (await ws.receive_json(timeout=seconds(5)))["type"] != "response.done":
            pass
    deadline = time.monotonic() + seconds(10)
    while True:
        for session_id, records in relay.session_records().items():
            if records and records[-1]["type"] == "relay.session_ended":
                return session_id
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_the_recording_is_served_whole_and_by_range_with_a_token(relay: RunningRelay) -> None:
    async with aiohttp.ClientSession() as http:
        session_id = await one_session(relay, http)
        url = f"{relay.base_url}/relay/sessions/{session_id}/recording.wav"
        on_disk = (relay.data_dir / "sessions" / session_id / "recording.wav").read_bytes()
        async with http.get(url, headers=relay.auth_headers()) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "audio/wav"
            assert resp.headers["Accept-Ranges"] == "bytes"
            assert await resp.read() == on_disk
        async with http.get(url, headers={**relay.auth_headers(), "Range": "bytes=44-1043"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 44-1043/{len(on_disk)}"
            assert await resp.read() == on_disk[44:1044]
        async with http.get(url, headers={**relay.auth_headers(), "Range": "bytes=-100"}) as resp:
            assert resp.status == 206 and await resp.read() == on_disk[-100:]
        async with http.get(url, headers={**relay.auth_headers(), "Range": f"bytes={len(on_disk) + 10}-"}) as resp:
            assert resp.status == 416
        async with http.get(url) as resp:
            assert resp.status == 401
        async with http.get(url, headers={"Authorization": "Bearer wrong", "Range": "bytes=0-10"}) as resp:
            assert resp.status == 401


async def test_an_empty_suffix_range_is_unsatisfiable_and_several_ranges_get_the_whole_file(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        session_id = await one_session(relay, http)
        url = f"{relay.base_url}/relay/sessions/{session_id}/recording.wav"
        on_disk = (relay.data_dir / "sessions" / session_id / "recording.wav").read_bytes()
        async with http.get(url, headers={**relay.auth_headers(), "Range": "bytes=-0"}) as resp:
            assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{len(on_disk)}"
        # No multipart answers here: a server may ignore Range, so the whole file with 200, never a 416.
        with caplog.at_level("ERROR"):
            async with http.get(url, headers={**relay.auth_headers(), "Range": "bytes=0-1,5-6"}) as resp:
                assert resp.status == 200 and await resp.read() == on_disk
                assert resp.headers["Content-Length"] == str(len(on_disk)) and resp.headers["Accept-Ranges"] == "bytes"
            async with http.head(url, headers={**relay.auth_headers(), "Range": "bytes=0-1,5-6"}) as resp:
                assert resp.status == 200 and resp.headers["Content-Length"] == str(len(on_disk))
                assert await resp.read() == b""
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


@pytest.mark.parametrize("wanted", ["bytes=abc", "bytes=9-1", "bytes=1-2-3", "bytes=", "BYTES=x", "bytes=\u00ff-"])
async def test_a_malformed_byte_range_is_unsatisfiable_and_logs_no_error(
    relay: RunningRelay, wanted: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        session_id = await one_session(relay, http)
        url = f"{relay.base_url}/relay/sessions/{session_id}/recording.wav"
        on_disk = (relay.data_dir / "sessions" / session_id / "recording.wav").read_bytes()
        with caplog.at_level("ERROR"):
            async with http.get(url, headers={**relay.auth_headers(), "Range": wanted}) as resp:
                assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{len(on_disk)}"
            async with http.get(url, headers={**relay.auth_headers(), "Range": "items=0-1"}) as resp:
                assert resp.status == 200 and await resp.read() == on_disk  # a unit it does not know: ignored
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_unknown_or_malformed_session_ids_get_the_same_404(relay: RunningRelay) -> None:
    (relay.data_dir / "sessions").mkdir(parents=True)
    (relay.data_dir / "recording.wav").write_bytes(b"RIFF-not-yours")
    async with aiohttp.ClientSession() as http:
        for path in (
            "/relay/sessions/sess_unknown/recording.wav",
            "/relay/sessions/..%2F/recording.wav",
            "/relay/sessions/%2E%2E/recording.wav",
            "/relay/sessions/" + "a" * 65 + "/recording.wav",
            "/relay/sessions/sess%0A/recording.wav",
            "/relay/sessions/sess%00x/recording.wav",
        ):
            async with http.get(relay.base_url + path, headers=relay.auth_headers()) as resp:
                assert resp.status == 404, path


@pytest.mark.browser
async def test_a_browser_plays_the_recording_from_the_relay_and_seeks_with_range_requests(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    from tests.support.page_fixtures import chromium_args, require_chromium

    chromium = require_chromium()
    async with running_relay(tmp_path / "open") as relay, aiohttp.ClientSession() as http:
        session_id = await one_session(relay, http)
        url = f"{relay.base_url}/relay/sessions/{session_id}/recording.wav"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=chromium_args(None))
            try:
                page = await browser.new_page()
                ranges: list[str | None] = []
                page.on("request", lambda r: ranges.append(r.headers.get("range")) if r.url == url else None)
                await page.goto(relay.base_url + "/")
                result = await page.evaluate(
                    """(url) => new Promise((resolve) => {
                         const audio = new Audio(url);
                         audio.addEventListener("error", () => resolve({error: audio.error && audio.error.code}));
                         audio.addEventListener("loadedmetadata", () => { audio.currentTime = audio.duration / 2; });
                         audio.addEventListener("seeked", () => resolve({duration: audio.duration, at: audio.currentTime}));
                       })""",
                    url,
                )
            finally:
                await browser.close()
    assert "error" not in result, result
    assert result["duration"] > 0.1 and result["at"] == pytest.approx(result["duration"] / 2, abs=0.05)
    assert any(r is not None and r.startswith("bytes=") for r in ranges), ranges


async def raw_request(port: int, requests: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(requests)
    try:
        async with asyncio.timeout(seconds(10)):
            return await reader.read() if read_until_close else await reader.read(65536)
    finally:
        writer.close()


async def test_a_head_with_several_ranges_has_no_body_and_the_connection_goes_on(relay: RunningRelay) -> None:
    async with aiohttp.ClientSession() as http:
        session_id = await one_session(relay, http)
    path = f"/relay/sessions/{session_id}/recording.wav"
    size = (relay.data_dir / "sessions" / session_id / "recording.wav").stat().st_size
    auth = "".join(f"{k}: {v}\r\n" for k, v in relay.auth_headers().items())
    head = f"HEAD {path} HTTP/1.1\r\nHost: x\r\n{auth}Range: bytes=0-1,5-6\r\n\r\n"
    get = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await raw_request(relay.port, (head + get).encode())
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and f"Content-Length: {size}".encode() in first
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]  # the next answer, not the file


async def test_a_client_that_leaves_mid_download_leaves_no_error_in_the_log(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        session_id = await one_session(relay, http)
    recording = relay.data_dir / "sessions" / session_id / "recording.wav"
    recording.write_bytes(recording.read_bytes()[:44] + bytes(40 << 20))  # big enough to be mid-way when it leaves
    auth = "".join(f"{k}: {v}\r\n" for k, v in relay.auth_headers().items())
    request = f"GET /relay/sessions/{session_id}/recording.wav HTTP/1.1\r\nHost: x\r\n{auth}Range: bytes=0-1,5-6\r\n\r\n"
    with caplog.at_level("ERROR"):
        for _ in range(3):
            assert (await raw_request(relay.port, request.encode(), read_until_close=False)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.5)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []

"""`serve` keeps the fallback audio of its sessions on disk, under the session's folder, and leaves none of it
behind once the session ends (docs/client-input.md, "Memory")."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp

from relay.spool import SPOOL_FOLDER
from tests.support.relay_fixtures import running_relay
from tests.support.timing import seconds


async def test_serve_spools_kept_audio_under_the_session_folder_and_removes_it_at_session_end(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        sessions = relay.data_dir / "sessions"
        chunk = base64.b64encode(bytes(960)).decode()  # 20 ms of silence at 24 kHz
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            for _ in range(100):  # 2 s: within what server VAD keeps for a speech onset
                await ws.send_json({"type": "input_audio_buffer.append", "audio": chunk})
            async with asyncio.timeout(seconds(10)):
                while not list(sessions.glob(f"*/{SPOOL_FOLDER}/*.b64")):
                    await asyncio.sleep(0.02)
            assert relay.state.kept_audio.kept_bytes > 0
        async with asyncio.timeout(seconds(10)):
            while relay.state.bridges or list(sessions.glob(f"*/{SPOOL_FOLDER}")):
                await asyncio.sleep(0.02)
        assert relay.state.kept_audio.kept_bytes == 0
        assert relay.state.spool is not None
        writer = relay.state.spool._thread
    assert writer is not None and not writer.is_alive()  # the app's cleanup ends the spool's thread

"""`serve` with tls_cert_file and tls_key_file: https:// and wss:// on the same port (the page, the probes, a
session through a standard WebSocket client that verifies the certificate), a TLS handshake that never comes is
cut at the request head's deadline, and a certificate that does not load, or one file of the pair, is a config
error naming the setting (exit 2) with no traceback."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import websockets.asyncio.client

from tests.support.relay_fixtures import running_relay_process
from tests.support.timing import seconds
from tests.support.tls import self_signed_certificate


async def test_serve_answers_https_and_wss_with_its_certificate(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    env = {"RELAY_TLS_CERT_FILE": str(cert), "RELAY_TLS_KEY_FILE": str(key)}
    async with running_relay_process(tmp_path, env=env) as relay:
        listening = await relay.wait_for_log("relay.listening")
        assert listening["url"].startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            for path, status in (("/healthz", 200), ("/readyz", 200), ("/", 200)):
                async with http.get(f"https://127.0.0.1:{relay.port}{path}", ssl=trust) as response:
                    assert response.status == status, path
        own_page = {"Origin": f"https://127.0.0.1:{relay.port}"}
        async with websockets.asyncio.client.connect(
            f"wss://127.0.0.1:{relay.port}/v1/realtime", ssl=trust, additional_headers=own_page
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "over tls"}]}
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            async with asyncio.timeout(seconds(10)):
                while json.loads(await ws.recv())["type"] != "response.done":
                    pass
        with pytest.raises(ssl.SSLError):  # a client that does not trust the certificate is refused by itself
            await websockets.asyncio.client.connect(f"wss://127.0.0.1:{relay.port}/v1/realtime")


async def test_a_connection_that_never_starts_its_tls_handshake_is_closed_at_the_header_deadline(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    env = {"RELAY_TLS_CERT_FILE": str(cert), "RELAY_TLS_KEY_FILE": str(key), "RELAY_HEADER_TIMEOUT_SECONDS": "1"}
    async with running_relay_process(tmp_path, env=env) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            async with asyncio.timeout(seconds(10)):
                assert await reader.read() == b""  # closed by the relay, nothing sent
        finally:
            writer.close()


@pytest.mark.parametrize("which", ["both unreadable", "garbage", "only the certificate", "only the key"])
def test_a_certificate_that_does_not_load_is_a_config_error_naming_it(tmp_path: Path, which: str) -> None:
    cert, key = self_signed_certificate(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    env = {
        "both unreadable": {"RELAY_TLS_CERT_FILE": str(tmp_path / "none.pem"), "RELAY_TLS_KEY_FILE": str(tmp_path / "nokey.pem")},
        "garbage": {"RELAY_TLS_CERT_FILE": str(garbage), "RELAY_TLS_KEY_FILE": str(key)},
        "only the certificate": {"RELAY_TLS_CERT_FILE": str(cert)},
        "only the key": {"RELAY_TLS_KEY_FILE": str(key)},
    }[which]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--log-format", "json",
         "--log-dir", str(tmp_path / "logs"), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, env={**clean, **env}, cwd=tmp_path, timeout=seconds(30),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "tls_" in done.stderr and "Traceback" not in done.stderr + done.stdout

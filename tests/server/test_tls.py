"""`serve` with tls_cert_file and tls_key_file: https:// and wss:// on the same port (the page, the probes, a
session through a standard WebSocket client that verifies the certificate), a TLS handshake that never comes is
cut at the request head's deadline, a connection in its handshake holds a slot of max_connections (and gives it
back when the handshake fails), a request that arrives with the handshake's last bytes is answered, and a
certificate that does not load, or one file of the pair, is a config error naming the setting (exit 2) with no
traceback."""

from __future__ import annotations

import asyncio
import contextlib
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


async def _https_status(port: int, path: str, trust: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"https://127.0.0.1:{port}{path}", ssl=trust) as response:
        return response.status


async def _healthz_answers_again(port: int, trust: ssl.SSLContext) -> None:
    """Waits until a verified HTTPS /healthz gets 200: the relay sees closed connections in its own time."""
    async with asyncio.timeout(seconds(10)):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                if await _https_status(port, "/healthz", trust) == 200:
                    return
            await asyncio.sleep(0.05)


def _tls_env(tmp_path: Path, **more: str) -> tuple[dict[str, str], ssl.SSLContext]:
    """serve's TLS settings for a fresh self-signed certificate, and a client context that trusts it."""
    cert, key = self_signed_certificate(tmp_path)
    env = {"RELAY_TLS_CERT_FILE": str(cert), "RELAY_TLS_KEY_FILE": str(key), **more}
    return env, ssl.create_default_context(cafile=str(cert))


async def test_a_connection_still_in_its_tls_handshake_holds_a_slot_of_max_connections(tmp_path: Path) -> None:
    env, trust = _tls_env(tmp_path, RELAY_MAX_CONNECTIONS="3")
    async with running_relay_process(tmp_path, env=env) as relay:
        await relay.wait_for_log("relay.listening")
        # Three sockets that never start their handshake fill the house; more are closed at once, unread.
        silent = [await asyncio.open_connection("127.0.0.1", relay.port) for _ in range(3)]
        extra = [await asyncio.open_connection("127.0.0.1", relay.port) for _ in range(2)]
        try:
            async with asyncio.timeout(seconds(10)):
                for reader, _ in extra:
                    assert await reader.read() == b""
        finally:
            for _, writer in silent + extra:
                writer.close()
        # Their slots come back when they close: a verified HTTPS request goes through, and the refusals were counted.
        await _healthz_answers_again(relay.port, trust)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{relay.port}/metrics", ssl=trust) as response:
                metrics = await response.text()
        refused = [
            line for line in metrics.splitlines() if line.startswith('relay_connections_closed_total{reason="max_connections"}')
        ]
    # The two extra sockets at least (a probe that came before the silent ones' closes were seen is one more).
    assert refused and float(refused[0].split()[-1]) >= 2, metrics


async def test_a_request_sent_right_after_the_handshake_is_answered(tmp_path: Path) -> None:
    # A TLS 1.3 client's request often arrives with its last handshake message, before the relay has made the
    # connection's HTTP protocol: those bytes must reach it, in order, on every connection.
    env, trust = _tls_env(tmp_path)
    async with running_relay_process(tmp_path, env=env) as relay:
        await relay.wait_for_log("relay.listening")
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port, ssl=trust)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            async with asyncio.timeout(seconds(10)):
                assert (await reader.read()).startswith(b"HTTP/1.1 200 OK\r\n")
            writer.close()


async def test_failed_tls_handshakes_give_their_slots_back(tmp_path: Path) -> None:
    env, trust = _tls_env(tmp_path, RELAY_MAX_CONNECTIONS="2")
    async with running_relay_process(tmp_path, env=env) as relay:
        await relay.wait_for_log("relay.listening")
        for attempt in range(6):  # plain HTTP to a TLS port, and clients that refuse the certificate
            if attempt % 2:
                reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                async with asyncio.timeout(seconds(10)):
                    with contextlib.suppress(ConnectionError):
                        await reader.read()
                writer.close()
            else:
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await _https_status(relay.port, "/healthz", ssl.create_default_context())
        await _healthz_answers_again(relay.port, trust)
        assert "Traceback" not in b"".join(relay.raw_stdout).decode("utf-8", "replace")


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

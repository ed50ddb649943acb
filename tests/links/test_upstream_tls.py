"""`UpstreamLink` over wss://: the upstream's certificate is verified against the system's trust store (which
`SSL_CERT_FILE` points elsewhere, as OpenSSL documents), messages flow both ways over TLS, and a certificate the
link cannot trust, or a plain-TCP peer behind a wss:// URL, is `UpstreamUnavailable` without an HTTP status.

A real websockets server with a throwaway self-signed certificate (made by the openssl CLI) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from relay.errors import UpstreamUnavailable
from relay.links.upstream import UpstreamLink
from tests.support.timing import seconds

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a certificate")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_echo(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, ssl=context, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"wss://localhost:{port}/v1/realtime"


async def test_a_wss_upstream_with_a_trusted_certificate_carries_messages_both_ways(
    tls_echo: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    link = await UpstreamLink.connect(tls_echo, {}, open_timeout=seconds(5), backlog_limit=1 << 20)
    received: asyncio.Queue[str | bytes] = asyncio.Queue()
    link.attach(received.put_nowait)
    link.send('{"type":"ping","text":"привет"}')
    assert await asyncio.wait_for(received.get(), seconds(5)) == '{"type":"ping","text":"привет"}'
    await asyncio.wait_for(link.close(), seconds(5))
    assert link.close_code == 1000


async def test_a_certificate_the_link_cannot_trust_is_upstream_unavailable(
    tls_echo: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "none.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    with pytest.raises(UpstreamUnavailable) as caught:
        await UpstreamLink.connect(tls_echo, {}, open_timeout=seconds(5), backlog_limit=1 << 20)
    assert caught.value.status is None
    assert "certificate" in str(caught.value).lower()


async def test_a_plain_tcp_peer_behind_a_wss_url_is_upstream_unavailable() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nnot tls at all \x00\xff" * 10)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            await UpstreamLink.connect(f"wss://127.0.0.1:{port}/v1/realtime", {}, open_timeout=seconds(5), backlog_limit=1 << 20)
        assert caught.value.status is None
    finally:
        server.close()
        await server.wait_closed()

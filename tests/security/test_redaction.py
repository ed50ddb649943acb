"""Attacks that try to get client tokens and other secrets into the relay's output: the browser subprotocol that
aiohttp complains about, malformed requests whose tracebacks hold raw headers, tokens in query strings, URL
userinfo in `--print-config` and config errors. Every line the process writes is searched for the secrets.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from relay.redact import MASK, RedactingFormatter, redact_text, register_secret
from tests.server.test_process import run_serve
from tests.support.relay_fixtures import RelayProcess, running_relay_process
from tests.support.timing import seconds

STATIC = "static-client-token-0123456789"
SECRET = "token-secret-of-at-least-32-bytes-for-redaction"


async def send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), seconds(10))
    except (ConnectionError, TimeoutError):
        return b""
    finally:
        writer.close()


def everything_written(process: RelayProcess, stderr: bytes) -> str:
    return (b"".join(process.raw_stdout) + stderr).decode("utf-8", "replace")


async def test_tokens_never_reach_the_output_whatever_the_client_sends(tmp_path: Path) -> None:
    env = {"RELAY_CLIENT_TOKENS": STATIC, "RELAY_TOKEN_SECRET": SECRET}
    async with running_relay_process(tmp_path, args=["--log-level", "debug"], env=env) as relay:
        async with aiohttp.ClientSession() as http:
            async with http.post(relay.base_url + "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {STATIC}"}) as r:
                minted = (await r.json())["value"]
            for token in (STATIC, minted):
                # A browser offering only the token subprotocol: aiohttp logs that the protocols do not overlap.
                async with http.ws_connect(relay.ws_url, protocols=(f"openai-insecure-api-key.{token}",)) as ws:
                    await ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(relay.ws_url, protocols=("openai-insecure-api-key.wrong-token-abcdef",))
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(relay.ws_url + f"?api_key={STATIC}&token={minted}")
        for malformed in (
            f"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {STATIC}\x01\r\n\r\n",
            f"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {minted}\r\nX: {'a' * 9000}\r\n\r\n",
            f"GET /v1/realtime?token={STATIC} HTTP/9.9\r\nAuthorization: Api-Key {STATIC}\r\n\r\n",
            f"GARBAGE {STATIC} {minted}\r\n\r\n",
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {STATIC}\r\nContent-Length: x\r\n\r\n",
            f"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nSec-WebSocket-Protocol: openai-insecure-api-key.{STATIC}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bad\r\n\r\n",
        ):
            await send_raw(relay.port, malformed.encode("latin-1"))
        relay.terminate()
        assert await relay.wait() == 0
        assert relay.process.stderr is not None
        stderr = await relay.process.stderr.read()
    output = everything_written(relay, stderr)
    assert "relay.stopped" in output
    assert "overlap" in output  # the line that used to carry the token was written, redacted
    for secret in (STATIC, minted, SECRET, "wrong-token-abcdef"):
        assert secret not in output


async def test_tokens_a_client_puts_in_what_the_relay_records_never_reach_the_event_log(tmp_path: Path) -> None:
    """`relay.session_started` quotes the client's User-Agent: a token in it is masked in the event record (file and
    stdout copy) as in the daemon's line."""
    env = {"RELAY_CLIENT_TOKENS": STATIC, "RELAY_TOKEN_SECRET": SECRET, "RELAY_EVENT_LOG_STDOUT": "true"}
    async with running_relay_process(tmp_path, env=env) as relay:
        async with aiohttp.ClientSession() as http:
            async with http.post(relay.base_url + "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {STATIC}"}) as r:
                minted = (await r.json())["value"]
            headers = {"User-Agent": f"agent {STATIC} {minted}", "Authorization": f"Bearer {minted}"}
            async with http.ws_connect(relay.ws_url, headers=headers) as ws:
                await ws.receive(timeout=seconds(10))  # session.created: the session is open and logged
                await ws.close()
        relay.terminate()
        assert await relay.wait() == 0
        assert relay.process.stderr is not None
        stderr = await relay.process.stderr.read()
    files = [path.read_text() for path in (tmp_path / "logs").rglob("*.jsonl")]
    assert files and all("relay.session_started" in text and "agent " in text for text in files)
    for text in (*files, everything_written(relay, stderr)):
        for secret in (STATIC, minted):
            assert secret not in text


async def test_print_config_and_config_errors_hide_userinfo_and_secret_query_values(tmp_path: Path) -> None:
    upstream = "wss://user:hunter2-password@relay.example/v1/realtime?api_key=sk-query-secret&model=m"
    code, output = await run_serve("--print-config", "--upstream", upstream)
    assert code == 0
    assert "relay.example" in output and "model=m" in output
    assert "hunter2-password" not in output and "sk-query-secret" not in output
    code, output = await run_serve("--upstream", "https://user:hunter2-password@relay.example/?token=sk-query-secret")
    assert code == 2 and "upstream" in output
    assert "hunter2-password" not in output and "sk-query-secret" not in output
    code, output = await run_serve(
        "--print-config", env={"RELAY_REST_BASE": "ftp://u:hunter2-password@h/?secret=sk-query-secret"}
    )
    assert code == 2
    assert "hunter2-password" not in output and "sk-query-secret" not in output


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdef123456", "abcdef123456"),
        ("b'authorization: Api-Key abcdef123456\\r\\n'", "abcdef123456"),
        ("{'Authorization': 'Bearer abcdef123456'}", "abcdef123456"),
        ('"authorization": "abcdef123456"', "abcdef123456"),
        ("Client protocols ['openai-insecure-api-key.abcdef123456'] don't overlap", "abcdef123456"),
        ("x openai-insecure-api-key.abcdef123456, realtime", "abcdef123456"),
        ("wss://user:pa55word@h/v1", "pa55word"),
        ("GET /x?access_token=abcdef123456&b=1", "abcdef123456"),
        ("rt1.1700000000.nonce123.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nonce123.AAAA"),
        ("token ek_rt1.1700000000.nonce123.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nonce123.AAAA"),
        ("value=ek_rt2.1700000000.nonce123.eJyrVkrOz0nNTQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "eJyrVkrOz0nNTQ"),
        ("Cookie: session=abcdef123456", "abcdef123456"),
        ("X-Api-Key: abcdef123456", "abcdef123456"),
        ("argv: realtime-relay sim --api-key=abcdef123456", "abcdef123456"),
        ("argv: realtime-relay sim --api-key abcdef123456", "abcdef123456"),
        # A garbled header's repr escapes the byte that does not belong; the rest of the token is still masked.
        ("{'Authorization': 'Bearer abc\\x01bogus-token-ZZZ999'}", "bogus-token-ZZZ"),
        ("b'Authorization: Api-Key abc\\xffbogus-token-ZZZ999\\r\\nHost: h'", "bogus-token-ZZZ"),
        ("Bearer abcd\\u0001bogus-token-ZZZ999 in a message", "bogus-token-ZZZ"),
        ("['openai-insecure-api-key.ab\\x00bogus-token-ZZZ999']", "bogus-token-ZZZ"),
    ],
)
def test_redaction_masks_credentials_in_any_rendering(text: str, secret: str) -> None:
    shown = redact_text(text)
    assert secret not in shown and MASK in shown


def test_a_config_error_naming_the_api_key_flag_reads_whole() -> None:
    """`--api-key:` names the flag in an error message; it is not a header, and the problem after it is kept."""
    message = "config error: setting 'sim_api_key' from flag --api-key: is not valid UTF-8 text"
    assert redact_text(message) == message


@pytest.mark.parametrize("garbage", ["", "\x00\xff", "Authorization:", "Bearer", "://@", "?=&=", "a" * 100_000, "\udcff"])
def test_redaction_takes_any_text(garbage: str) -> None:
    assert isinstance(redact_text(garbage), str)


def test_registered_secrets_are_masked_in_every_logger_even_in_tracebacks() -> None:
    register_secret("registered-secret-value-42")
    formatter = RedactingFormatter(logging.Formatter("%(message)s"))
    try:
        raise ValueError("failed with registered-secret-value-42 inside")
    except ValueError as exc:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "boom %s", ("registered-secret-value-42",), (type(exc), exc, exc.__traceback__))
    shown = formatter.format(record)
    assert "registered-secret-value-42" not in shown and "ValueError" in shown

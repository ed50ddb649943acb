"""Attacks on the smaller edges: REST proxy methods and headers, terminal escapes in `logs`/`history` output,
ids with a trailing newline, file modes, spoofed `relay.*` events from an upstream, X-Forwarded-For from
untrusted peers, an unbounded session log, `/metrics` on the public listener, and saved-audio URLs that point
the page's token elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay.cli.history import format_item
from relay.core.items import SAFE_ITEM_ID_RE
from relay.core.outbox import LogEntry
from relay.eventlog.writer import EventLog
from relay.history.client import ConversationItem
from relay.redact import printable
from tests.support.conversations_fixtures import serving
from tests.support.relay_fixtures import running_relay, running_relay_process
from tests.support.timing import seconds

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m\r\u202e"
STATIC = "static-token-for-lows"


# ---- the REST proxy ----------------------------------------------------------------------------------------


@asynccontextmanager
async def rest_api() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """A stand-in REST API that answers everything with CORS headers of its own and records what reached it."""
    seen: list[tuple[str, dict[str, str]]] = []

    async def anything(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, dict(request.headers)))
        return web.json_response(
            {"object": "list", "data": []},
            headers={"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true", "X-Api": "1"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    async with serving(app) as base:
        yield base + "/v1", seen


async def test_the_rest_proxy_forwards_only_get_post_delete_and_listed_headers(tmp_path: Path) -> None:
    async with rest_api() as (base, seen):
        settings = {"client_tokens": STATIC, "rest_base": base}
        async with running_relay(tmp_path, settings=settings) as relay, aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {STATIC}"}
            for method in ("TRACE", "PUT", "PATCH", "PROPFIND", "OPTIONS", "CONNECTX"):
                async with http.request(method, relay.base_url + "/v1/conversations/c1", headers=auth) as response:
                    assert response.status in (400, 403, 405), method  # 400: the parser refuses the method itself
            assert seen == []
            extra = {**auth, "X-Forwarded-Host": "evil", "X-Custom": "no", "Accept": "application/json"}
            for method in ("GET", "POST", "DELETE"):
                async with http.request(method, relay.base_url + "/v1/conversations/c1", headers=extra) as response:
                    assert response.status == 200
                    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
                    assert response.headers["X-Api"] == "1"
    assert [m for m, _ in seen] == ["GET", "POST", "DELETE"]
    for _, headers in seen:
        lowered = {h.lower() for h in headers}
        assert "x-custom" not in lowered and "x-forwarded-host" not in lowered
        assert headers["Accept"] == "application/json"


# ---- terminal output -----------------------------------------------------------------------------------------


def test_history_output_shows_control_characters_instead_of_sending_them() -> None:
    item = ConversationItem.from_json(
        {"id": "item_1" + ESCAPES, "type": "message", "role": "assistant", "content": [{"type": "text", "text": "hi" + ESCAPES}]}
    )
    for json_lines in (False, True):
        line = format_item(item, json_lines=json_lines, width=None)
        assert not any(c in line for c in "\x1b\x07\x9b\r\u202e"), repr(line)
    assert json.loads(format_item(item, json_lines=True, width=None))["content"][0]["text"] == "hi" + ESCAPES


async def test_logs_output_shows_control_characters_instead_of_sending_them(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello" + ESCAPES}]}
            await ws.send_json({"type": "conversation.item.create", "item": item})
            await ws.send_json({"type": ESCAPES})
            await ws.send_json({"type": "response.create"})
            while (await ws.receive_json(timeout=seconds(5)))["type"] != "response.done":
                pass
    for extra in ([], ["--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "relay", "logs", str(tmp_path / "logs"), *extra],
            capture_output=True, timeout=seconds(60), check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout
        assert not any(c in result.stdout for c in (b"\x1b", b"\x07", b"\xc2\x9b", b"\r", "\u202e".encode())), extra


# ---- ids -----------------------------------------------------------------------------------------------------


async def test_ids_with_a_trailing_newline_are_not_ids(tmp_path: Path) -> None:
    assert SAFE_ITEM_ID_RE.fullmatch("item_1\n") is None
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        folder = relay.data_dir / "sessions" / "sess_1\n"
        folder.mkdir(parents=True)
        (folder / "item_1.wav").write_bytes(b"RIFF")
        for path in ("/relay/sessions/sess_1%0A/items/item_1.wav", "/relay/sessions/sess_1/items/item_1%0A.wav"):
            async with http.get(relay.base_url + path) as response:
                assert response.status == 404, path


# ---- file modes ------------------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_logs_and_saved_audio_are_private_to_the_relays_user_and_group(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path, upstream="sim") as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url + "?relay_events=1") as ws:
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
            await ws.send_json({"type": "conversation.item.create", "item": item})
            await ws.send_json({"type": "response.create"})
            while (await ws.receive_json(timeout=seconds(10)))["type"] != "relay.audio_saved":
                pass
        await relay.wait_for_log("relay.session_ended")
        relay.terminate()
        assert await relay.wait() == 0
    wavs = list((tmp_path / "data" / "sessions").glob("*/*.wav"))
    logs = list((tmp_path / "logs").glob("*/*.jsonl"))
    assert wavs and logs
    for path in [*wavs, *logs]:
        assert mode(path) == 0o640, path
        assert mode(path.parent) == 0o750, path.parent


# ---- spoofed relay.* events ------------------------------------------------------------------------------------


DEEP = "[" * 600 + "]" * 600
UNPARSEABLE_SPOOFS = (
    # A browser's JSON.parse reads any depth; Python's json reads NaN; escapes spell the type.
    '{"type": "relay.audio_saved", "item_id": "x", "url": "https://evil.example/nan", "n": NaN}',
    '{"type": "relay.upstream_resumed", "deep": ' + DEEP + "}",
    '{"type": "\\u0072elay.audio_saved", "url": "https://evil.example/esc", "n": -Infinity}',
    '{"type": "error", "error": {"event_id": "relay_retrieve_item_1"}, "deep": ' + DEEP + "}",
)


@asynccontextmanager
async def spoofing_upstream() -> AsyncIterator[str]:
    """An upstream that opens with session.created, then sends a relay.audio_saved pointing at another host."""

    async def realtime(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "session.created", "event_id": "e1", "session": {"id": "s1"}})
        await ws.send_json({"type": "relay.audio_saved", "item_id": "x", "url": "https://evil.example/steal"})
        await ws.send_json({"type": "relay.session_ended"})
        for text in UNPARSEABLE_SPOOFS:  # JSON the relay refuses, which laxer client parsers still read
            await ws.send_str(text)
        await ws.send_str('{"type": "rate_limits.updated", "x": NaN}')  # unparseable, and no spoof: forwarded
        await ws.send_json({"type": "rate_limits.updated", "event_id": "e2", "rate_limits": []})
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", realtime)
    async with serving(app) as base:
        yield base.replace("http://", "ws://") + "/v1/realtime"


async def test_relay_events_from_the_upstream_are_dropped_and_logged(tmp_path: Path) -> None:
    async with spoofing_upstream() as upstream:
        async with running_relay(tmp_path, settings={"upstream": upstream}) as relay, aiohttp.ClientSession() as http:
            async with http.ws_connect(relay.ws_url + "?relay_events=1") as ws:
                received = []
                while (event := await ws.receive_json(timeout=seconds(5))).get("event_id") != "e2":
                    received.append(event)
        (records,) = relay.session_records().values()  # the relay is stopped: every record is on disk
    assert "evil.example" not in json.dumps(received)
    assert [e["type"] for e in received] == ["session.created", "rate_limits.updated"]  # the NaN one, unread
    dropped = [r["event"]["type"] for r in records if r["type"] == "relay.upstream_event_dropped"]
    assert dropped == ["relay.audio_saved", "relay.session_ended", None, None, None, None]


# ---- X-Forwarded-For -------------------------------------------------------------------------------------------


async def session_remote(tmp_path: Path, settings: dict[str, Any], forwarded_for: str) -> str | None:
    async with running_relay(tmp_path, settings=settings) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url, headers={"X-Forwarded-For": forwarded_for}) as ws:
            await ws.receive_json(timeout=seconds(5))
    (records,) = relay.session_records().values()
    (started,) = [r for r in records if r["type"] == "relay.session_started"]
    return started["event"]["remote"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("settings", "forwarded_for", "expected"),
    [
        ({}, "203.0.113.7", "127.0.0.1"),  # nobody trusted: the header names nobody
        ({"forwarded_allow_ips": "127.0.0.1"}, "203.0.113.7", "203.0.113.7"),
        ({"forwarded_allow_ips": "127.0.0.0/8,10.0.0.0/8"}, "198.51.100.1, 203.0.113.7, 10.1.1.1", "203.0.113.7"),
        ({"forwarded_allow_ips": "127.0.0.1"}, "not-an-ip", "127.0.0.1"),
        ({"forwarded_allow_ips": "127.0.0.1"}, ",,, ", "127.0.0.1"),
        ({"forwarded_allow_ips": "10.0.0.1"}, "203.0.113.7", "127.0.0.1"),  # the peer is not the listed proxy
    ],
)
async def test_only_a_listed_proxy_names_the_client(
    tmp_path: Path, settings: dict[str, Any], forwarded_for: str, expected: str
) -> None:
    assert await session_remote(tmp_path, settings, forwarded_for) == expected


async def test_a_bad_forwarded_allow_ips_entry_is_a_config_error(tmp_path: Path) -> None:
    from relay.errors import ConfigError
    from relay.server.app import create_app
    from tests.support.relay_fixtures import relay_settings

    with pytest.raises(ConfigError, match="forwarded_allow_ips"):
        create_app(relay_settings(tmp_path, "sim", {"forwarded_allow_ips": "999.1.1.1"}))


# ---- one session's log size ------------------------------------------------------------------------------------


async def test_a_session_log_stops_at_max_session_log_bytes_and_says_so(tmp_path: Path) -> None:
    event_log = EventLog(tmp_path, max_session_bytes=8192)
    session = event_log.open_session("sess_big")
    for _ in range(200):
        session.append(LogEntry("client", "conversation.item.create", {"type": "conversation.item.create", "pad": "x" * 200}))
    session.append(LogEntry("relay", "relay.session_ended", {"reason": "client_closed"}))
    await session.aclose()
    event_log.close()
    (path,) = tmp_path.glob("*/sess_big.jsonl")
    assert path.stat().st_size < 8192 + 2048
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    gaps = [r for r in records if r["type"] == "relay.log_gap"]
    assert [g["event"]["reason"] for g in gaps] == ["size_limit"]
    assert records[-1]["type"] == "relay.session_ended"
    assert gaps[0]["event"]["to_seq"] == 200


# ---- /metrics on its own listener ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_metrics_port_moves_metrics_off_the_public_listener(tmp_path: Path) -> None:
    port = free_port()
    async with running_relay_process(tmp_path, env={"RELAY_METRICS_PORT": str(port)}) as relay:
        await relay.wait_for_log("relay.metrics_listening")
        async with aiohttp.ClientSession() as http:
            async with http.get(relay.base_url + "/metrics") as response:
                assert response.status == 404
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                assert "relay_active_sessions" in await response.text()
            async with http.get(relay.base_url + "/healthz") as response:
                assert response.status == 200


async def test_the_metrics_port_has_the_main_ports_guards(tmp_path: Path) -> None:
    """Auth off on loopback: a foreign Host is refused there too, and a request head that never ends is cut."""
    port = free_port()
    env = {"RELAY_METRICS_PORT": str(port), "RELAY_HEADER_TIMEOUT_SECONDS": "1"}
    async with running_relay_process(tmp_path, env=env) as relay:
        await relay.wait_for_log("relay.metrics_listening")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics", headers={"Host": "evil.example"}) as response:
                assert response.status == 403
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end of the head
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), seconds(5)) is not None  # closed by the relay, not the test
        finally:
            writer.close()


# ---- the page's saved-audio fetch --------------------------------------------------------------------------------


NODE_CHECK = """
const m = await import(process.argv[1]);
const out = {};
for (const u of JSON.parse(process.argv[2])) {
  try { out[String(u)] = m.relayRelativeUrl(u, "http://127.0.0.1:8080/").href; } catch { out[String(u)] = null; }
}
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_page_fetches_saved_audio_only_from_relative_same_origin_urls() -> None:
    module = Path(__file__).resolve().parents[2] / "relay" / "static" / "relay-client.js"
    urls = ["/relay/sessions/s/items/i.wav", "https://evil.example/x", "//evil.example/x", "/\\evil.example", "javascript:x", 5]
    result = subprocess.run(
        ["node", "--input-type=module", "-e", NODE_CHECK, str(module), json.dumps(urls)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    answers = json.loads(result.stdout)
    assert answers.pop("/relay/sessions/s/items/i.wav") == "http://127.0.0.1:8080/relay/sessions/s/items/i.wav"
    assert set(answers.values()) == {None}


def test_printable_keeps_text_and_newlines() -> None:
    assert printable("héllo\tworld\n") == "héllo\tworld\n"
    assert printable("\x1b[2J") == "\\u001b[2J"

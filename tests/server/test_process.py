"""`realtime-relay serve` as a process (docs/configuration.md, docs/lifecycle.md, docs/event-log.md): bind policy, SIGTERM drain, a slow client's
memory, and credentials that never leak. The simulator runs in the test process so the relay's RSS is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from relay.simulator import RunningSimulator, SimulatorOptions
from tests.support.relay_fixtures import RawWebSocket, RelayProcess, running_relay_process, start_counted_simulator
from tests.support.timing import seconds

MiB = 1024 * 1024


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    running, _ = await start_counted_simulator(SimulatorOptions(speed=0.0))
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def paced_sim() -> AsyncIterator[RunningSimulator]:
    running, _ = await start_counted_simulator(SimulatorOptions(speed=1.0))
    try:
        yield running
    finally:
        await running.close()


def turn(text: str) -> list[str]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return [json.dumps({"type": "conversation.item.create", "item": item}), json.dumps({"type": "response.create"})]


def session_logs(tmp_path: Path) -> list[list[dict[str, Any]]]:
    out = []
    for path in sorted((tmp_path / "logs").glob("*/*.jsonl")):
        out.append([json.loads(line) for line in path.read_bytes().split(b"\n") if line])
    return out


async def run_serve(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "serve",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), seconds(20))
    assert process.returncode is not None
    return process.returncode, (out + err).decode()


# ---- bind policy ------------------------------------------------------------------------------------------


async def test_non_loopback_bind_without_tokens_refuses_to_start_with_exit_2(tmp_path: Path) -> None:
    code, output = await run_serve("--host", "0.0.0.0", "--port", "0", "--upstream", "sim", "--log-dir", str(tmp_path))
    assert code == 2
    assert "'host'" in output and "client_tokens" in output and "--insecure-no-auth" in output


async def test_non_loopback_bind_with_insecure_no_auth_starts_with_a_warning(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path, args=["--host", "0.0.0.0", "--insecure-no-auth"]) as relay:
        warning = await relay.wait_for_log("relay.auth_disabled_insecure")
        assert warning["level"] == "warning"
        relay.terminate()
        assert await relay.wait() == 0


async def test_non_loopback_bind_with_client_tokens_starts(tmp_path: Path) -> None:
    env = {"RELAY_CLIENT_TOKENS": "tok-a,tok-b", "RELAY_TOKEN_SECRET": "s" * 32}
    async with running_relay_process(tmp_path, args=["--host", "0.0.0.0"], env=env) as relay:
        listening = await relay.wait_for_log("relay.listening")
        assert listening["auth"] is True
        relay.terminate()
        assert await relay.wait() == 0


async def test_loopback_bind_without_tokens_runs_with_auth_off_and_a_warning(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path) as relay:
        warning = await relay.wait_for_log("relay.auth_disabled")
        assert warning["level"] == "warning"
        assert (await relay.wait_for_log("relay.listening"))["auth"] is False
        relay.terminate()
        assert await relay.wait() == 0


async def test_without_credentials_serve_uses_the_simulator_and_says_so_first(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path, upstream=None) as relay:
        assert relay.log_lines[0]["msg"] == "relay.using_simulator"
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            assert (await ws.receive_json(timeout=seconds(5)))["type"] == "session.created"
        relay.terminate()
        assert await relay.wait() == 0


async def test_client_tokens_without_a_token_secret_warn_that_other_replicas_cannot_verify(tmp_path: Path) -> None:
    async with running_relay_process(tmp_path, env={"RELAY_CLIENT_TOKENS": "tok-a"}) as relay:
        warning = await relay.wait_for_log("relay.token_secret_random")
        assert warning["level"] == "warning"
        relay.terminate()
        assert await relay.wait() == 0


@pytest.mark.parametrize("content", [None, "", "  \n", b"\xff\xfe"])
async def test_unusable_token_secret_file_is_a_config_error_with_exit_2(tmp_path: Path, content: str | bytes | None) -> None:
    secret_file = tmp_path / "secret"
    if isinstance(content, bytes):
        secret_file.write_bytes(content)
    elif content is not None:
        secret_file.write_text(content)
    env = {"RELAY_CLIENT_TOKENS": "tok-a", "RELAY_TOKEN_SECRET_FILE": str(secret_file)}
    code, output = await run_serve("--port", "0", "--upstream", "sim", "--log-dir", str(tmp_path), env=env)
    assert code == 2
    assert "token_secret_file" in output


# ---- SIGTERM ----------------------------------------------------------------------------------------------


class CountingClient:
    """A client session that counts what it sent and every frame it received, up to the close."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.sent = 0
        self.received: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.first_delta = asyncio.Event()
        self.answers: dict[str, asyncio.Event] = {}
        self.reader = asyncio.create_task(self._read())

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)
        self.sent += 1

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message.type != WSMsgType.TEXT:
                self.close_code = self.ws.close_code
                return
            event = json.loads(message.data)
            self.received.append(event)
            if event["type"] == "response.output_audio.delta":
                self.first_delta.set()
            if event["type"] == "error" and event["error"].get("event_id") in self.answers:
                self.answers[event["error"]["event_id"]].set()

    async def probe(self, event_id: str) -> None:
        self.answers[event_id] = asyncio.Event()
        await self.send(json.dumps({"type": "x.relay_test.probe", "event_id": event_id}))
        await asyncio.wait_for(self.answers[event_id].wait(), seconds(5))


def check_log_matches_client(records: list[dict[str, Any]], client: CountingClient) -> None:
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert sum(r["dir"] == "client" for r in records) == client.sent
    assert sum(r["dir"] == "server" for r in records) == len(client.received)
    last = records[-1]
    assert last["type"] == "relay.session_ended"
    assert last["event"]["client_close_code"] == 1001
    assert last["event"]["reason"] == "drain"
    assert last["event"]["log_dropped"] == 0


async def test_sigterm_drains_live_sessions_then_closes_them_1001_with_every_record_logged(
    tmp_path: Path, paced_sim: RunningSimulator
) -> None:
    # Everything the test checks during the drain must fit in it, on a slow machine too; the reply stays ~4.5
    # drains long so the drain still cuts it.
    drain_s = seconds(1.5)
    env = {"RELAY_DRAIN_SECONDS": str(drain_s)}
    async with running_relay_process(tmp_path, upstream=paced_sim.realtime_url, env=env) as relay:
        async with aiohttp.ClientSession() as http:
            talking = CountingClient(await http.ws_connect(relay.ws_url))
            quiet = CountingClient(await http.ws_connect(relay.ws_url))
            words = round(40 * drain_s / 1.5)
            for frame in turn(" ".join(["word"] * words)):  # ~6 s of reply audio (unscaled), paced in real time
                await talking.send(frame)
            await asyncio.wait_for(talking.first_delta.wait(), seconds(5))
            await quiet.probe("before")

            relay.terminate()
            await relay.wait_for_log("relay.draining")
            async with http.get(relay.base_url + "/readyz") as resp:
                assert resp.status == 503
            async with http.get(relay.base_url + "/healthz") as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(relay.ws_url)
            assert refused.value.status == 503
            assert refused.value.headers is not None and int(refused.value.headers["Retry-After"]) >= 1
            await quiet.probe("during_drain")  # live sessions keep forwarding
            deltas_at_signal = len(talking.received)

            await asyncio.wait_for(asyncio.gather(talking.reader, quiet.reader), seconds(10))
            assert len(talking.received) > deltas_at_signal  # the reply kept streaming during the drain
            assert not any(e["type"] == "response.done" for e in talking.received)  # cut by the drain
        assert (talking.close_code, quiet.close_code) == (1001, 1001)
        assert await relay.wait() == 0
        await relay.wait_for_log("relay.stopped")
    logs = session_logs(tmp_path)
    assert len(logs) == 2
    (talking_log,) = [records for records in logs if any(r["type"] == "response.create" for r in records)]
    (quiet_log,) = [records for records in logs if records is not talking_log]
    check_log_matches_client(talking_log, talking)
    check_log_matches_client(quiet_log, quiet)


async def test_second_signal_forces_the_close_with_logs_flushed(tmp_path: Path, sim: RunningSimulator) -> None:
    env = {"RELAY_DRAIN_SECONDS": "60"}
    async with running_relay_process(tmp_path, upstream=sim.realtime_url, env=env) as relay:
        async with aiohttp.ClientSession() as http:
            client = CountingClient(await http.ws_connect(relay.ws_url))
            await client.probe("p1")
            relay.send_signal(signal.SIGTERM)
            await relay.wait_for_log("relay.draining")
            await client.probe("p2")
            relay.send_signal(signal.SIGINT)
            await asyncio.wait_for(client.reader, seconds(5))
        assert client.close_code == 1001
        assert await relay.wait(timeout=seconds(10)) == 0
    (records,) = session_logs(tmp_path)
    check_log_matches_client(records, client)


# ---- a slow client's memory -------------------------------------------------------------------------------


async def test_clients_that_never_read_are_aborted_and_relay_memory_stays_bounded(tmp_path: Path, sim: RunningSimulator) -> None:
    backlog, sessions = 256 * 1024, 2
    env = {"RELAY_MAX_CLIENT_BACKLOG_BYTES": str(backlog)}
    async with running_relay_process(tmp_path, upstream=sim.realtime_url, env=env) as relay:
        await warm_up(relay)
        baseline_kib = relay.rss_kib("VmRSS")
        clients = [await RawWebSocket.connect("127.0.0.1", relay.port, rcvbuf=4096) for _ in range(sessions)]
        try:
            for client in clients:
                for frame in turn(" ".join(f"w{i}" for i in range(2500))):  # ~7 min of reply audio, unpaced
                    await client.send_text(frame)

            ended = await relay.wait_for_logs(
                "relay.session_ended", lambda r: r.get("reason") == "client_too_slow", count=sessions, timeout=seconds(20)
            )
            peak_kib = relay.rss_kib("VmHWM")
            # The relay let go of the connections: reading what the kernel still holds ends, it does not hang.
            for client in clients:
                code, _, _ = await asyncio.wait_for(client.read_until_close(), seconds(10))
                assert code in (None, 1008)
        finally:
            for client in clients:
                client.close()
        assert [r["client_close_code"] for r in ended] == [1008] * sessions
        growth = (peak_kib - baseline_kib) * 1024
        assert growth < sessions * (backlog + 16 * MiB), f"RSS grew by {growth / MiB:.1f} MiB"
        relay.terminate()
        assert await relay.wait() == 0


async def warm_up(relay: RelayProcess) -> None:
    """One complete short session, so imports and allocator arenas are in place before measuring."""
    async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
        await ws.receive_json(timeout=seconds(5))
        for frame in turn("warm up"):
            await ws.send_str(frame)
        while (await ws.receive_json(timeout=seconds(5)))["type"] != "response.done":
            pass
    await relay.wait_for_log("relay.session_ended")


# ---- a log collector that stalls --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _session_with_a_place(http: aiohttp.ClientSession, url: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A session opened as a client does: a place is freed when the relay has ended the session, a moment after
    the client's close, so a `too_many_sessions` refusal is tried again (the error says "try again later") until
    the caller's timeout; a place never freed fails it. Any other first event fails at once."""
    while True:
        ws = await http.ws_connect(url)
        first = await ws.receive_json()
        if first["type"] == "session.created":
            break
        await ws.close()
        assert first["type"] == "error" and first["error"]["code"] == "too_many_sessions", first
        await asyncio.sleep(0.05)
    try:
        yield ws
    finally:
        await ws.close()


async def test_a_log_collector_that_stops_reading_stalls_no_session_and_no_probe(tmp_path: Path) -> None:
    """stdout is the records' only copy and nobody reads it: sessions, their places under max_sessions and the
    health probe go on as before; what could not wait is dropped and declared, and once the collector reads again
    every line it gets is one whole JSON object."""
    env = {
        "RELAY_EVENT_LOG_STDOUT": "true", "RELAY_EVENT_LOG_FILES": "false", "RELAY_MAX_SESSIONS": "2",
        "RELAY_LOG_QUEUE_MAX_BYTES": str(MiB), "RELAY_SIM_SPEED": "0", "RELAY_RECORD_SESSIONS": "false",
    }  # fmt: skip
    big_word = "x" * 60_000  # each turn logs it several times (the item, the reply, its transcript)
    async with running_relay_process(tmp_path, env=env) as relay, aiohttp.ClientSession() as http:
        relay.pause_stdout()
        for _ in range(8):  # one after another: a session whose records cannot be written must not keep its place
            async with asyncio.timeout(seconds(10)), _session_with_a_place(http, relay.ws_url) as ws:
                for _turn in range(3):
                    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": big_word}]}
                    await ws.send_json({"type": "conversation.item.create", "item": item})
                    await ws.send_json({"type": "response.create"})
                    while (await ws.receive_json())["type"] != "response.done":
                        pass
            async with asyncio.timeout(seconds(2)), http.get(f"{relay.base_url}/healthz") as health:
                assert health.status == 200
        relay.resume_stdout()
        await relay.wait_for_log("relay.session_ended", lambda r: True, timeout=seconds(10))
        relay.terminate()
        assert await relay.wait() == 0
    lines = [line for line in relay.raw_stdout if line.strip()]
    assert all(isinstance(json.loads(line), dict) for line in lines)  # no line cut into by another
    records = [json.loads(line) for line in lines]
    assert any(r.get("type") == "relay.log_gap" for r in records)  # what could not wait is declared


# ---- credentials never leak -------------------------------------------------------------------------------

API_KEY = "AQVN-test-api-key-7f3c9e1b"
IAM_TOKEN = "t1.test-iam-token-4d2a8b6c"
ROTATED_IAM_TOKEN = "t1.rotated-iam-token-9e8d7c"
CLIENT_TOKEN = "client-static-token-51ab"
WRONG_CLIENT_TOKEN = "wrong-client-token-62cd"
TOKEN_SECRET = "hmac-secret-for-tests-73ef-0123456789abcdef"


async def test_credentials_never_appear_in_logs_metrics_errors_pages_or_responses(tmp_path: Path) -> None:
    # The simulator accepts only the IAM token, so a working session proves the relay used it (docs/forwarding.md: it wins).
    iam_sim, _ = await start_counted_simulator(SimulatorOptions(speed=0.0, api_key=IAM_TOKEN))
    credentials_file = tmp_path / "yandex.env"
    credentials_file.write_text(f"YANDEX_IAM_TOKEN={IAM_TOKEN}\nYANDEX_FOLDER_ID=b1gtestfolder\n")
    env = {
        "YANDEX_API_KEY": API_KEY,
        "RELAY_CREDENTIALS_FILE": str(credentials_file),
        "RELAY_CLIENT_TOKENS": CLIENT_TOKEN,
        "RELAY_TOKEN_SECRET": TOKEN_SECRET,
        "RELAY_REST_BASE": iam_sim.rest_base,
    }
    seen: list[str] = []  # every response body, header and frame a client got
    auth = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    try:
        async with running_relay_process(tmp_path, upstream=iam_sim.realtime_url, env=env) as relay:
            async with aiohttp.ClientSession() as http:

                async def fetch(method: str, path: str, **kwargs: Any) -> int:
                    async with http.request(method, relay.base_url + path, **kwargs) as resp:
                        seen.append(str(dict(resp.headers)))
                        seen.append(await resp.text())
                        return resp.status

                assert await fetch("GET", "/") == 200
                assert await fetch("GET", "/healthz") == 200
                assert await fetch("GET", "/readyz") == 200
                assert await fetch("GET", "/relay/auth", headers={"Authorization": f"Bearer {WRONG_CLIENT_TOKEN}"}) == 401
                assert await fetch("POST", "/v1/realtime/client_secrets", headers=auth, json={}) == 200
                assert (
                    await fetch("POST", "/v1/realtime/client_secrets", headers=auth, json={"expires_after": {"seconds": 1}})
                    == 400
                )
                assert await fetch("POST", "/v1/conversations", headers=auth, json={}) == 200
                assert await fetch("GET", "/v1/conversations/conv_missing", headers=auth) == 404
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(relay.ws_url, headers={"Authorization": f"Bearer {WRONG_CLIENT_TOKEN}"})
                assert refused.value.status == 401

                async with http.ws_connect(relay.ws_url + "?model=m&api_key=" + WRONG_CLIENT_TOKEN, headers=auth) as ws:
                    for frame in turn("hello"):
                        await ws.send_str(frame)
                    while True:
                        message = await ws.receive(timeout=seconds(5))
                        seen.append(str(message.data))
                        if json.loads(message.data)["type"] == "response.done":
                            break

                # A rotated (now wrong) token is picked up on the next connect and refused upstream with 401.
                credentials_file.write_text(f"YANDEX_IAM_TOKEN={ROTATED_IAM_TOKEN}\nYANDEX_FOLDER_ID=b1gtestfolder\n")
                async with http.ws_connect(relay.ws_url, headers=auth) as ws:
                    message = await ws.receive(timeout=seconds(5))
                    seen.append(str(message.data))
                    error = json.loads(message.data)["error"]
                    assert error["code"] == "upstream_unavailable" and "401" in error["message"]

                assert await fetch("GET", "/metrics") == 200
            await relay.wait_for_log("relay.auth_failed")
            relay.terminate()
            assert await relay.wait() == 0
            assert relay.process.stderr is not None
            stderr = await relay.process.stderr.read()
    finally:
        await iam_sim.close()

    written = [path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and path != credentials_file]
    outputs = [b"".join(relay.raw_stdout), stderr, *written]
    assert any(b"relay.upstream_unavailable" in out for out in outputs)
    for secret in (API_KEY, IAM_TOKEN, ROTATED_IAM_TOKEN, CLIENT_TOKEN, WRONG_CLIENT_TOKEN, TOKEN_SECRET):
        for out in outputs:
            assert secret.encode() not in out, secret
    for secret in (API_KEY, IAM_TOKEN, ROTATED_IAM_TOKEN, TOKEN_SECRET):
        for text in seen:
            assert secret not in text, secret


async def test_a_vanished_clients_close_code_reads_as_a_number_on_the_console_log(tmp_path: Path) -> None:
    """aiohttp reports a client that vanished as an enum member; the daemon's console lines show 1006, as JSON does."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with running_relay_process(tmp_path, args=("--log-format", "console", "--port", str(port)), wait_listening=False) as relay:
        async with asyncio.timeout(seconds(20)):
            while True:
                with contextlib.suppress(OSError):
                    client = await RawWebSocket.connect("127.0.0.1", port)
                    break
                await asyncio.sleep(0.05)
        assert client.status == 101
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sock.close()  # a reset: no close frame
        async with asyncio.timeout(seconds(10)):
            while not any(b"relay.session_ended" in line for line in relay.raw_stdout):
                await asyncio.sleep(0.05)
    (ended,) = [line.decode() for line in relay.raw_stdout if b"relay.session_ended" in line]
    assert "client_close_code=1006" in ended and "WSCloseCode" not in ended

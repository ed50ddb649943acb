"""`logs` on event logs written by a REAL relay session against the real simulator (loopback, port 0).

Session A (`delay_ms=20`): a voice turn, then a turn the user barges in on, then the barge-in's own turn.
Session B (`retrieve_fail`): a voice turn whose retrieves all fail. The simulator sends every server event
`delay_ms` late, one after another, so speech end -> first audio is at least that delay times the number of
server events in between (a known timing, checked as a lower bound, never as a performance target). Turn
counts, statuses, audio seconds and retrieve results are exact.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay.cli.main import main
from relay.eventlog.writer import EventLog
from relay.inspect.summary import summarize
from relay.server.app import create_app
from relay.settings import Settings
from relay.simulator import SimulatorOptions, start_simulator
from tests.support.speechlike import synthesize
from tests.support.timing import seconds

RATE = 24000
DELAY_MS = 20
CHUNK_BYTES = RATE * 20 // 1000 * 2  # 20 ms of PCM16 mono


class Client:
    """A raw WebSocket client of the relay that keeps every event it receives, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.appended_ms = 0.0
        self.sent = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            async with self._changed:
                self.events.append(json.loads(msg.data))
                self._changed.notify_all()

    async def wait_for(self, what: Callable[[dict[str, Any]], bool], after: int = 0) -> int:
        """Index of the first received event from `after` on that satisfies `what`."""
        async with asyncio.timeout(seconds(30)), self._changed:
            while True:
                for i in range(after, len(self.events)):
                    if what(self.events[i]):
                        return i
                await self._changed.wait()

    async def append(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), CHUNK_BYTES):
            chunk = pcm[i : i + CHUNK_BYTES]
            await self.ws.send_str(json.dumps(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
            self.appended_ms += len(chunk) / 2 / RATE * 1000
            self.sent += 1

    def audio_received_ms(self) -> float:
        return sum(len(base64.b64decode(e["delta"])) / 2 / RATE * 1000
                   for e in self.events if e["type"] == "response.output_audio.delta")

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


def is_type(type_: str, status: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def match(e: dict[str, Any]) -> bool:
        return e["type"] == type_ and (status is None or e["response"]["status"] == status)

    return match


@dataclass
class Recorded:
    log_dir: Path
    data_dir: Path
    a: Client
    b: Client


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Run the two sessions once through a real relay and simulator; every test reads the logs they left."""
    root = tmp_path_factory.mktemp("relay_logs")
    return asyncio.run(_record(root))


async def _record(root: Path) -> Recorded:
    sim = await start_simulator(SimulatorOptions(speed=1.0))
    settings = Settings(
        upstream=sim.realtime_url, log_dir=str(root / "logs"), data_dir=str(root / "data"),
        forward_query_params=("delay_ms", "retrieve_fail"), retrieve_timeout_seconds=5.0,
    )
    event_log = EventLog(root / "logs")
    runner = web.AppRunner(create_app(settings, event_log=event_log), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/realtime"
    try:
        async with aiohttp.ClientSession() as http:
            a = await _session_a(http, f"{base}?delay_ms={DELAY_MS}")
            b = await _session_b(http, f"{base}?retrieve_fail=1")
    finally:
        await runner.cleanup()
        event_log.close()
        await sim.close()
    return Recorded(root / "logs", root / "data", a, b)


async def _session_a(http: aiohttp.ClientSession, url: str) -> Client:
    first = synthesize(RATE, utterances=(0.9,), seed=1).pcm
    second = synthesize(RATE, utterances=(0.8,), seed=2).pcm
    interruption = synthesize(RATE, utterances=(0.7,), lead_s=0.1, seed=3).pcm
    client = Client(await http.ws_connect(url))
    await client.append(first)
    done1 = await client.wait_for(is_type("response.done"))
    await client.append(second)
    # Speak again as soon as the assistant's answer starts playing: the simulator cancels that response.
    created2 = await client.wait_for(is_type("response.created"), after=done1 + 1)
    await client.wait_for(is_type("response.output_audio.delta"), after=created2 + 1)
    await client.append(interruption)
    cancelled = await client.wait_for(is_type("response.done", "cancelled"), after=created2 + 1)
    await client.wait_for(is_type("response.done", "completed"), after=cancelled + 1)
    await client.close()
    return client


async def _session_b(http: aiohttp.ClientSession, url: str) -> Client:
    client = Client(await http.ws_connect(url))
    await client.append(synthesize(RATE, utterances=(0.6,), seed=4).pcm)
    await client.wait_for(is_type("response.done", "completed"))
    await client.close()
    return client


def session_file(recorded: Recorded, index: int) -> Path:
    files = sorted(recorded.log_dir.rglob("*.jsonl"), key=lambda p: p.read_text().split("\n", 1)[0])
    assert len(files) == 2
    return files[index]


def raw_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_session(recorded: Recorded) -> dict[str, dict[str, Any]]:
    result = summarize(recorded.log_dir)
    assert result.warnings.total == 0
    return {s["files"][0]: s for s in result.sessions}


def test_the_voice_turn_the_barge_in_and_its_answer_are_three_turns(recorded: Recorded) -> None:
    s = by_session(recorded)[str(session_file(recorded, 0))]
    assert s["turn_count"] == 3
    assert [t["status"] for t in s["turns"]] == ["completed", "cancelled", "completed"]
    assert [t["barge_in"] for t in s["turns"]] == [False, True, False]
    assert s["barge_in_count"] == 1
    assert all(len(t["user_item_ids"]) == 1 and t["input"] == "audio" for t in s["turns"])
    assert (s["ended"], s["end_reason"], s["client_close_code"]) == (True, "client_closed", 1000)
    assert s["error_count"] == 0


def test_speech_to_first_audio_agrees_with_the_log_and_the_simulators_delay(recorded: Recorded) -> None:
    path = session_file(recorded, 0)
    s = by_session(recorded)[str(path)]
    records = raw_records(path)
    server = [r for r in records if r["dir"] == "server"]
    expected = []
    for stop_at, record in enumerate(server):
        if record["type"] != "input_audio_buffer.speech_stopped":
            continue
        first = next(i for i in range(stop_at, len(server)) if server[i]["type"] == "response.output_audio.delta")
        latency = server[first]["t_ms"] - record["t_ms"]
        expected.append(round(latency, 3))
        # Each server event after the stop was sent DELAY_MS after the previous one; allow one for the
        # stop's own transit (a lower bound only: a slow machine adds, never subtracts).
        assert latency >= (first - stop_at - 1) * DELAY_MS
    assert [t["speech_to_first_audio_ms"] for t in s["turns"]] == expected
    latency = s["latency_ms"]["speech_to_first_audio"]
    assert (latency["count"], latency["max"]) == (3, max(expected))
    assert latency["p50"] == sorted(expected)[1]


def test_audio_seconds_match_what_the_client_sent_and_received(recorded: Recorded) -> None:
    s = by_session(recorded)[str(session_file(recorded, 0))]
    assert s["audio_s"]["in"] == pytest.approx(recorded.a.appended_ms / 1000, abs=0.002)
    assert s["audio_s"]["out"] == pytest.approx(recorded.a.audio_received_ms() / 1000, abs=0.002)
    assert s["events"]["client"] == recorded.a.sent
    assert s["event_types"]["client"] == {"input_audio_buffer.append": recorded.a.sent}


def test_every_audio_item_was_retrieved_and_saved_in_the_normal_session(recorded: Recorded) -> None:
    s = by_session(recorded)[str(session_file(recorded, 0))]
    retrieves = s["retrieves"]
    assert retrieves["total"] >= 5  # three user items and at least the two completed assistant items
    assert retrieves["by_result"] == {"retrieved": retrieves["total"]}
    assert s["latency_ms"]["retrieve_round_trip"]["count"] == retrieves["total"]
    assert {a["item_id"] for a in s["audio_saved"]} == {r["item_id"] for r in retrieves["items"]}
    assert all(Path(a["path"]).is_file() for a in s["audio_saved"])


def test_failed_retrieves_are_errors_with_their_round_trip(recorded: Recorded) -> None:
    path = session_file(recorded, 1)
    s = by_session(recorded)[str(path)]
    assert s["turn_count"] == 1
    retrieves = s["retrieves"]
    failed = [r for r in raw_records(path) if r["type"] == "relay.retrieve_failed"]
    assert retrieves["total"] >= 2  # the user's item and the assistant's
    assert retrieves["by_result"] == {"error": retrieves["total"]}
    assert len(failed) == retrieves["total"]
    assert [(e["kind"], e["item_id"]) for e in s["errors"]] == [
        ("retrieve_failed", r["event"]["item_id"]) for r in failed
    ]
    assert s["latency_ms"]["retrieve_round_trip"]["count"] == retrieves["total"]


def test_the_cli_summarizes_the_real_logs_and_links_the_saved_wavs(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "pages"
    code = main(["logs", str(recorded.log_dir), "--json", "--html", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0
    sessions = [json.loads(line) for line in out.splitlines()]
    assert sorted(s["turn_count"] for s in sessions) == [1, 3]
    for s in sessions:
        page = (out_dir / f"{s['session_id']}.html").read_text()
        for saved in s["audio_saved"]:
            assert f'href="{os.path.relpath(saved["path"], out_dir)}"' in page
    assert "wrote" in err

"""A dropped upstream does not end the client's session: the relay reconnects, rebuilds the session on the new
upstream and goes on (docs/resume.md). Real relay, real simulator behind a pass-through that drops on command
(tests/resume_fixtures.py), real aiohttp clients."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from audio import pcm as pcmlib
from relay.simulator import SimulatorOptions, start_simulator
from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.resume_fixtures import DroppingProxy, dropping_proxy
from tests.support.speechlike import synthesize
from tests.support.timing import seconds

Event = dict[str, Any]


@asynccontextmanager
async def relay_behind_proxy(
    tmp_path: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    sim_speed: float = 0.0,
    sim_knobs: Mapping[str, Any] | None = None,
) -> AsyncIterator[tuple[RunningRelay, DroppingProxy]]:
    sim = await start_simulator(SimulatorOptions(speed=sim_speed, knobs=dict(sim_knobs or {})))
    try:
        async with dropping_proxy(sim.realtime_url) as proxy:
            async with running_relay(tmp_path, settings={"upstream": proxy.url, **(settings or {})}) as relay:
                yield relay, proxy
    finally:
        await sim.close()


class Client:
    """An aiohttp client that keeps every event it received (and fails the test on none)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        await self.ws.send_str(json.dumps(event))

    async def until(self, done: Callable[[Event], bool], timeout: float = 10.0) -> list[Event]:
        start = len(self.events)
        async with asyncio.timeout(seconds(timeout)):
            while True:
                message = await self.ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"socket ended before the awaited event: {message.type} {self.ws.close_code}")
                event = json.loads(message.data)
                self.events.append(event)
                if done(event):
                    return self.events[start:]

    async def text_turn(self, text: str) -> str:
        """Say `text`, ask for a response, return the reply's text."""
        await self.send(user_text(text))
        await self.send({"type": "response.create"})
        done = (await self.until(lambda e: e["type"] == "response.done"))[-1]
        part = done["response"]["output"][0]["content"][0]
        return str(part.get("text") or part.get("transcript"))

    def types(self) -> list[str]:
        return [str(e["type"]) for e in self.events]


def user_text(text: str) -> Event:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


@asynccontextmanager
async def client(relay: RunningRelay, query: str = "?relay_events=1") -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url + query) as ws:
        c = Client(ws)
        await c.until(lambda e: e["type"] == "session.created")
        yield c


async def session_log(relay: RunningRelay) -> list[Event]:
    async with asyncio.timeout(seconds(10)):
        while True:
            records = relay.session_records()
            if records and all(r and r[-1]["type"] == "relay.session_ended" for r in records.values()):
                (log,) = records.values()
                return log
            await asyncio.sleep(0.02)


def relay_types(log: list[Event]) -> list[str]:
    return [r["type"] for r in log if r["dir"] == "relay"]


async def test_a_drop_between_turns_is_resumed_and_the_next_turn_remembers_the_earlier_context(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            await c.send({"type": "session.update", "event_id": "upd1", "session": {"instructions": "be brief"}})
            await c.until(lambda e: e["type"] == "session.updated")
            assert await c.text_turn("my name is Ada") == 'You said: "my name is Ada".'
            first = await proxy.connection(0)
            await first.drop()
            resumed = (await c.until(lambda e: e["type"] == "relay.upstream_resumed"))[-1]
            second = await proxy.connection(1)
            assert await c.text_turn("what do you recall?") == 'Earlier you said: "my name is Ada".'
            assert await c.text_turn("recall again") == 'Earlier you said: "my name is Ada" | "what do you recall?".'
        log = await session_log(relay)
    interrupted = next(e for e in c.events if e["type"] == "relay.upstream_interrupted")
    assert interrupted["close_code"] == 1006
    assert (resumed["attempt"], resumed["items_restored"], resumed["items_dropped"]) == (1, 2, 0)
    assert "error" not in c.types()
    assert c.types().count("session.created") == 1  # the new upstream's session events stay hidden
    assert c.types().count("session.updated") == 1
    # The new upstream got the effective configuration, then the items with their original ids, in order.
    restore = [f for f in second.from_relay if f.get("event_id", "").startswith("relay_resume")]
    assert restore[0]["type"] == "session.update" and restore[0]["session"]["instructions"] == "be brief"
    original_ids = [e["item"]["id"] for e in c.events if e["type"] == "conversation.item.done"][:2]
    assert [f["item"]["id"] for f in restore[1:3]] == original_ids
    assert [f["item"]["content"][0]["type"] for f in restore[1:3]] == ["input_text", "output_text"]
    # The log tells the whole story.
    story = relay_types(log)
    for record in ("relay.upstream_interrupted", "relay.upstream_resume_attempt", "relay.upstream_resumed"):
        assert record in story
    assert "session.created" in story  # the new upstream's, logged as the relay's
    assert log[-1]["event"]["resumes"] == 1 and log[-1]["event"]["reason"] == "client_closed"
    assert relay.state.metrics.resumes["ok"] == 1


async def test_a_drop_during_a_response_ends_it_failed_and_the_session_goes_on(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path, sim_speed=1.0) as (relay, proxy):
        async with client(relay) as c:
            await c.send(user_text("tell me something long enough to be cut"))
            await c.send({"type": "response.create"})
            await c.until(lambda e: e["type"] == "response.output_audio.delta")
            await (await proxy.connection(0)).drop()
            cut = await c.until(lambda e: e["type"] == "relay.upstream_resumed")
            failed = next(e for e in cut if e["type"] == "response.done")
            assert await c.text_turn("recall") == 'Earlier you said: "tell me something long enough to be cut".'
        await session_log(relay)
    created = next(e for e in c.events if e["type"] == "response.created")
    assert failed["response"]["id"] == created["response"]["id"]
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["status_details"]["error"]["code"] == "upstream_interrupted"
    assert failed["event_id"].startswith("relay_")
    assert "error" not in c.types()  # a client that stops on any error keeps running


async def test_a_drop_while_the_user_is_speaking_sends_the_buffered_audio_to_the_new_upstream(tmp_path: Path) -> None:
    clip = synthesize(rate=24000, utterances=(1.2,), seed=4, tail_s=1.0)
    chunk = 24000 // 50 * 2
    chunks = [clip.pcm[i : i + chunk] for i in range(0, len(clip.pcm), chunk)]
    speech_start, speech_end = clip.utterances[0]
    middle = int((speech_start + speech_end) / 2 * 50)  # the chunk in the middle of the utterance
    # Retrieves without audio: the user item is saved from what crossed the relay, which must line up with what
    # the new upstream heard (its audio time 0 is where the re-sent audio starts).
    async with relay_behind_proxy(tmp_path, sim_knobs={"retrieve_no_audio": True}) as (relay, proxy):
        async with client(relay) as c:
            for piece in chunks[:middle]:
                await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()})
            first = await proxy.connection(0)
            await proxy.until(first, lambda frames: len(frames) >= middle)
            await first.drop()
            for piece in chunks[middle:]:  # the user goes on speaking during the gap
                await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()})
            await c.until(lambda e: e["type"] == "conversation.item.input_audio_transcription.completed", timeout=20)
            second = await proxy.connection(1)
            done = next(e for e in c.events if e["type"] == "conversation.item.input_audio_transcription.completed")
            started = next(e for e in c.events if e["type"] == "input_audio_buffer.speech_started" and e["item_id"] == done["item_id"])
            await c.until(lambda e: e["type"] == "relay.audio_saved" and e["item_id"] == started["item_id"])
        log = await session_log(relay)
    transcript = next(e for e in c.events if e["type"] == "conversation.item.input_audio_transcription.completed")["transcript"]
    heard_s = float(transcript.strip("[]").split()[1])
    assert heard_s >= 0.9 * (speech_end - speech_start)  # the whole utterance, not just what came after the drop
    appends = [f for f in second.from_relay if f["type"] == "input_audio_buffer.append"]
    resent = [f for f in appends if f.get("event_id", "").startswith("relay_resume")]
    assert resent and appends[: len(resent)] == resent  # the buffered audio first, then the gap's
    assert len(appends) - len(resent) == len(chunks) - middle
    resent_records = [r for r in log if r["dir"] == "relay" and r["type"] == "input_audio_buffer.append"]
    assert len(resent_records) == len(resent)
    assert all(r["event"]["audio"]["audio_ms"] == 20 for r in resent_records)  # summarized, never the audio
    saved = pcmlib.read_wav(relay.data_dir / "sessions" / log[0]["session_id"] / f"{started['item_id']}.wav")[0]
    stopped = next(e for e in c.events if e["type"] == "input_audio_buffer.speech_stopped" and e["item_id"] == done["item_id"])
    assert len(saved) == (stopped["audio_end_ms"] - started["audio_start_ms"]) * 48
    origin_ms = (middle - len(resent)) * 20  # where the re-sent audio starts in what the client appended
    assert clip.pcm.find(saved) == (origin_ms + started["audio_start_ms"]) * 48


async def test_an_upstream_refusing_the_reconnect_ends_with_1014_soon_after_the_last_attempt(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            proxy.refuse = 503
            dropped = time.monotonic()
            await (await proxy.connection(0)).drop()
            await c.until(lambda e: e["type"] == "error", timeout=15)
            last_attempt = proxy.last_handshake_at
            message = await c.ws.receive(timeout=seconds(5))
            closed = time.monotonic()
        log = await session_log(relay)
    assert proxy.handshakes == 1 + 3
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and c.ws.close_code == 1014
    assert closed - last_attempt < seconds(1.0)
    assert closed - dropped >= 0.25 + 0.5 + 1.0  # the backoff's shortest jittered waits
    assert c.events[-1]["error"]["code"] == "upstream_disconnected"
    assert c.types().count("error") == 1 and "relay.upstream_resumed" not in c.types()
    story = relay_types(log)
    assert story.count("relay.upstream_resume_attempt") == 3
    assert "relay.upstream_resume_failed" in story
    assert log[-1]["event"]["reason"] == "upstream_disconnected" and log[-1]["event"]["resumes"] == 0
    assert log[-1]["event"]["upstream_close_code"] == 1006  # the dropped upstream's, as without a resume
    assert relay.state.metrics.resumes["failed"] == 1
    assert b'relay_upstream_resumes_total{result="failed"} 1.0' in relay.state.metrics.render()


async def test_a_normal_close_is_not_resumed(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            await (await proxy.connection(0)).close(1000)
            message = await c.ws.receive(timeout=seconds(5))
        log = await session_log(relay)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and c.ws.close_code == 1000
    assert proxy.handshakes == 1
    assert "relay.upstream_interrupted" not in relay_types(log)


async def test_an_upstream_that_breaks_the_protocol_is_not_resumed(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            await (await proxy.connection(0)).break_protocol()
            with pytest.raises(AssertionError, match="socket ended"):
                await c.until(lambda e: False, timeout=5)
        log = await session_log(relay)
    assert c.ws.close_code == 1014
    (error,) = [e for e in c.events if e["type"] == "error"]
    assert error["error"]["code"] == "upstream_disconnected" and "1007" in error["error"]["message"]
    assert proxy.handshakes == 1
    assert "relay.upstream_interrupted" not in relay_types(log)
    assert log[-1]["event"]["reason"] == "upstream_disconnected" and log[-1]["event"]["resumes"] == 0


@pytest.mark.parametrize("code", [1011, 1012])
async def test_a_server_error_close_is_resumed(tmp_path: Path, code: int) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            await (await proxy.connection(0)).close(code)
            await c.until(lambda e: e["type"] == "relay.upstream_resumed")
            assert await c.text_turn("still there?") == 'You said: "still there?".'
    assert next(e for e in c.events if e["type"] == "relay.upstream_interrupted")["close_code"] == code


async def test_without_relay_events_the_client_sees_no_trace_of_a_drop_between_turns(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay, query="") as c:
            assert await c.text_turn("one") == 'You said: "one".'
            await (await proxy.connection(0)).drop()
            await proxy.connection(1)
            assert await c.text_turn("recall") == 'Earlier you said: "one".'
    assert not [t for t in c.types() if t.startswith("relay.")]
    assert c.types().count("session.created") == 1


TOOLS = [
    {"name": "lookup", "description": "finds things", "handler": "python:tests.support.tools_handlers:lookup"},
    {"name": "slow", "description": "takes its time", "handler": "python:tests.support.tools_handlers:slow"},
]


async def tool_turn(c: Client, text: str) -> str:
    """Say `text` (which makes the model call a server tool), and return the reply that follows the tool's output
    (the call's own response reaches the client with its hidden call stripped: no output)."""
    await c.send(user_text(text))
    await c.send({"type": "response.create"})
    done = (await c.until(lambda e: e["type"] == "response.done" and e["response"]["output"] != []))[-1]
    part = done["response"]["output"][0]["content"][0]
    return str(part.get("text") or part.get("transcript"))


async def test_server_tools_and_their_calls_survive_a_resume(tmp_path: Path) -> None:
    """The new upstream gets the server tools with the configuration, and the calls already answered come back as
    function_call and function_call_output items, so the model can still call them and remembers their results."""
    async with relay_behind_proxy(tmp_path, settings={"tools": TOOLS}) as (relay, proxy):
        async with client(relay) as c:
            assert (await tool_turn(c, 'call lookup {"q": 1}')).startswith("Tool lookup returned: ")
            await (await proxy.connection(0)).drop()
            await c.until(lambda e: e["type"] == "relay.upstream_resumed")
            second = await proxy.connection(1)
            assert (await tool_turn(c, 'call lookup {"q": 2}')).startswith("Tool lookup returned: ")
        log = await session_log(relay)
    restore = [f for f in second.from_relay if f.get("event_id", "").startswith("relay_resume")]
    assert restore[0]["type"] == "session.update"
    assert [t["name"] for t in restore[0]["session"]["tools"]] == ["lookup", "slow"]
    restored_types = [f["item"]["type"] for f in restore[1:]]
    assert "function_call" in restored_types and "function_call_output" in restored_types
    assert [r["event"]["result"] for r in log if r["type"] == "relay.tool_call"] == ["ok", "ok"]


async def test_a_drop_while_a_server_tool_runs_neither_fails_its_finished_response_nor_loses_the_call(
    tmp_path: Path,
) -> None:
    async with relay_behind_proxy(tmp_path, settings={"tools": TOOLS}) as (relay, proxy):
        async with client(relay) as c:
            await c.send(user_text('call slow {"ms": 1500}'))
            await c.send({"type": "response.create"})
            first_done = (await c.until(lambda e: e["type"] == "response.done"))[-1]  # the call's, stripped
            await (await proxy.connection(0)).drop()
            await c.until(lambda e: e["type"] == "relay.upstream_resumed")
            answer = await c.until(lambda e: e["type"] == "response.done" and e["response"]["output"] != [])
        await session_log(relay)
    dones = [e for e in c.events if e["type"] == "response.done"]
    assert [e["response"]["id"] for e in dones].count(first_done["response"]["id"]) == 1  # not failed a second time
    assert "upstream_interrupted" not in json.dumps(dones)
    text = answer[-1]["response"]["output"][0]["content"][0]
    assert (text.get("text") or text.get("transcript")) == "Tool slow returned: slow done"


async def test_a_drop_before_the_first_session_created_still_gives_the_client_one(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        proxy.drop_at_open = 1
        async with client(relay) as c:  # waits for session.created
            assert await c.text_turn("hello") == 'You said: "hello".'
        log = await session_log(relay)
    assert c.types().count("session.created") == 1
    assert [r["dir"] for r in log if r["type"] == "session.created"] == ["server"]
    assert relay_types(log).count("relay.upstream_resumed") == 1


async def test_a_session_that_ends_while_waiting_to_retry_counts_only_the_attempts_made(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay):
            proxy.refuse = 503
            await (await proxy.connection(0)).drop()
            async with asyncio.timeout(seconds(10)):
                while proxy.handshakes < 2:  # the first attempt was refused; the next waits >= 0.5 s
                    await asyncio.sleep(0.01)
        log = await session_log(relay)
    assert proxy.handshakes == 2
    (failed,) = [r["event"] for r in log if r["type"] == "relay.upstream_resume_failed"]
    assert failed["attempts"] == 1 and failed["reason"] == "session_ending"
    (attempt,) = [r for r in log if r["type"] == "relay.upstream_resume_attempt"]
    assert attempt["event"]["attempt"] == 1
    # The client's leaving ends the wait for the next attempt (at least 0.5 s) at once, not when it runs out.
    assert log[-1]["type"] == "relay.session_ended" and log[-1]["t_ms"] - attempt["t_ms"] < 450


async def test_many_drops_in_one_session_each_resume_and_the_whole_conversation_survives(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            said = []
            for n in range(4):
                said.append(f"turn number {n}")
                await c.text_turn(said[-1])
                await (await proxy.connection(n)).drop()
                await c.until(lambda e: e["type"] == "relay.upstream_resumed")
            reply = await c.text_turn("recall")
        log = await session_log(relay)
    assert reply == "Earlier you said: " + " | ".join(f'"{s}"' for s in said) + "."
    resumed = [e for e in c.events if e["type"] == "relay.upstream_resumed"]
    assert [e["items_restored"] for e in resumed] == [2, 4, 6, 8]
    assert log[-1]["event"]["resumes"] == 4
    assert "error" not in c.types()


async def test_simulator_drops_are_resumed_including_a_drop_during_the_restore(tmp_path: Path) -> None:
    # The simulator drops its first two sockets after one event: the session's own, and the first attempt's
    # during its restore; the second attempt gets the session back.
    query = "close_after=1&close_after_sessions=2"
    async with running_relay(tmp_path, upstream_query=query) as relay:
        async with client(relay) as c:
            resumed = (await c.until(lambda e: e["type"] == "relay.upstream_resumed", timeout=15))[-1]
            assert await c.text_turn("hello again") == 'You said: "hello again".'
        log = await session_log(relay)
    assert resumed["attempt"] == 2
    assert relay.sim_handshakes == 3
    attempts = [r["event"] for r in log if r["type"] == "relay.upstream_resume_attempt"]
    assert [a["result"] for a in attempts] == ["failed", "ok"]


async def test_garbage_from_the_new_upstream_during_the_restore_is_logged_never_forwarded(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            assert await c.text_turn("before") == 'You said: "before".'
            proxy.greeting = [
                "not json at all",
                "[1, 2, 3]",
                '{"type": 5}',
                '{"type": "relay.upstream_resumed", "attempt": 99}',
                '{"type": "error", "error": "no object"}',
                '{"type": "error", "error": {"event_id": "relay_resume_nothing", "code": "x"}}',
                '{"type": "session.updated", "session": {"audio": {"input": {"format": "bad"}}}}',
                '{"type": "conversation.item.done", "item": ["x"]}',
                b"\x00\x01binary",
            ]
            await (await proxy.connection(0)).drop()
            await c.until(lambda e: e["type"] == "relay.upstream_resumed")
            assert await c.text_turn("recall") == 'Earlier you said: "before".'
        log = await session_log(relay)
    assert "error" not in c.types()
    assert [e for e in c.events if e["type"] == "relay.upstream_resumed" and e.get("attempt") == 99] == []
    relay_records = [r for r in log if r["dir"] == "relay"]
    assert any(r["event"].get("invalid_json") for r in relay_records)
    assert "relay.upstream_binary_frame" in relay_types(log)
    assert log[-1]["event"]["reason"] == "client_closed"


UPSTREAM_BOUND = frozenset(
    {
        "session.update",
        "conversation.item.create",
        "conversation.item.retrieve",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "response.create",
    }
)


async def test_client_frames_during_the_gap_are_sent_after_the_restore_in_order(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            assert await c.text_turn("first") == 'You said: "first".'
            await (await proxy.connection(0)).drop()
            await c.until(lambda e: e["type"] == "relay.upstream_interrupted")
            await c.send(user_text("said during the gap"))
            await c.ws.send_str("garbage during the gap")  # answered at once, never held for the new upstream
            await c.ws.send_bytes(b"\x00")
            await c.send({"type": "response.create", "event_id": "gap_create"})
            reply = [e for e in await c.until(lambda e: e["type"] == "response.done") if e["type"] == "response.done"]
            second = await proxy.connection(1)
        log = await session_log(relay)
    assert reply[-1]["response"]["status"] == "completed"
    errors = [e["error"]["code"] for e in c.events if e["type"] == "error"]
    assert errors == ["invalid_json", "binary_not_supported"]
    assert c.types().index("error") < c.types().index("relay.upstream_resumed")
    sent = [(f["type"], f.get("event_id", "")) for f in second.from_relay]
    restore_end = max(i for i, (_, eid) in enumerate(sent) if eid.startswith("relay_resume"))
    after = [frame for frame in sent[restore_end + 1 :] if not frame[1].startswith("relay_")]  # not its retrieves
    assert after == [("conversation.item.create", ""), ("response.create", "gap_create")]
    # The log keeps the wire's order: held frames are logged as they are sent, after the restore.
    assert [r["seq"] for r in log if r["seq"] is not None] == list(range(1, len(log) + 1))
    drop = next(i for i, r in enumerate(log) if r["type"] == "relay.upstream_interrupted")
    logged = [(r["type"], r["event"].get("event_id", "")) for r in log[drop:] if r["type"] in UPSTREAM_BOUND]
    assert logged[: len(sent)] == sent  # what the new upstream got, in the order it got it
    held = [r["seq"] for r in log[drop:] if r["dir"] == "client"]
    restore = [r["seq"] for r in log if r["dir"] == "relay" and str(r["event"].get("event_id", "")).startswith("relay_resume")]
    assert len(held) == 2 and restore and min(held) > max(restore)


async def test_a_session_update_unanswered_at_the_drop_is_sent_again_and_answered(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            await c.send({"type": "session.update", "event_id": "upd_1", "session": {"instructions": "first"}})
            await c.until(lambda e: e["type"] == "session.updated")
            first = await proxy.connection(0)
            first.swallow = True  # the next update never gets its answer from this upstream
            await c.send({"type": "session.update", "event_id": "upd_2", "session": {"instructions": "second"}})
            await proxy.until(first, lambda frames: frames[-1].get("event_id") == "upd_2")
            await first.drop()
            answered = await c.until(lambda e: e["type"] == "session.updated")
            second = await proxy.connection(1)
        log = await session_log(relay)
    assert answered[-1]["session"]["instructions"] == "second"
    updates = [(r["dir"], r["event"]["event_id"]) for r in log if r["type"] == "session.update"]
    assert updates[-1] == ("relay", "upd_2")  # sent again by the relay, logged as its own frame
    assert ("client", "upd_2") in updates[:-1]  # the client's sending, to the dropped upstream
    assert c.types().index("relay.upstream_resumed") < len(c.events) - 1  # answered after the restore
    sent = [(f["type"], f.get("event_id")) for f in second.from_relay]
    restore_update = second.from_relay[0]
    assert restore_update["event_id"].startswith("relay_resume") and restore_update["session"]["instructions"] == "first"
    assert sent.index(("session.update", "upd_2")) > 0


async def test_an_error_answering_the_relays_resume_frames_after_the_restore_is_not_forwarded(tmp_path: Path) -> None:
    async with relay_behind_proxy(tmp_path) as (relay, proxy):
        async with client(relay) as c:
            await (await proxy.connection(0)).drop()
            await c.until(lambda e: e["type"] == "relay.upstream_resumed")
            second = await proxy.connection(1)
            late = {"type": "error", "event_id": "e1", "error": {"type": "invalid_request_error", "code": "x", "event_id": "relay_resume1_audio0"}}
            mine = {"type": "error", "event_id": "e2", "error": {"type": "invalid_request_error", "code": "y", "event_id": "client_1"}}
            await second.inject(json.dumps(late))
            await second.inject(json.dumps(mine))
            errors = [e for e in await c.until(lambda e: e["type"] == "error") if e["type"] == "error"]
        log = await session_log(relay)
    assert [e["error"]["event_id"] for e in errors] == ["client_1"]
    assert any(r["dir"] == "relay" and r["type"] == "error" and r["event"]["error"]["event_id"] == "relay_resume1_audio0" for r in log)

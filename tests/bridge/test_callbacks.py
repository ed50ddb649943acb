"""`SessionBridge` when upstream messages arrive by callback from the link's read path, against a hand-written
upstream on 127.0.0.1 (CONTRACT C4, C5).

Specified here:

- a close 1000 from the upstream is a normal end (`upstream_closed`, the client closed with 1000) however it
  arrives: in the same read as the last events, which are all forwarded and logged (and an audio item's retrieve,
  sent too late, fails as `session_closed` and the item is saved from the stream), or while the client is still
  streaming frames toward an upstream that has already said goodbye;
- what the frames of one upstream read, or a run of client frames read in a row, decided is carried out together:
  every frame still goes on in order and is logged once; a client over its bound in the middle of a read ends the
  session as `client_too_slow`, and a failure while carrying out client frames as an error, through the bridge;
- an exception raised while the relay handles an upstream message is a relay bug, contained: it is logged as
  `relay.internal_error` with its traceback and the session goes on (docs/client-input.md).

The bridge, its core, the upstream link and both sockets are the real ones; the client side is a scripted
`ClientSide` (frames in, frames out, no socket), and the upstream is a TCP server that speaks just enough RFC 6455
(with bench.frames) to choose exactly which bytes go out in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.frames import OP_CLOSE, OP_TEXT, Frame, FrameReader, close_payload, encode_frame, server_response
from relay.bridge import BridgeEnvironment, SessionBridge
from relay.core.policy import SessionPolicy
from relay.eventlog.writer import EventLog
from relay.links.base import ClientFrame, UpstreamTarget, read_by_receive
from relay.outcome import EndReason
from relay.wiring import session_files
from tests.support.loop_checks import no_unhandled_loop_errors
from tests.support.timing import seconds

PATH = "/v1/realtime"


# ---- the client side: scripted ----------------------------------------------------------------------------------


class ScriptedClient:
    """A `ClientSide` without a socket: the test pushes frames for the relay to read and sees what the relay sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed_with: tuple[int, str] | None = None
        self.takes: int | None = None  # how many frames it takes before it stops reading (None: all)
        self._frames: asyncio.Queue[ClientFrame] = asyncio.Queue()
        self._sent_changed = asyncio.Event()
        self._all_read = asyncio.Event()

    # ClientSide
    async def receive(self) -> ClientFrame:
        if self._frames.empty():
            self._all_read.set()  # the relay came back for more: everything pushed so far was handled
        return await self._frames.get()

    async def read(self, on_text: Callable[[str], None], on_binary: Callable[[int], None]) -> ClientFrame:
        return await read_by_receive(self.receive, on_text, on_binary)

    def send(self, text: str) -> bool:
        if self.takes is not None and len(self.sent) >= self.takes:
            return False  # over its backlog bound, as a client that stopped reading is
        self.sent.append(json.loads(text))
        self._sent_changed.set()
        return True

    async def close(self, code: int, reason: str, *, grace: float) -> int | None:
        self.closed_with = (code, reason)
        return code

    def abort(self) -> None:
        pass

    # the test's side
    def push(self, event: dict[str, Any]) -> None:
        self._all_read.clear()
        self._frames.put_nowait(ClientFrame(text=json.dumps(event)))

    def push_text(self, text: str) -> None:
        """A text frame as it came, JSON or not."""
        self._all_read.clear()
        self._frames.put_nowait(ClientFrame(text=text))

    def push_close(self, code: int) -> None:
        self._frames.put_nowait(ClientFrame(closed=True, close_code=code))

    async def relay_read_everything(self) -> None:
        """Wait until the relay has handled every pushed frame and waits for the next one."""
        async with asyncio.timeout(seconds(1)):
            await self._all_read.wait()

    async def received(self, event_type: str) -> None:
        async with asyncio.timeout(seconds(1)):
            while event_type not in self.sent_types:
                self._sent_changed.clear()
                await self._sent_changed.wait()

    @property
    def sent_types(self) -> list[str]:
        return [event["type"] for event in self.sent]


# ---- the upstream: hand-written -----------------------------------------------------------------------------------


def text(event: dict[str, Any]) -> bytes:
    return encode_frame(json.dumps(event).encode(), OP_TEXT)


def close_frame(code: int) -> bytes:
    return encode_frame(close_payload(code), OP_CLOSE)


class UpstreamPeer:
    """The upstream's end of the relay's connection, after the 101 answer. Nothing is read unless the script reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received: list[Frame] = []  # every frame the relay sent that the script has read, in order
        self._frames = FrameReader()

    def send(self, *data: bytes) -> None:
        """Write these bytes in one write (so the relay reads them in one read)."""
        self.writer.write(b"".join(data))

    async def read_texts(self, count: int) -> None:
        """Read the relay's frames until `count` text frames have come."""
        async with asyncio.timeout(seconds(1)):
            while len([frame for frame in self.received if frame.opcode == OP_TEXT]) < count:
                data = await self.reader.read(1 << 16)
                assert data, "the relay hung up"
                self.received += self._frames.feed(data)

    async def read_until(self, opcode: int) -> Frame:
        """Read the relay's frames up to the first one with `opcode`."""
        async with asyncio.timeout(seconds(1)):
            while True:
                for frame in self.received:
                    if frame.opcode == opcode:
                        return frame
                data = await self.reader.read(1 << 16)
                assert data, "the relay hung up"
                self.received += self._frames.feed(data)

    async def relay_hung_up(self) -> None:
        """Read (and keep) what the relay still sends until it ends the TCP connection."""
        async with asyncio.timeout(seconds(1)):
            with contextlib.suppress(ConnectionResetError):
                while data := await self.reader.read(1 << 16):
                    self.received += self._frames.feed(data)


Script = Callable[[UpstreamPeer], Awaitable[None]]


class ScriptedUpstream:
    """Answers the relay's upgrade, then runs `script` on the connection; TCP is closed when the script returns."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.url = ""
        self.peer: UpstreamPeer | None = None
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            writer.write(server_response(request.removesuffix(b"\r\n\r\n")))
            self.peer = UpstreamPeer(reader, writer)
            await self.script(self.peer)
        except Exception as exc:  # handed to the test by `finished`, not left to the loop's handler
            if not self._done.done():
                self._done.set_exception(exc)
        else:
            if not self._done.done():
                self._done.set_result(None)
        finally:
            writer.close()

    async def finished(self) -> UpstreamPeer:
        """The script ran to its end (whatever it raised is raised here); the peer it ran on."""
        await asyncio.wait_for(asyncio.shield(self._done), seconds(1))
        assert self.peer is not None
        return self.peer


@asynccontextmanager
async def scripted_upstream(script: Script) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(script)
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    upstream.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}{PATH}"
    try:
        yield upstream
    finally:
        server.close()
        await server.wait_closed()


# ---- the relay's side ---------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Iterator[BridgeEnvironment]:
    event_log = EventLog(tmp_path / "logs")
    yield BridgeEnvironment(event_log=event_log, files=session_files(tmp_path / "data"), retrieve_timeout=seconds(5))
    event_log.close()


@pytest.fixture(autouse=True)
async def nothing_unhandled() -> AsyncIterator[None]:
    """Whatever goes wrong must end the session through the bridge, never reach the event loop's handler."""
    async with no_unhandled_loop_errors():
        yield


def bridge_to(upstream: ScriptedUpstream, client: ScriptedClient, env: BridgeEnvironment) -> SessionBridge:
    return SessionBridge(client, UpstreamTarget(upstream.url, {}, seconds(1)), SessionPolicy(), env)


async def run(bridge: SessionBridge) -> list[dict[str, Any]]:
    """Run the session to its end; its event-log records (the file is complete once `run` returns)."""
    await asyncio.wait_for(bridge.run(), seconds(5))
    log_dir = bridge.env.event_log.log_dir
    assert log_dir is not None
    lines = bridge.log.path(log_dir).read_bytes().split(b"\n")
    return [json.loads(line) for line in lines if line]


async def run_against(
    script: Script, client: ScriptedClient, env: BridgeEnvironment
) -> tuple[SessionBridge, list[dict[str, Any]], UpstreamPeer]:
    """A session between `client` and an upstream running `script`, to its end: the bridge, its log records and
    the upstream's end of the connection."""
    async with scripted_upstream(script) as upstream:
        bridge = bridge_to(upstream, client, env)
        records = await run(bridge)
        peer = await upstream.finished()
    return bridge, records, peer


def session_created() -> dict[str, Any]:
    return {"type": "session.created", "event_id": "e1", "session": {"id": "sess_up"}}


def append(n: int) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "event_id": f"c{n}", "audio": "AAAAAAAA"}


# ---- a normal close is a normal end -------------------------------------------------------------------------------


async def test_events_in_the_same_read_as_a_close_1000_are_all_forwarded_and_the_session_ends_upstream_closed(
    env: BridgeEnvironment,
) -> None:
    """The assistant's audio item is done, so the relay asks for it back from inside the read callback; but the
    upstream's close came in the same read, right behind it. The retrieve reaches the upstream just before the
    answer to its close (or not at all) and fails as `session_closed` (the item is saved from the stream), and
    nothing else changes: `response.done` still reaches the client and the log, and the end is the upstream's normal
    close (it used to be lost, and the client got an `error` and 1014)."""
    client = ScriptedClient()
    item_done = {
        "type": "conversation.item.done",
        "event_id": "e2",
        "item": {
            "id": "item_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": "hi"}],
        },
    }
    response_done = {"type": "response.done", "event_id": "e3", "response": {"id": "resp_1"}}

    async def upstream_script(peer: UpstreamPeer) -> None:
        peer.send(text(session_created()))
        await client.received("session.created")  # the relay is attached and forwarding
        peer.send(text(item_done), text(response_done), close_frame(1000))
        await peer.read_until(OP_CLOSE)

    async with scripted_upstream(upstream_script) as upstream:
        bridge = bridge_to(upstream, client, env)
        records = await run(bridge)
        peer = await upstream.finished()

    assert bridge.outcome is not None and bridge.outcome.reason == EndReason.UPSTREAM_CLOSED
    assert client.closed_with is not None and client.closed_with[0] == 1000
    assert client.sent_types == ["session.created", "conversation.item.done", "response.done"]
    received = [(f.opcode, f.payload) for f in peer.received]
    assert received[-1] == (OP_CLOSE, close_payload(1000))  # the answer, last
    assert all(opcode == OP_TEXT and b"conversation.item.retrieve" in payload for opcode, payload in received[:-1])
    kinds = [(r["dir"], r["type"]) for r in records]
    assert kinds[kinds.index(("server", "conversation.item.done")) :] == [
        ("server", "conversation.item.done"),
        ("relay", "conversation.item.retrieve"),
        ("server", "response.done"),
        ("relay", "relay.retrieve_failed"),
        ("relay", "relay.audio_saved"),
        ("relay", "relay.session_ended"),
    ]
    by_type = {r["type"]: r for r in records}
    assert by_type["conversation.item.retrieve"]["item_id"] == "item_1"
    assert by_type["relay.retrieve_failed"]["event"]["reason"] == "session_closed"
    assert by_type["relay.audio_saved"]["event"]["source"] == "stream"
    ended = by_type["relay.session_ended"]["event"]
    assert (ended["reason"], ended["client_close_code"]) == ("upstream_closed", 1000)


async def test_client_frames_still_streaming_after_the_upstreams_close_1000_do_not_turn_it_into_a_disconnect(
    env: BridgeEnvironment,
) -> None:
    """The upstream's close frame is read (and answered) one round trip before it closes TCP, and a streaming
    client's audio keeps coming meanwhile. Those frames have nowhere to go and are dropped; the session still ends
    as the upstream ended it, normally (it used to end `upstream_disconnected`, 1014)."""
    client = ScriptedClient()

    async def upstream_script(peer: UpstreamPeer) -> None:
        peer.send(text(session_created()))
        await client.received("session.created")
        client.push(append(1))
        await peer.read_until(OP_TEXT)  # the client's audio is flowing
        peer.send(close_frame(1000))
        await peer.read_until(OP_CLOSE)  # the relay has read the close and answered it; TCP stays open for now
        for n in range(2, 6):
            client.push(append(n))
        await client.relay_read_everything()  # the relay handled them all before TCP ends
        peer.writer.write_eof()
        await peer.relay_hung_up()

    async with scripted_upstream(upstream_script) as upstream:
        bridge = bridge_to(upstream, client, env)
        records = await run(bridge)
        peer = await upstream.finished()

    assert [f.opcode for f in peer.received] == [OP_TEXT, OP_CLOSE]  # nothing follows the relay's close frame

    assert bridge.outcome is not None and bridge.outcome.reason == EndReason.UPSTREAM_CLOSED
    assert client.closed_with == (1000, "upstream closed")
    assert client.sent_types == ["session.created"]  # no `error`
    ended = records[-1]
    assert ended["type"] == "relay.session_ended"
    assert (ended["event"]["reason"], ended["event"]["client_close_code"]) == ("upstream_closed", 1000)
    # Only the append that reached the upstream is an event that crossed the relay (C6); those read after the
    # upstream's close frame were not forwarded, so they have no record either.
    assert [r["event"]["event_id"] for r in records if r["type"] == "input_audio_buffer.append"] == ["c1"]


# ---- a read's frames are carried out when the read ends -----------------------------------------------------------


async def test_a_client_that_stops_taking_frames_in_the_middle_of_a_read_ends_the_session_as_too_slow(
    env: BridgeEnvironment,
) -> None:
    """Three events arrive in one read; the client takes the first and is then over its bound. The frames of the
    read are carried out together when the read ends, and the failure there ends the session as `client_too_slow`
    through the bridge (nothing reaches the event loop's handler); every event read is still in the log."""
    client = ScriptedClient()
    deltas = [
        {"type": "response.output_audio.delta", "event_id": f"e{n}", "item_id": "item_1", "delta": "AAAA"}
        for n in range(2, 5)
    ]

    async def upstream_script(peer: UpstreamPeer) -> None:
        peer.send(text(session_created()))
        await client.received("session.created")
        client.takes = 2
        peer.send(*(text(delta) for delta in deltas))
        await peer.read_until(OP_CLOSE)

    bridge, records, _peer = await run_against(upstream_script, client, env)

    assert bridge.outcome is not None and bridge.outcome.reason == EndReason.CLIENT_TOO_SLOW
    assert client.sent_types == ["session.created", "response.output_audio.delta"]
    assert [r["event"]["event_id"] for r in records if r["type"] == "response.output_audio.delta"] == ["e2", "e3", "e4"]
    ended = records[-1]
    assert ended["type"] == "relay.session_ended" and ended["event"]["reason"] == "client_too_slow"


async def test_client_frames_read_in_a_row_reach_the_upstream_in_order_and_are_each_logged(
    env: BridgeEnvironment,
) -> None:
    """Twenty appends wait for the relay at once (as aiohttp hands over frames it has already read): what they
    decided is carried out together, and the upstream gets every one of them, in order, each logged once."""
    client = ScriptedClient()

    async def upstream_script(peer: UpstreamPeer) -> None:
        peer.send(text(session_created()))
        await client.received("session.created")
        for n in range(1, 21):
            client.push(append(n))
        await peer.read_texts(20)
        client.push_close(1000)
        await peer.read_until(OP_CLOSE)
        peer.send(close_frame(1000))

    bridge, records, peer = await run_against(upstream_script, client, env)

    sent = [json.loads(f.payload)["event_id"] for f in peer.received if f.opcode == OP_TEXT]
    assert sent == [f"c{n}" for n in range(1, 21)]
    logged = [r["event"]["event_id"] for r in records if r["type"] == "input_audio_buffer.append"]
    assert logged == sent
    assert bridge.outcome is not None and bridge.outcome.reason == EndReason.CLIENT_CLOSED


# ---- a relay bug is a relay bug -----------------------------------------------------------------------------------


class RelayBug(Exception):
    pass


async def test_a_failure_while_carrying_out_client_frames_ends_the_session_through_the_bridge(
    env: BridgeEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay bug in carrying out what client frames decided (here: the client side raises while the relay
    answers a frame that is not JSON) ends the session as an error, closed 1011, with `relay.session_ended`
    last in the log; nothing reaches the event loop's handler."""
    client = ScriptedClient()

    def broken_send(text: str) -> bool:
        raise RelayBug("the client side cannot send")

    async def upstream_script(peer: UpstreamPeer) -> None:
        peer.send(text(session_created()))
        await client.received("session.created")
        monkeypatch.setattr(client, "send", broken_send)
        client.push_text("not json")
        await peer.read_until(OP_CLOSE)

    bridge, records, _peer = await run_against(upstream_script, client, env)

    assert bridge.outcome is not None and bridge.outcome.reason == EndReason.ERROR
    assert client.closed_with is not None and client.closed_with[0] == 1011
    assert records[-1]["type"] == "relay.session_ended" and records[-1]["event"]["reason"] == "error"


async def test_an_exception_while_handling_an_upstream_message_is_contained_and_the_session_goes_on(
    env: BridgeEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug is simulated by making this bridge's core raise on one upstream message. That frame is logged as
    `relay.internal_error` with its traceback; the client gets no `error` for it, the client frame already
    waiting still reaches the upstream, and later upstream frames are forwarded: the session goes on until the
    client leaves."""
    client = ScriptedClient()
    bug = RelayBug("the relay cannot handle this event")

    async def upstream_script(peer: UpstreamPeer) -> None:
        peer.send(text(session_created()))
        await client.received("session.created")
        peer.send(text({"type": "response.created", "event_id": "e2", "response": {"id": "resp_1"}}))
        peer.send(text({"type": "response.done", "event_id": "e3", "response": {"id": "resp_1", "output": []}}))
        await client.received("response.done")
        client.push_close(1000)
        await peer.read_until(OP_CLOSE)
        peer.send(close_frame(1000))  # answer the relay's close frame and hang up, as a real upstream does

    async with scripted_upstream(upstream_script) as upstream:
        bridge = bridge_to(upstream, client, env)
        receive_server_text = bridge.core.receive_server_text

        def buggy_receive_server_text(message: str) -> None:
            if '"response.created"' in message:
                client.push(append(1))  # ready to be forwarded as soon as the read callback returns
                raise bug
            receive_server_text(message)

        monkeypatch.setattr(bridge.core, "receive_server_text", buggy_receive_server_text)
        records = await run(bridge)
        peer = await upstream.finished()

    assert bridge.outcome is not None and bridge.outcome.reason == EndReason.CLIENT_CLOSED
    assert client.sent_types == ["session.created", "response.done"]  # no `error` for the relay's own bug
    [internal] = [r for r in records if r["type"] == "relay.internal_error"]
    assert f"RelayBug: {bug}" in internal["event"]["traceback"] and internal["event"]["dir"] == "server"
    assert [r["event"]["event_id"] for r in records if r["type"] == "input_audio_buffer.append"] == ["c1"]
    assert OP_TEXT in [f.opcode for f in peer.received]
    ended = records[-1]
    assert ended["type"] == "relay.session_ended" and ended["event"]["reason"] == "client_closed"

"""The load generator: WebSocket sessions that send 20 ms PCM16 chunks and time each echoed delta.

One process, one event loop, raw asyncio protocols over `bench.frames` (cheap enough that a few hundred
real-time sessions fit on the core it shares with the echo upstream). Modes:
- `realtime`: every session sends one `input_audio_buffer.append` (20 ms: 480 samples = 960 bytes of 24 kHz PCM16, base64) every
  20 ms, the sessions evenly staggered over the period; each delta that comes back closes the oldest open
  round trip of its session (the echo answers in order), so the round-trip time is measured without ids.
  How late each send left versus its schedule is recorded too: when the generator falls behind, it says so.
- `flood`: every session keeps `window` appends in flight and sends a new one per delta received.
- `memory`: connect idle sessions, report, wait for a line on stdin, run them in real time, report, wait, end.
I/O: TCP connections to the URL it is given; one JSON document on stdout (plus stage lines in `memory` mode).

Run: `python -m bench.loadgen '{"url": "ws://127.0.0.1:P/v1/realtime", "mode": "realtime", "sessions": 10,
"warmup_s": 1, "measure_s": 4}'`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from bench import frames
from bench.measure import CpuWindow, core_busy, summarize

CHUNK_MS = 20
SAMPLE_RATE = 24000
# 20 ms at 24 kHz is 480 samples = 960 bytes of PCM16 (1280 base64 characters); "960" in the issue is the bytes.
CHUNK_SAMPLES = SAMPLE_RATE * CHUNK_MS // 1000
DELTA_MARK = b'"response.output_audio.delta"'
CREATED_MARK = b'"session.created"'
CONNECT_CONCURRENCY = 64


def chunk_pcm16(samples: int = CHUNK_SAMPLES) -> bytes:
    """A deterministic chunk of a 440 Hz tone with a little dither (PCM16 little-endian)."""
    out = bytearray()
    for i in range(samples):
        value = 8000.0 * math.sin(2 * math.pi * 440.0 * i / SAMPLE_RATE) + ((i * 7919) % 97) - 48
        out += int(value).to_bytes(2, "little", signed=True)
    return bytes(out)


def append_frame(session_index: int, pcm: bytes) -> bytes:
    payload = (
        b'{"type":"input_audio_buffer.append","event_id":"evt_bench_%d","audio":"' % session_index + base64.b64encode(pcm) + b'"}'
    )
    return frames.encode_frame(payload, masked=True)


@dataclass
class Stats:
    recording: bool = False
    rtt_ns: list[int] = field(default_factory=list)
    lateness_s: list[float] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    recorded_round_trips: int = 0
    other_frames: int = 0
    errors: list[str] = field(default_factory=list)


class Session(asyncio.Protocol):
    def __init__(self, index: int, url: Any, stats: Stats, frame: bytes, flood_window: int) -> None:
        self.index = index
        self.url = url
        self.stats = stats
        self.frame = frame
        self.flood_window = flood_window
        self.flooding = False
        self.transport: asyncio.Transport | None = None
        self.reader = frames.FrameReader()
        self.head = bytearray()
        self.handshake_done = False
        self.sent_at: deque[int] = deque()
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        target = url.path + ("?" + url.query if url.query else "")
        self.request, self.expected_accept = frames.client_handshake(url.hostname, url.port, target)

    # ---- asyncio protocol -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost before session.created: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        if not self.handshake_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                frames.check_client_response(bytes(self.head[:end]), self.expected_accept)
            except frames.ProtocolError as exc:
                self._fail(str(exc))
                return
            self.handshake_done = True
            data = bytes(self.head[end + 4 :])
            self.head = bytearray()
            if not data:
                return
        try:
            received = self.reader.feed(data)
        except frames.ProtocolError as exc:
            self._fail(str(exc))
            return
        stats = self.stats
        replies = 0
        for frame in received:
            if frame.opcode == frames.OP_TEXT:
                payload = frame.payload
                if DELTA_MARK in payload[:64]:
                    stats.received += 1
                    if self.sent_at:
                        sent = self.sent_at.popleft()
                        if stats.recording:
                            stats.rtt_ns.append(now - sent)
                            stats.recorded_round_trips += 1
                    if self.flooding:
                        replies += 1
                elif not self.ready.done():
                    if CREATED_MARK in payload[:64]:
                        self.ready.set_result(None)
                    else:
                        self._fail("first event was not session.created: " + payload[:200].decode("utf-8", "replace"))
                        return
                else:
                    stats.other_frames += 1
            elif frame.opcode == frames.OP_PING:
                self._write(frames.encode_frame(frame.payload, frames.OP_PONG, masked=True))
            elif frame.opcode == frames.OP_CLOSE and self.transport is not None:
                self.transport.close()
        if replies:
            self.send(replies)

    # ---- actions --------------------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        if len(self.stats.errors) < 20:
            self.stats.errors.append(f"session {self.index}: {message}")
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(message))
        if self.transport is not None:
            self.transport.abort()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, count: int = 1) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        now = time.perf_counter_ns()
        self.sent_at.extend([now] * count)
        transport.write(self.frame * count if count > 1 else self.frame)
        self.stats.sent += count

    def start_flood(self) -> None:
        self.flooding = True
        self.send(self.flood_window)

    def close(self) -> None:
        self._write(frames.encode_frame(frames.close_payload(1000), frames.OP_CLOSE, masked=True))


async def connect_all(url: Any, count: int, stats: Stats, flood_window: int, timeout: float) -> tuple[list[Session], float]:
    loop = asyncio.get_running_loop()
    pcm = chunk_pcm16()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    sessions: list[Session] = []
    started = time.monotonic()

    async def one(index: int) -> None:
        async with gate:
            session = Session(index, url, stats, append_frame(index, pcm), flood_window)
            try:
                await loop.create_connection(lambda: session, url.hostname, url.port)
                await asyncio.wait_for(asyncio.shield(session.ready), timeout)
            except (OSError, ConnectionError, TimeoutError) as exc:
                if len(stats.errors) < 20:
                    stats.errors.append(f"session {index}: connect failed: {exc.__class__.__name__}: {exc}")
                if session.transport is not None:
                    session.transport.abort()
                return
            sessions.append(session)

    await asyncio.gather(*(one(i) for i in range(count)))
    sessions.sort(key=lambda s: s.index)
    return sessions, time.monotonic() - started


async def drive_realtime(sessions: list[Session], stats: Stats, seconds: float) -> None:
    """Each session sends every 20 ms, staggered evenly; lateness of each send versus its schedule is kept."""
    if not sessions:
        return
    loop = asyncio.get_running_loop()
    n = len(sessions)
    step = CHUNK_MS / 1000.0 / n
    t0 = loop.time()
    end = t0 + seconds
    k = 0
    lateness = stats.lateness_s
    while True:
        now = loop.time()
        if now >= end:
            return
        due = t0 + k * step
        while due <= now:
            sessions[k % n].send()
            if stats.recording:
                lateness.append(now - due)
            k += 1
            due = t0 + k * step
        await asyncio.sleep(due - now)


async def close_all(sessions: list[Session]) -> None:
    for session in sessions:
        session.close()
    pending = [s.closed for s in sessions if not s.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=3.0)
    for session in sessions:
        if session.transport is not None and not session.transport.is_closing():
            session.transport.abort()


class Window:
    """The measurement window: turned on after the warm-up, off after the measurement. On both edges it also
    snapshots the CPU of the watched processes (the relay, the echo) and of each core, so CPU figures cover
    exactly the window whose round trips are counted."""

    def __init__(self, stats: Stats, watch: dict[str, int]) -> None:
        self.stats = stats
        self.watchers = {name: CpuWindow(pid) for name, pid in watch.items()}
        self.t0 = self.t1 = 0.0
        self.cpu0 = self.cpu1 = 0.0
        self.cores0: list[tuple[int, int]] = []
        self.result: dict[str, Any] = {}

    def on(self) -> None:
        self.stats.recording = True
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.cores0 = core_busy()
        for watcher in self.watchers.values():
            try:
                watcher.start(self.t0)
            except OSError:
                pass

    def off(self) -> None:
        self.stats.recording = False
        self.t1 = time.perf_counter()
        self.cpu1 = time.process_time()
        cores1 = core_busy()
        wall = max(self.t1 - self.t0, 1e-9)
        self.result["cores_busy_percent"] = [
            round(100.0 * (b1 - b0) / max(t1 - t0, 1), 1) for (b0, t0), (b1, t1) in zip(self.cores0, cores1, strict=False)
        ]
        watched: dict[str, Any] = {}
        for name, watcher in self.watchers.items():
            try:
                watched[name] = watcher.stop(self.t1)
            except OSError as exc:
                watched[name] = {"error": str(exc)}
        self.result["watched"] = watched
        self.result["generator_cpu_percent"] = round(100.0 * (self.cpu1 - self.cpu0) / wall, 1)

    def schedule(self, loop: asyncio.AbstractEventLoop, warmup: float, measure: float) -> None:
        loop.call_later(warmup, self.on)
        loop.call_later(warmup + measure, self.off)


def report(spec: dict[str, Any], sessions: list[Session], stats: Stats, connect_s: float, window: Window) -> dict[str, Any]:
    wall = window.t1 - window.t0
    outstanding = sum(len(s.sent_at) for s in sessions)
    return {
        "mode": spec["mode"],
        "sessions_requested": spec["sessions"],
        "sessions_connected": len(sessions),
        "connect_s": round(connect_s, 3),
        "measure_s": round(wall, 3),
        "sent": stats.sent,
        "received": stats.received,
        "outstanding_at_end": outstanding,
        "round_trips_measured": stats.recorded_round_trips,
        "round_trips_per_s": round(stats.recorded_round_trips / wall, 1) if wall > 0 else None,
        "rtt_ms": summarize(stats.rtt_ns, scale=1e-6, digits=4),
        "send_lateness_ms": summarize(stats.lateness_s, scale=1e3, digits=3),
        "other_frames": stats.other_frames,
        "errors": stats.errors,
        **window.result,
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(spec["url"])
    mode = spec["mode"]
    stats = Stats()
    warmup = float(spec.get("warmup_s", 1.0))
    measure = float(spec.get("measure_s", 4.0))
    sessions, connect_s = await connect_all(
        url, int(spec["sessions"]), stats, int(spec.get("window", 8)), float(spec.get("connect_timeout_s", 20.0))
    )
    loop = asyncio.get_running_loop()
    window = Window(stats, {str(k): int(v) for k, v in spec.get("watch", {}).items()})
    try:
        if mode == "realtime":
            window.schedule(loop, warmup, measure)
            await drive_realtime(sessions, stats, warmup + measure)
            await asyncio.sleep(0.05)  # let the last deltas land before counting what is outstanding
            return report(spec, sessions, stats, connect_s, window)
        if mode == "flood":
            window.schedule(loop, warmup, measure)
            for session in sessions:
                session.start_flood()
            await asyncio.sleep(warmup + measure + 0.01)
            for session in sessions:
                session.flooding = False
            return report(spec, sessions, stats, connect_s, window)
        if mode == "memory":
            print(json.dumps({"stage": "idle", "sessions_connected": len(sessions), "errors": stats.errors}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            window.schedule(loop, 0.0, measure)
            drive = asyncio.create_task(drive_realtime(sessions, stats, 3600.0))
            started = loop.time()
            for checkpoint in spec.get("checkpoints_s", [measure]):
                await asyncio.sleep(max(0.0, started + float(checkpoint) - loop.time()))
                elapsed = round(loop.time() - started, 3)
                print(json.dumps({"stage": "active", "t_s": elapsed, "sent": stats.sent, "received": stats.received}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            drive.cancel()
            return report(spec, sessions, stats, connect_s, window)
        raise ValueError(f"unknown mode {mode!r}")
    finally:
        await close_all(sessions)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.loadgen '<json spec>'", file=sys.stderr)
        return 2
    try:
        spec = json.loads(args[0])
    except json.JSONDecodeError as exc:
        print(f"bad spec: {exc}", file=sys.stderr)
        return 2
    if not isinstance(spec, dict) or not {"url", "mode", "sessions"} <= spec.keys():
        print("the spec needs url, mode and sessions", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run(spec))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

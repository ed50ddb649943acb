"""The `mic` session driver: this machine's microphone and speaker as the client of one relay session.

Layers, each with one job:
- `relay.mic.agent.MicAgent` is the client's brain and does no I/O (microphone blocks in, client frames out;
  server events in, playback, transcripts and barge-in out).
- `relay.mic.display` shows what a person should see (`TerminalDisplay`: transcripts, status line, level meter).
- Here: `MicClient` is the in-process client side (`relay.links.base.ClientSide`): what a WebSocket is for `serve`;
  `drive_session()` runs one session through the relay core with any `AudioIO`; `run_mic_session()` does it
  on this machine's PortAudio devices (`audio.devices`), chosen by `choose_devices()`.

The relay core (`relay.bridge`, `relay.core.session`) sits between `MicClient` and the upstream exactly as it sits
between a browser and the upstream in `serve`, so the event log, retrieve-after-done and WAV saving are the
same code. I/O here: the devices (through `audio.devices`), the terminal, and what the bridge does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from audio.devices import CaptureStream, DeviceInfo, PlaybackStream, check_rate, find_device
from audio.playback import PlaybackBuffer, PlaybackWriter
from relay.bridge import SessionBridge
from relay.core.formats import DEFAULT_FORMAT
from relay.eventlog.writer import EventLog
from relay.links.base import ClientFrame, read_by_receive
from relay.links.upstream import redact_url
from relay.mic.agent import MicAgent
from relay.mic.display import Display
from relay.outcome import SessionOutcome
from relay.settings import UPSTREAM_SIM
from relay.simulator import RunningSimulator, start_simulator
from relay.tools.config import load_tools
from relay.wiring import open_event_log, session_environment, session_policy, simulator_options, upstream_target

if TYPE_CHECKING:
    from relay.settings import Settings

# The speaker stream: a barge-in's clear() is heard after at most one callback block plus the device latency.
# Measured through ALSA -> PulseAudio with PortAudio's clock: clear() -> DAC time of the first silent block
# ~25 ms (max ~29 ms), inside the 50 ms a barge-in has to silence local playback. PortAudio's "low" (~10 ms)
# stops faster but underruns audibly on a loaded machine, where the Python callback has to wait for the GIL.
OUTPUT_BLOCK_MS: Final = 5
OUTPUT_LATENCY_MS: Final = 20


# --- the in-process client side of the bridge ----------------------------------------------------------


class MicClient:
    """The bridge's `ClientSide` for `mic`: frames come from the agent, server frames go to the agent.

    `send()` is called by the bridge in its flush, on the loop: the agent reacts at once (a barge-in clears
    the speaker before the next frame is even read). `finish()` ends the session like a client closing.
    """

    def __init__(self, agent: MicAgent) -> None:
        self.agent = agent
        self._outgoing: asyncio.Queue[ClientFrame] = asyncio.Queue()
        self._finished = False
        self.closed: asyncio.Event = asyncio.Event()
        self.close_code: int | None = None

    def push(self, frames: list[str]) -> None:
        if not self._finished:
            for text in frames:
                self._outgoing.put_nowait(ClientFrame(text=text))

    def finish(self, code: int = 1000) -> None:
        """The local user is done (Ctrl-C): the session ends as `client_closed`."""
        if not self._finished:
            self._finished = True
            self._outgoing.put_nowait(ClientFrame(closed=True, close_code=code))

    def on_capture(self, block: npt.NDArray[np.float32]) -> None:
        self.push(self.agent.on_capture(block))

    # ClientSide protocol
    async def receive(self) -> ClientFrame:
        return await self._outgoing.get()

    async def read(self, on_text: Callable[[str], None], on_binary: Callable[[int], None]) -> ClientFrame:
        return await read_by_receive(self.receive, on_text, on_binary)

    def send(self, text: str) -> bool:
        self.push(self.agent.on_server_text(text))
        return True  # the agent consumes synchronously: there is no backlog to overflow

    async def close(self, code: int, reason: str, *, grace: float) -> int | None:
        self._finished = True
        self.close_code = code
        if code != 1000:
            self.agent.display.notice(f"session closed: {code} {reason}")
        self.closed.set()
        return code

    def abort(self) -> None:
        self._finished = True
        self.closed.set()


# --- wiring: settings -> devices, upstream, event log, bridge --------------------------------------------


@dataclass
class MicResult:
    outcome: SessionOutcome
    agent: MicAgent
    underruns: int  # the jitter buffer ran dry mid-reply
    log_path: Path | None
    upstream_url: str
    capture_overflows: int = 0  # PortAudio lost microphone input
    capture_dropped_blocks: int = 0  # the loop fell behind and dropped microphone blocks
    output_underflows: int = 0  # the device ran dry before the callback delivered
    lost_device: str | None = None  # "microphone" or "speaker": its stream stopped mid-session (`watch_devices`)


def _wants_simulator(settings: Settings) -> bool:
    """`--upstream sim` (the CLI applies `simulator_fallback` first, as `serve` does: no credentials for the default
    upstream means the embedded simulator, docs/configuration.md)."""
    return settings.upstream == UPSTREAM_SIM


@dataclass
class MicDevices:
    capture: DeviceInfo
    playback: DeviceInfo


def choose_devices(settings: Settings) -> MicDevices:
    """The input and output devices, checked at their default rates. Raises audio DeviceError."""
    mic = find_device(settings.input_device, "input")
    speaker = find_device(settings.output_device, "output")
    check_rate(mic, mic.default_rate, "input")
    check_rate(speaker, speaker.default_rate, "output")
    return MicDevices(mic, speaker)


class AudioIO(Protocol):
    """The sound card as the session sees it: started once everything is ready, stopped first at the end."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class DeviceAudio:
    """The PortAudio pair: the speaker starts before the microphone so the first reply finds it running."""

    microphone: CaptureStream
    speaker: PlaybackStream
    running: bool = False  # started and not stopped: while its streams should call back

    def start(self) -> None:
        self.speaker.start()
        self.microphone.start()
        self.running = True

    def stop(self) -> None:
        self.running = False
        self.microphone.stop()
        self.speaker.stop()


# A running stream whose callback has not run for this long is gone: a device unplugged, its sound server's stream
# killed. PortAudio says nothing, so without this a lost speaker kept a half-duplex microphone muted for good
# (its buffer never drains) and a lost microphone left a deaf session.
DEVICE_SILENT_S: Final = 3.0
DEVICE_CHECK_S: Final = 0.25


async def watch_devices(audio: DeviceAudio, stop: asyncio.Event, display: Display) -> str | None:
    """Until `stop` is set: the name of the first device whose stream PortAudio stopped, or whose callback stopped
    running (and `stop` set, with a notice), else None. Watched only while the audio runs; a callback that never
    ran yet is not counted as stopped."""
    streams = {"microphone": audio.microphone, "speaker": audio.speaker}
    seen = {name: 0 for name in streams}
    since = {name: asyncio.get_running_loop().time() for name in streams}
    while not stop.is_set():
        await asyncio.sleep(DEVICE_CHECK_S)
        now = asyncio.get_running_loop().time()
        for name, stream in streams.items():
            calling_back = stream.callbacks != seen[name] or seen[name] == 0
            if not audio.running or (stream.active and calling_back):
                seen[name], since[name] = stream.callbacks, now
            elif not stream.active or now - since[name] >= DEVICE_SILENT_S:  # PortAudio gave up on it, or silence
                display.notice(f"the {name} stopped (its audio stream ended or went silent); ending the session")
                stop.set()
                return name
    return None


@dataclass
class SessionRun:
    outcome: SessionOutcome
    log_path: Path | None
    upstream_url: str


async def drive_session(
    settings: Settings,
    agent: MicAgent,
    captured: asyncio.Queue[npt.NDArray[np.float32]],
    audio: AudioIO,
    *,
    started_info: dict[str, Any],
    stop: asyncio.Event | None = None,
) -> SessionRun:
    """Run one session through the relay core: `captured` blocks go to the agent, the agent is the client.

    Starts the embedded simulator when asked (`--upstream sim`, or no credentials for the default upstream),
    the event log and the bridge; `audio` runs while the session does. Ends when the upstream ends the session
    or `stop` is set (the client closes, like Ctrl-C); then the audio stops, the log is flushed and closed and
    the simulator shut down, in that order.
    """
    display = agent.display
    client = MicClient(agent)
    simulator: RunningSimulator | None = None
    event_log: EventLog | None = None
    pump: asyncio.Task[None] | None = None
    stopper: asyncio.Future[Any] | None = None
    try:
        url = settings.upstream
        if _wants_simulator(settings):
            simulator = await start_simulator(simulator_options(settings, embedded=True), "127.0.0.1", 0)
            url = simulator.realtime_url
            display.notice(f"using the embedded simulator at {url} (no upstream credentials or --upstream sim)")
        target = upstream_target(settings, url, simulator=simulator is not None)
        # Its stdout is the terminal display: event records join the daemon's own records on stderr.
        event_log = open_event_log(settings, stdout_fd=2)
        # Recorded from the devices, not the frames: what the microphone captured, what the speaker played.
        env = session_environment(settings, event_log, record_frames=False)
        policy = session_policy(settings, relay_events=True, tools=load_tools(settings))
        bridge = SessionBridge(client, target, policy, env, started_info={"mode": "mic", **started_info})
        loop = asyncio.get_running_loop()
        speaker_rate = agent.playback_buffer.rate

        def record_played(samples: npt.NDArray[np.float32], at: float) -> None:
            if bridge.recorder is not None:
                bridge.recorder.played_samples(samples, speaker_rate, at)

        def played(samples: npt.NDArray[np.float32], at: float) -> None:  # on the speaker's callback thread
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing is recorded any more
                loop.call_soon_threadsafe(record_played, samples, at)

        if env.recording is not None:
            agent.playback_buffer.on_played = played

        async def pump_capture() -> None:
            while True:
                block = await captured.get()
                client.on_capture(block)
                if bridge.recorder is not None:
                    bridge.recorder.user_samples(block, agent.capture_rate)

        audio.start()
        pump = asyncio.create_task(pump_capture(), name="mic-capture")
        run = asyncio.create_task(bridge.run(), name="mic-session")
        waiters: set[asyncio.Future[Any]] = {run}
        if stop is not None:
            stopper = asyncio.ensure_future(stop.wait())
            waiters.add(stopper)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            client.finish()
        outcome = await run
        return SessionRun(
            outcome=outcome,
            log_path=bridge.log.path(Path(settings.log_dir)) if settings.event_log_files else None,
            upstream_url=redact_url(target.url),
        )
    finally:
        # Audio first (no more callbacks into a closing session), then the tasks, the log, the simulator.
        audio.stop()
        agent.playback_buffer.on_played = None
        for task in (pump, stopper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if event_log is not None:
            await asyncio.to_thread(event_log.close)
        if simulator is not None:
            await simulator.close()


async def run_mic_session(
    settings: Settings,
    *,
    display: Display,
    stop: asyncio.Event | None = None,
    chosen: MicDevices | None = None,
) -> MicResult:
    """One mic session on this machine's devices, from start to clean end. `stop` set = Ctrl-C."""
    loop = asyncio.get_running_loop()
    chosen = chosen or choose_devices(settings)
    capture_rate, playback_rate = chosen.capture.default_rate, chosen.playback.default_rate
    buffer = PlaybackBuffer(playback_rate, prefill_ms=settings.playback_buffer_ms)
    speaker = PlaybackStream(chosen.playback, buffer, playback_rate * OUTPUT_BLOCK_MS // 1000, latency=OUTPUT_LATENCY_MS / 1000.0)
    captured: asyncio.Queue[npt.NDArray[np.float32]] = asyncio.Queue()
    try:
        microphone = CaptureStream(chosen.capture, capture_rate, capture_rate * settings.chunk_ms // 1000, loop, captured)
    except BaseException:
        speaker.stop()
        raise
    audio = DeviceAudio(microphone, speaker)
    stop = stop if stop is not None else asyncio.Event()
    watch = asyncio.create_task(watch_devices(audio, stop, display), name="mic-devices")
    try:
        agent = MicAgent(
            capture_rate=capture_rate,
            writer=PlaybackWriter(buffer, DEFAULT_FORMAT.rate),
            chunk_ms=settings.chunk_ms,
            duplex=settings.duplex,
            display=display,
            output_latency_ms=speaker.latency_ms,
        )
        run = await drive_session(
            settings,
            agent,
            captured,
            audio,
            stop=stop,
            started_info={
                "input_device": chosen.capture.name,
                "output_device": chosen.playback.name,
                "capture_rate": capture_rate,
                "playback_rate": playback_rate,
                "duplex": settings.duplex,
            },
        )
    finally:
        audio.stop()  # idempotent; covers a failure before the session started
        if not watch.done():
            watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    return MicResult(
        outcome=run.outcome,
        agent=agent,
        underruns=buffer.underruns,
        log_path=run.log_path,
        upstream_url=run.upstream_url,
        capture_overflows=microphone.overflows,
        capture_dropped_blocks=microphone.dropped_blocks,
        output_underflows=speaker.underflows,
        lost_device=watch.result() if not watch.cancelled() else None,
    )

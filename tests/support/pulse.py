"""PulseAudio null-sink rig for the audio tier (DESIGN.md "Tests", audio tier recipe).

`ensure_pulse()` makes this machine's PortAudio record from a null sink's monitor and play into another null
sink: it starts pulseaudio when it is not running, loads the null sinks `mic` and `spk` (idempotent), makes
`mic.monitor` the default source and `spk` the default sink, routes ALSA to pulse (/etc/asound.conf, written
only when missing) and re-scans PortAudio's device list. Missing system parts go through `tests.support.tiers`
(skip with one line, or fail under RELAY_REQUIRE_ALL_TIERS=1).

It returns a `PulseRig` whose sinks belong to this test process alone (`mic_<pid>`, `spk_<pid>`, removed at
exit): with `rig.env` (PULSE_SOURCE / PULSE_SINK, which libpulse honours for PortAudio's "default" device)
two test runs sharing one sound server cannot hear each other. `rig.play_into_mic()` feeds a WAV file to the
"microphone"; `rig.recorder()` records what reached the "speaker" with a timeline, so a test can tell when a
sound started or stopped.
"""

from __future__ import annotations

import atexit
import ctypes.util
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from tests.support import tiers
from tests.support.timing import seconds

MIC_SINK = "mic"
SPEAKER_SINK = "spk"
ASOUND_CONF = Path("/etc/asound.conf")
ASOUND_PULSE = "pcm.!default { type pulse }\nctl.!default { type pulse }\n"

_lock = threading.Lock()
_rig: PulseRig | None = None


@dataclass(frozen=True)
class PulseRig:
    mic_sink: str
    speaker_sink: str

    @property
    def env(self) -> dict[str, str]:
        """Environment that points PortAudio's default devices at this rig (libpulse reads it per stream)."""
        return {"PULSE_SOURCE": f"{self.mic_sink}.monitor", "PULSE_SINK": self.speaker_sink}

    def play_into_mic(self, wav: Path) -> subprocess.Popen[bytes]:
        """Start playing `wav` into the rig's microphone sink."""
        return subprocess.Popen(["paplay", f"--device={self.mic_sink}", str(wav)])

    def recorder(self, rate: int = 16000) -> SpeakerRecorder:
        return SpeakerRecorder(rate, source=f"{self.speaker_sink}.monitor")


def _pactl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=seconds(10), check=check)


def _server_running() -> bool:
    try:
        return _pactl("info", check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _start_server() -> None:
    cmd = ["pulseaudio", "--start", "--exit-idle-time=-1"]
    if os.geteuid() == 0:
        cmd.append("--disallow-exit")  # as root pulseaudio warns (no --system) but runs: good enough for tests
    subprocess.run(cmd, capture_output=True, timeout=seconds(20), check=False)
    deadline = time.monotonic() + seconds(10)
    while time.monotonic() < deadline:
        if _server_running():
            return
        time.sleep(0.1)
    tiers.missing("pulseaudio did not start (pactl info keeps failing)")


def _ensure_sink(name: str) -> int | None:
    """Load a null sink called `name` unless it exists; the module index when this call loaded it."""
    sinks = _pactl("list", "short", "sinks").stdout.split("\n")
    if any(line.split("\t")[1:2] == [name] for line in sinks if line):
        return None
    out = _pactl("load-module", "module-null-sink", f"sink_name={name}", f"sink_properties=device.description={name}")
    return int(out.stdout.strip())


def _unload(modules: list[int]) -> None:
    for index in modules:
        subprocess.run(["pactl", "unload-module", str(index)], capture_output=True, timeout=10, check=False)


def _ensure_alsa_routes_to_pulse() -> None:
    if ASOUND_CONF.exists() or Path.home().joinpath(".asoundrc").exists():
        return
    try:
        ASOUND_CONF.write_text(ASOUND_PULSE)
    except OSError:
        Path.home().joinpath(".asoundrc").write_text(ASOUND_PULSE)


def ensure_pulse() -> PulseRig:
    """Make the null-sink rig ready (once per process; cheap afterwards)."""
    global _rig
    with _lock:
        if _rig is not None:
            return _rig
        tiers.require("pulseaudio", "pulseaudio is not installed (make system-deps)")
        tiers.require("pactl", "pactl is not installed (pulseaudio-utils; make system-deps)")
        tiers.require("parec", "parec is not installed (pulseaudio-utils; make system-deps)")
        tiers.require("paplay", "paplay is not installed (pulseaudio-utils; make system-deps)")
        if ctypes.util.find_library("portaudio") is None:
            tiers.missing("libportaudio2 is not installed (make system-deps)")
        if not _server_running():
            _start_server()
        # An idle null sink is suspended after a few seconds; resuming it delays the first captured block by
        # ~2 s and shifts the monitor's timing, so the rig keeps its sinks running.
        _pactl("unload-module", "module-suspend-on-idle", check=False)
        _ensure_sink(MIC_SINK)
        _ensure_sink(SPEAKER_SINK)
        _pactl("set-default-source", f"{MIC_SINK}.monitor")
        _pactl("set-default-sink", SPEAKER_SINK)
        _ensure_alsa_routes_to_pulse()
        rig = PulseRig(f"{MIC_SINK}_{os.getpid()}", f"{SPEAKER_SINK}_{os.getpid()}")
        loaded = [i for i in (_ensure_sink(rig.mic_sink), _ensure_sink(rig.speaker_sink)) if i is not None]
        atexit.register(_unload, loaded)
        from audio import devices

        devices.refresh()  # PortAudio lists devices once at start-up; pulse may have come up after that
        if not any(d.max_input_channels and d.max_output_channels for d in devices.list_devices()):
            tiers.missing("PortAudio sees no duplex device even with PulseAudio running (ALSA pulse plugin?)")
        _rig = rig
        return rig


@dataclass
class _Chunk:
    arrived: float  # time.monotonic() when parec handed it over
    samples: np.ndarray


class SpeakerRecorder:
    """Records `spk.monitor` (what the "speaker" played) as mono PCM16 at `rate`, timestamping every chunk."""

    def __init__(self, rate: int = 16000, source: str = f"{SPEAKER_SINK}.monitor") -> None:
        self.rate = rate
        self._proc = subprocess.Popen(
            [
                "parec",
                f"--device={source}",
                "--format=s16le",
                f"--rate={rate}",
                "--channels=1",
                "--latency-msec=30",  # small enough for timing, large enough not to drive the sink into underruns
                "--raw",
            ],
            stdout=subprocess.PIPE,
        )
        self._chunks: list[_Chunk] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        pending = b""
        while True:
            data = self._proc.stdout.read1(4096)  # type: ignore[attr-defined]
            if not data:
                return
            now = time.monotonic()
            data = pending + data
            usable = len(data) - len(data) % 2
            pending = data[usable:]
            samples = np.frombuffer(data[:usable], "<i2").astype(np.float32) / 32768.0
            self._chunks.append(_Chunk(now, samples))

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=seconds(5))
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._thread.join(timeout=seconds(5))

    def __enter__(self) -> SpeakerRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def samples(self) -> np.ndarray:
        chunks = list(self._chunks)
        return np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32)

    def sample_times(self) -> np.ndarray:
        """Monotonic time at which each recorded sample was played.

        parec hands over audio in bursts at first and promptly later; the sample clock itself is exact. So the
        timeline is anchored on the chunk that arrived with the least delay relative to its sample count.
        """
        chunks = list(self._chunks)
        if not chunks:
            return np.zeros(0)
        ends = np.cumsum([len(c.samples) for c in chunks])
        start = min(c.arrived - float(end) / self.rate for c, end in zip(chunks, ends, strict=True))
        times: np.ndarray = start + np.arange(int(ends[-1]), dtype=np.float64) / self.rate
        return times

    def wait_for_samples(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + seconds(timeout)
        while sum(len(c.samples) for c in list(self._chunks)) < n and time.monotonic() < deadline:
            time.sleep(0.01)


def espeak_wav(text: str, path: Path) -> Path:
    """A spoken phrase as a WAV file (espeak-ng), the stand-in for a person at the microphone."""
    tiers.require("espeak-ng", "espeak-ng is not installed (make system-deps)")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True, timeout=seconds(30))
    return path

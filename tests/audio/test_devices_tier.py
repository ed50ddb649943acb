"""Audio tier: real PortAudio streams (audio/devices.py) through PulseAudio null sinks (tests/support/pulse.py).

A tone played into the `mic` sink must come out of CaptureStream; a tone written to a PlaybackBuffer must be
heard on the `spk` sink's monitor. Frequencies are checked by FFT peak.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audio import devices
from audio.pcm import float_to_pcm16, write_wav
from audio.playback import PlaybackBuffer
from tests.support.pulse import PulseRig, ensure_pulse
from tests.support.timing import seconds

pytestmark = pytest.mark.audio


@pytest.fixture(autouse=True)
def rig(monkeypatch: pytest.MonkeyPatch) -> PulseRig:
    rig = ensure_pulse()
    for name, value in rig.env.items():
        monkeypatch.setenv(name, value)  # PortAudio's default devices -> this process's own null sinks
    return rig


def tone(freq: float, rate: int, secs: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * secs)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def test_devices_lists_the_pulse_devices_with_their_default_rates() -> None:
    found = devices.list_devices()
    names = {d.name for d in found}
    assert {"pulse", "default"} & names
    assert all(d.default_rate > 0 for d in found)
    default_in, default_out = devices.default_device_indices()
    assert default_in is not None and default_out is not None


def test_default_devices_are_selected_with_an_empty_spec() -> None:
    assert devices.find_device("", "input").max_input_channels > 0
    assert devices.find_device("", "output").max_output_channels > 0


def test_a_missing_device_name_is_a_clear_error() -> None:
    with pytest.raises(devices.DeviceNotFoundError, match="no input device matches 'no-such-mic'"):
        devices.find_device("no-such-mic", "input")


@pytest.mark.parametrize("kind", ["input", "output"])
def test_the_default_devices_take_mono_at_their_default_rate(kind: str) -> None:
    device = devices.find_device("", kind)  # type: ignore[arg-type]
    assert devices.check_rate(device, device.default_rate, kind) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -44100, 500])
def test_impossible_rates_are_refused_before_opening(rate: int) -> None:
    device = devices.find_device("", "input")
    with pytest.raises(devices.UnsupportedRateError):
        devices.check_rate(device, rate, "input")


async def test_capture_stream_hears_a_tone_played_into_the_mic_sink(tmp_path: Path, rig: PulseRig) -> None:
    device = devices.find_device("", "input")
    rate = device.default_rate
    wav = tmp_path / "tone.wav"
    write_wav(wav, float_to_pcm16(tone(1000.0, 16000, 2.0)), 16000)
    queue: asyncio.Queue[np.ndarray] = asyncio.Queue()
    blocks: list[np.ndarray] = []
    with devices.CaptureStream(device, rate, rate // 50, asyncio.get_running_loop(), queue) as capture:
        player = rig.play_into_mic(wav)
        try:
            deadline = time.monotonic() + seconds(10)
            while time.monotonic() < deadline:
                block = await asyncio.wait_for(queue.get(), seconds(5))
                blocks.append(block)
                heard = np.concatenate(blocks)
                if len(heard) > rate and np.sqrt(np.mean(heard[-rate // 2 :] ** 2)) > 0.1:
                    break
        finally:
            player.terminate()
            player.wait()
    assert all(len(b) == rate // 50 for b in blocks)
    assert capture.dropped_blocks == 0
    loud = np.concatenate(blocks)[-rate // 2 :]
    assert np.sqrt(np.mean(loud**2)) > 0.1, "the tone never reached the capture stream"
    assert abs(peak_frequency(loud, rate) - 1000.0) < 10


def test_playback_stream_plays_the_buffer_into_the_speaker_sink(rig: PulseRig) -> None:
    device = devices.find_device("", "output")
    buffer = PlaybackBuffer(device.default_rate, prefill_ms=80)
    buffer.write(tone(660.0, buffer.rate, 1.5), "item_tone")
    buffer.finish()

    def heard_to_its_end() -> bool:
        """The monitor has the tone and 100 ms of quiet after it: its last blocks travelled through pulse."""
        heard = recorder.samples()
        loud_at = np.flatnonzero(np.abs(heard) > 0.05)
        return len(loud_at) > 0 and len(heard) - int(loud_at[-1]) > 16000 // 10

    with rig.recorder(16000) as recorder, devices.PlaybackStream(device, buffer, buffer.rate // 100):
        deadline = time.monotonic() + seconds(10)
        while buffer.is_active and time.monotonic() < deadline:
            time.sleep(0.05)
        deadline = time.monotonic() + seconds(10)
        while not heard_to_its_end() and time.monotonic() < deadline:
            time.sleep(0.01)
    heard = recorder.samples()
    loud = heard[np.abs(heard) > 0.05]
    assert len(loud) > 16000 * 0.5, "the tone never reached the speaker sink"
    start = int(np.argmax(np.abs(heard) > 0.05))
    assert abs(peak_frequency(heard[start : start + 16000], 16000) - 660.0) < 10
    assert buffer.played_ms("item_tone") == 1500
    assert buffer.underruns == 0


def run_devices(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "devices", *args],
        capture_output=True,
        text=True,
        timeout=seconds(30),
        env={**os.environ, **(env or {})},
    )


def test_devices_command_lists_devices_with_default_rates_and_marks_defaults() -> None:
    result = run_devices()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    default_line = next(line for line in lines if line.endswith(": default"))
    assert default_line.startswith("<>")  # default input and output
    assert "44100 Hz" in default_line or "48000 Hz" in default_line


def test_devices_json_is_one_object_per_device() -> None:
    result = run_devices("--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"pulse", "default"} <= {r["name"] for r in records}
    assert all(r["default_samplerate"] > 0 for r in records)
    assert sum(r["default_input"] for r in records) == 1


def test_devices_without_a_sound_server_says_none_were_found() -> None:
    result = run_devices(env={"PULSE_SERVER": "unix:/nonexistent"})
    assert result.returncode == 0
    assert result.stdout == ""
    assert "no audio devices found" in result.stderr

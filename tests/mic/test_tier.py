"""Audio tier: `realtime-relay mic` end to end, with real PortAudio through PulseAudio null sinks.

A phrase played into the `mic` sink is the person talking; the `spk` sink's monitor is the person's ear.
The session runs against the embedded simulator (`--upstream sim`), whose reply echoes the utterance, so the
reply heard at the speaker must correlate with the phrase. The mic process is a real subprocess ended with
SIGINT (Ctrl-C) and must exit 0 with its event log and WAVs written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from audio.pcm import float_to_pcm16, read_wav, resample_pcm16, write_wav
from tests.support.pulse import PulseRig, SpeakerRecorder, ensure_pulse, espeak_wav
from tests.support.timing import seconds

pytestmark = pytest.mark.audio
REC_RATE = 16000
LOUD = 0.02  # |sample| above this at the speaker counts as sound (the null sinks are digitally silent)


@pytest.fixture
def rig() -> PulseRig:
    return ensure_pulse()


class MicProcess:
    """`realtime-relay mic` as a subprocess; stdout lines are collected with their arrival times."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, stderr_path: Path) -> None:
        # stderr goes to a file: a pipe nobody reads until the end would fill up and stall the process.
        self.stderr_path = stderr_path
        with stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "mic", *args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, **(env or {})},
            )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for_line(self, text: str, timeout: float, after: int = 0) -> int:
        """Index of the first line from `after` on containing `text`."""
        deadline = time.monotonic() + seconds(timeout)
        while time.monotonic() < deadline:
            for i, (_, line) in enumerate(list(self.lines)[after:], start=after):
                if text in line:
                    return i
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line with {text!r}; got:\n" + "\n".join(line for _, line in self.lines))

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: the exit code and stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=seconds(15))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(timeout=seconds(5))
        return self.proc.returncode, self.stderr

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def run_mic(tmp_path: Path, rig: PulseRig) -> Iterator[Any]:
    started: list[MicProcess] = []

    def start(*args: str) -> MicProcess:
        mic = MicProcess(
            "--upstream", "sim", "--log-dir", str(tmp_path / "logs"), "--data-dir", str(tmp_path / "data"),
            "--log-format", "json", *args, env=rig.env, stderr_path=tmp_path / f"mic{len(started)}.stderr",
        )
        started.append(mic)
        return mic

    yield start
    for mic in started:
        mic.kill()


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + seconds(timeout)
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def played_all(paplay: subprocess.Popen[bytes], timeout: float = 30) -> None:
    assert paplay.wait(timeout=seconds(timeout)) == 0


def quiet_for(recorder: SpeakerRecorder, secs: float) -> bool:
    """The speaker has been silent for the last `secs` (and something was recorded at all)."""
    x = recorder.samples()
    n = int(secs * REC_RATE)
    return len(x) > n and not np.any(np.abs(x[-n:]) > LOUD)


def loud_seconds(recorder: SpeakerRecorder) -> float:
    return float(np.count_nonzero(np.abs(recorder.samples()) > LOUD) / REC_RATE)


def logged_so_far(tmp_path: Path) -> list[tuple[str, str]]:
    """(dir, type) of the records the running session's log holds yet (a line still being written is left out)."""
    return [
        (record["dir"], record["type"])
        for path in sorted((tmp_path / "logs").glob("*/*.jsonl"))
        for record in (orjson.loads(line) for line in path.read_bytes().split(b"\n")[:-1] if line.strip())
    ]


def session_log(tmp_path: Path) -> list[dict[str, Any]]:
    files = sorted((tmp_path / "logs").glob("*/*.jsonl"))
    assert len(files) == 1, files
    return [orjson.loads(line) for line in files[0].read_bytes().splitlines()]


def best_correlation(haystack: np.ndarray, needle: np.ndarray) -> tuple[float, int]:
    """Peak normalized cross-correlation of `needle` inside `haystack` (1.0 = an exact, scaled copy)."""
    n = len(needle)
    size = 1 << int(np.ceil(np.log2(len(haystack) + n)))
    corr = np.fft.irfft(np.fft.rfft(haystack, size) * np.conj(np.fft.rfft(needle, size)), size)[: len(haystack) - n + 1]
    energy = np.convolve(haystack.astype(np.float64) ** 2, np.ones(n), mode="valid")
    norm = corr / (np.sqrt(np.maximum(energy, 1e-12)) * np.linalg.norm(needle))
    lag = int(np.argmax(norm))
    return float(norm[lag]), lag


def mono16k(path: Path) -> np.ndarray:
    pcm, rate = read_wav(path)
    return np.frombuffer(resample_pcm16(pcm, rate, REC_RATE), "<i2").astype(np.float32) / 32768.0


def test_mic_with_a_missing_device_exits_2_with_the_message(run_mic: Any) -> None:
    mic = run_mic("--input-device", "no-such-microphone")
    assert mic.proc.wait(timeout=seconds(30)) == 2
    err = mic.stderr
    assert "no input device matches 'no-such-microphone'" in err
    assert "Traceback" not in err


def test_print_config_refuses_a_device_mic_would_refuse(rig: PulseRig) -> None:
    base = [sys.executable, "-m", "relay", "mic", "--upstream", "sim", "--print-config"]
    env = {**os.environ, **rig.env}
    bad = subprocess.run([*base, "--input-device", "no-such-microphone"], capture_output=True, text=True, env=env, timeout=seconds(30))
    assert bad.returncode == 2 and "no input device matches 'no-such-microphone'" in bad.stderr
    assert subprocess.run(base, capture_output=True, env=env, timeout=seconds(30)).returncode == 0


def test_event_records_asked_for_on_stdout_go_to_stderr_in_mic(tmp_path: Path, rig: PulseRig) -> None:
    # mic's stdout is its display; its log stream is stderr, where event_log_stdout's records join the others.
    argv = [sys.executable, "-m", "relay", "mic", "--upstream", "sim", "--log-dir", str(tmp_path / "logs"),
            "--log-format", "json", "--duration", "1.5"]  # fmt: skip
    env = {**os.environ, **rig.env, "RELAY_EVENT_LOG_STDOUT": "true"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds(30))
    assert done.returncode == 0, done.stderr
    assert '"seq"' not in done.stdout
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{") and '"seq"' in line]
    assert records and records[-1]["type"] == "relay.session_ended"


def test_mic_whose_reader_goes_away_ends_the_session_cleanly(tmp_path: Path, rig: PulseRig) -> None:
    # `mic | head -1`: the first line is read, then the pipe closes; the session ends as Ctrl-C would.
    argv = [sys.executable, "-m", "relay", "mic", "--upstream", "sim", "--log-dir", str(tmp_path / "logs"),
            "--data-dir", str(tmp_path / "data"), "--log-format", "json"]  # fmt: skip
    with (tmp_path / "mic.stderr").open("w") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, **rig.env})
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=seconds(30)) == 0
    err = (tmp_path / "mic.stderr").read_text()
    assert "Traceback" not in err and "relay.session_failed" not in err and "ended (client_closed)" in err
    (log,) = (tmp_path / "logs").glob("*/*.jsonl")
    assert json.loads(log.read_text().splitlines()[-1])["type"] == "relay.session_ended"


def test_mic_started_with_stdout_closed_says_so_and_exits_1(tmp_path: Path, rig: PulseRig) -> None:
    argv = [sys.executable, "-m", "relay", "mic", "--upstream", "sim", "--log-dir", str(tmp_path / "logs")]
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **rig.env},
        pass_fds=(), timeout=seconds(30), preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert done.returncode == 1
    assert "standard output is closed" in done.stderr and "Traceback" not in done.stderr


def test_mic_without_a_sound_server_exits_2_saying_there_is_no_device(tmp_path: Path, rig: PulseRig) -> None:
    mic = MicProcess(
        "--upstream", "sim", "--log-dir", str(tmp_path),
        env={"PULSE_SERVER": "unix:/nonexistent"}, stderr_path=tmp_path / "mic.stderr",
    )
    assert mic.proc.wait(timeout=seconds(30)) == 2
    assert "no input audio device found" in mic.stderr


def pulse_streams_of(pid: int, kind: str) -> list[str]:
    """The indexes of `pid`'s PulseAudio streams: kind "sink-inputs" (its speaker) or "source-outputs" (its mic)."""
    listed = subprocess.run(["pactl", "list", kind], capture_output=True, text=True, timeout=seconds(10)).stdout
    return [block.split("\n", 1)[0].split("#")[1] for block in listed.split("\n\n") if f'application.process.id = "{pid}"' in block]


@pytest.mark.parametrize(("kind", "device"), [("sink-inputs", "speaker"), ("source-outputs", "microphone")])
def test_a_device_lost_mid_session_is_reported_and_ends_the_session(run_mic: Any, kind: str, device: str) -> None:
    # Killing mic's own stream in the sound server is what unplugging a USB device looks like to PortAudio:
    # its callback stops, silently. Unnoticed, a lost speaker kept a half-duplex microphone muted for good.
    mic = run_mic()
    mic.wait_for_line("[listening]", 20)
    wait_until(lambda: pulse_streams_of(mic.proc.pid, kind), 10, f"mic's {kind}")
    for index in pulse_streams_of(mic.proc.pid, kind):
        subprocess.run(["pacmd", f"kill-{kind[:-1]}", index], check=True, timeout=seconds(10))
    mic.wait_for_line(f"the {device} stopped", 15)
    assert mic.proc.wait(timeout=seconds(20)) == 1
    assert f"the {device} stopped mid-session" in mic.stderr and "Traceback" not in mic.stderr


def test_the_echo_reply_comes_out_of_the_speaker_and_ctrl_c_ends_cleanly(
    tmp_path: Path, run_mic: Any, rig: PulseRig
) -> None:
    phrase_wav = espeak_wav("hello relay, this is the microphone test", tmp_path / "phrase.wav")
    phrase = mono16k(phrase_wav)
    with rig.recorder(REC_RATE) as recorder:
        mic = run_mic()
        mic.wait_for_line("[listening]", 20)
        recorder.wait_for_samples(REC_RATE * 2, 10)  # the rig's monitor timing settles in its first second
        played_all(rig.play_into_mic(phrase_wav))
        mic.wait_for_line("assistant: Echo of", 30)  # the assistant's text on the terminal
        # The reply (a short tone, then the phrase) has played once the speaker was loud and is quiet again.
        wait_until(lambda: loud_seconds(recorder) > 0.3, 30, "the reply at the speaker")
        wait_until(lambda: quiet_for(recorder, 1.0), 30, "the reply to end")
        code, err = mic.interrupt()
    assert code == 0, err
    assert "ended (client_closed)" in err
    print("\n" + err.splitlines()[-1])

    heard = recorder.samples()
    voiced = phrase[np.abs(phrase) > 0.01]
    assert len(voiced) > REC_RATE  # the phrase is real speech, over a second of it
    whole, lag = best_correlation(heard, phrase)
    # Piece by piece too: on a loaded machine one glitch can shift the rest of the reply and spoil the
    # whole-phrase score, yet every piece of the phrase must still be heard, in order.
    pieces = np.array_split(phrase, 5)
    found = [best_correlation(heard, piece) for piece in pieces]
    scores = [score for score, _ in found]
    print(f"\necho at the speaker: correlation {whole:.3f} at {lag / REC_RATE:.2f} s; pieces {np.round(scores, 2)}")
    assert np.median(scores) > 0.8 and min(scores) > 0.4, f"the speaker did not play the echo (pieces {scores})"
    assert [at for _, at in found] == sorted(at for _, at in found)

    records = session_log(tmp_path)
    types = [(r["dir"], r["type"]) for r in records]
    assert records[0]["type"] == "relay.session_started"
    assert records[0]["event"]["mode"] == "mic"
    assert ("client", "input_audio_buffer.append") in types
    assert ("server", "input_audio_buffer.speech_started") in types
    assert ("server", "response.output_audio.delta") in types
    assert records[-1]["type"] == "relay.session_ended"
    assert records[-1]["event"]["reason"] == "client_closed"
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    saved = [r["event"] for r in records if r["type"] == "relay.audio_saved"]
    assert len(saved) >= 2  # the user's utterance and the assistant's reply
    for entry in saved:
        assert Path(entry["path"]).is_file()
        assert entry["path"].startswith(str(tmp_path / "data" / "sessions"))
    # The user item's WAV holds the phrase as the relay sent it.
    user_wavs = [Path(e["path"]) for e in saved if e["duration_ms"] > 1000]
    assert any(best_correlation(np.concatenate([mono16k(p), np.zeros(len(phrase))]), phrase)[0] > 0.6 for p in user_wavs)


def stop_before_silence(loud: np.ndarray, start: int, min_silence: int) -> int | None:
    """Index of the last loud sample (from `start` on) that is followed by at least `min_silence` quiet ones."""
    loud_at = np.flatnonzero(loud[start:]) + start
    if len(loud_at) == 0:
        return None
    following = np.diff(np.append(loud_at, len(loud)))  # distance to the next loud sample (or the end)
    long_gaps = np.flatnonzero(following > min_silence)
    return int(loud_at[long_gaps[0]]) if len(long_gaps) else None


def silent_runs_ms(loud: np.ndarray, min_ms: float) -> list[float]:
    """Durations of the quiet runs inside `loud` at least `min_ms` long (a waveform's zero crossings are shorter)."""
    loud_at = np.flatnonzero(loud)
    steps = np.diff(loud_at) - 1
    return [round(n * 1000.0 / REC_RATE, 1) for n in steps if n * 1000.0 / REC_RATE >= min_ms]


def buzz(secs: float, rate: int = 16000) -> np.ndarray:
    """A steady voiced sound (150 Hz with harmonics): continuous, so its echo stops at one clean edge."""
    t = np.arange(int(rate * secs)) / rate
    wave: np.ndarray = np.zeros_like(t)
    for k in range(1, 8):
        wave += np.sin(2 * np.pi * 150 * k * t) / k
    wave = 0.4 * wave / np.max(np.abs(wave))
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
    out: np.ndarray = (wave * fade).astype(np.float32)
    return out


def test_barge_in_stops_the_speaker_and_truncates_to_what_was_played(
    tmp_path: Path, run_mic: Any, rig: PulseRig
) -> None:
    first = tmp_path / "first.wav"
    write_wav(first, float_to_pcm16(buzz(5.0)), 16000)
    interruption = espeak_wav("stop, stop, wait a moment", tmp_path / "interrupt.wav")
    wall_minus_mono = time.time() - time.monotonic()
    with rig.recorder(REC_RATE) as recorder:
        mic = run_mic("--duplex", "full")
        mic.wait_for_line("[listening]", 20)
        recorder.wait_for_samples(REC_RATE * 2, 10)
        played_all(rig.play_into_mic(first))
        # The reply (a short tone, then the 5 s buzz echoed) is playing once 1.5 s of it has been heard.
        wait_until(lambda: loud_seconds(recorder) > 1.5, 30, "the reply at the speaker")
        played_all(rig.play_into_mic(interruption))
        mic.wait_for_line("barge-in", 20)
        recorder.wait_for_samples(len(recorder.samples()) + REC_RATE, 10)
        # The barge-in line comes before the truncate is sent; the server's answer to it is a later frame.
        truncated = ("server", "conversation.item.truncated")
        wait_until(lambda: truncated in logged_so_far(tmp_path), 10, "the truncation's confirmation in the log")
        code, err = mic.interrupt()
    assert code == 0, err

    records = session_log(tmp_path)
    started = [r for r in records if r["type"] == "input_audio_buffer.speech_started"]
    assert len(started) >= 2
    barge_wall = datetime.fromisoformat(started[1]["ts"].replace("Z", "+00:00")).timestamp()
    barge_at = barge_wall - wall_minus_mono  # monotonic time the relay handled speech_started

    heard, times = recorder.samples(), recorder.sample_times()
    loud = np.abs(heard) > LOUD
    stop_index = stop_before_silence(loud, np.flatnonzero(times > barge_at - 0.5)[0], int(0.4 * REC_RATE))
    assert stop_index is not None, "the speaker never went silent after the barge-in"
    stop_at = times[stop_index]
    latency_ms = (stop_at - barge_at) * 1000.0
    print(f"\nbarge-in stop latency (speech_started handled -> silence at the speaker): {latency_ms:.1f} ms")
    # Generous: the target is 50 ms; the null sink renders ahead in ~30 ms slices and the monitor's timeline
    # is reconstructed from chunk arrivals, so the rig resolves the stop only to a few tens of ms either way.
    assert -60.0 < latency_ms < 250.0

    sent = [r for r in records if r["dir"] == "client" and r["type"] in ("response.cancel", "conversation.item.truncate")]
    assert [r["type"] for r in sent] == ["response.cancel", "conversation.item.truncate"]
    truncate = sent[1]["event"]
    # What the speaker actually played of the reply item, from its first sound to the stop, must match the
    # truncate point. The reply's first pause (after its lead tone: the designed gap plus the utterance's prefix
    # padding) is part of the item; later pauses are dropouts of a loaded machine, which the callback does not
    # count as played, so they are taken out.
    start_index = int(np.flatnonzero(loud & (times > barge_at - 8.0))[0])
    gaps_ms = silent_runs_ms(loud[start_index : stop_index + 1], min_ms=30)
    heard_ms = (stop_index - start_index) * 1000.0 / REC_RATE - sum(gaps_ms[1:])
    print(f"truncate audio_end_ms {truncate['audio_end_ms']} vs heard {heard_ms:.0f} ms (gaps {gaps_ms})")
    print("ALSA underruns reported:", err.count("underrun occurred"), "|", err.splitlines()[-1])
    assert abs(truncate["audio_end_ms"] - heard_ms) < 150.0
    assert ("server", "conversation.item.truncated") in [(r["dir"], r["type"]) for r in records]

"""Audio devices: discovery, selection by index or name substring, and the PortAudio streams (sounddevice).

Two halves with one boundary:
- Pure: `DeviceInfo`, `select_device()` over a list of devices (no PortAudio involved, unit-tested with any
  list), and the `DeviceError` family whose messages are what a user sees before exit code 2.
- PortAudio adapters: `list_devices()`, `default_device_indices()`, `check_rate()`, `CaptureStream` and
  `PlaybackStream`. Their callbacks run on PortAudio's real-time thread: the capture callback copies the block
  and hands it to the event loop with `loop.call_soon_threadsafe`; the playback callback copies from a
  `PlaybackBuffer`. Neither blocks, logs, or raises into PortAudio; trouble is counted instead.

`sounddevice` is imported lazily, so a machine without libportaudio gets a `PortAudioUnavailable` error (a
clear message) instead of an import failure of the whole package.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt

from audio.pcm import FloatArray
from audio.playback import PlaybackBuffer
from audio.resample import validate_rate

Kind = Literal["input", "output"]


class DeviceError(Exception):
    """A device cannot be used as asked. The message is written for the person at the terminal."""


class PortAudioUnavailable(DeviceError):
    """The PortAudio library is missing or cannot start."""


class NoDeviceError(DeviceError):
    """There is no device of the wanted kind at all (or no default one)."""


class DeviceNotFoundError(DeviceError):
    """No device matches the given index or name."""


class AmbiguousDeviceError(DeviceError):
    """A name substring matches more than one device."""


class UnsupportedRateError(DeviceError):
    """The device refuses the sample rate (or channel count) asked for."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float

    def channels(self, kind: Kind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels

    @property
    def default_rate(self) -> int:
        return round(self.default_samplerate)

    def describe(self) -> str:
        return f"#{self.index} {self.name!r} ({self.hostapi})"


# --- pure selection --------------------------------------------------------------------------------------


def _listing(devices: Sequence[DeviceInfo], kind: Kind) -> str:
    usable = [d.describe() for d in devices if d.channels(kind) > 0]
    return ", ".join(usable) if usable else "none"


def select_device(
    devices: Sequence[DeviceInfo], spec: str, kind: Kind, default_index: int | None = None
) -> DeviceInfo:
    """The device `spec` names: "" = the default, digits = an index, anything else = a name substring.

    A substring matching several devices is ambiguous unless exactly one of them has that exact name
    (case-insensitive), so "pulse" can pick the device called "pulse" even if another is "pulse-2".
    """
    if not isinstance(spec, str):
        raise DeviceNotFoundError(f"{kind} device must be an index or a name, got {spec!r}")
    what = f"{kind} device"
    candidates = [d for d in devices if d.channels(kind) > 0]
    if not candidates:
        raise NoDeviceError(f"no {kind} audio device found (is a sound server such as PulseAudio running?)")
    text = spec.strip()
    if not text:
        for d in candidates:
            if d.index == default_index:
                return d
        raise NoDeviceError(
            f"no default {what}; choose one with --{kind}-device (available: {_listing(devices, kind)})"
        )
    if text.lstrip("-").isdigit() and text.isascii():
        index = int(text)
        for d in devices:
            if d.index == index:
                if d.channels(kind) <= 0:
                    raise DeviceNotFoundError(f"device {d.describe()} has no {kind} channels")
                return d
        raise DeviceNotFoundError(f"no {what} with index {index} (available: {_listing(devices, kind)})")
    needle = text.casefold()
    matches = [d for d in candidates if needle in d.name.casefold()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceNotFoundError(f"no {what} matches {text!r} (available: {_listing(devices, kind)})")
    exact = [d for d in matches if d.name.casefold() == needle]
    if len(exact) == 1:
        return exact[0]
    names = ", ".join(d.describe() for d in matches)
    raise AmbiguousDeviceError(f"{what} {text!r} is ambiguous: it matches {names}; use the index")


# --- PortAudio -------------------------------------------------------------------------------------------


def _sounddevice() -> ModuleType:
    try:
        return importlib.import_module("sounddevice")
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise PortAudioUnavailable(
            f"PortAudio is not available ({exc}); install it (Debian: apt install libportaudio2)"
        ) from exc


def refresh() -> None:
    """Re-scan devices: PortAudio lists devices once at initialisation (e.g. a sound server started later)."""
    sd = _sounddevice()
    sd._terminate()
    sd._initialize()


def list_devices() -> list[DeviceInfo]:
    sd = _sounddevice()
    hostapis = sd.query_hostapis()
    result = []
    for raw in sd.query_devices():
        result.append(
            DeviceInfo(
                index=int(raw["index"]),
                name=str(raw["name"]),
                hostapi=str(hostapis[raw["hostapi"]]["name"]),
                max_input_channels=int(raw["max_input_channels"]),
                max_output_channels=int(raw["max_output_channels"]),
                default_samplerate=float(raw["default_samplerate"]),
            )
        )
    return result


def default_device_indices() -> tuple[int | None, int | None]:
    """(default input index, default output index); None where PortAudio has no default."""
    sd = _sounddevice()
    pair = sd.default.device
    found: list[int | None] = []
    for kind, value in zip(("input", "output"), pair, strict=True):
        index = int(value) if value is not None else -1
        if index < 0:
            try:
                index = int(sd.query_devices(kind=kind)["index"])
            except (sd.PortAudioError, ValueError):
                index = -1
        found.append(index if index >= 0 else None)
    return found[0], found[1]


def find_device(spec: str, kind: Kind) -> DeviceInfo:
    """Select a device of this machine (see `select_device`)."""
    default_in, default_out = default_device_indices()
    return select_device(list_devices(), spec, kind, default_in if kind == "input" else default_out)


def check_rate(device: DeviceInfo, rate: int, kind: Kind) -> int:
    """The channel count (1, else 2) at which `device` takes float32 at `rate` for `kind`.

    Mono is what the session needs; some hardware devices only open in stereo, and then the streams use the
    first channel (capture) or copy the mono signal to both (playback). Raises UnsupportedRateError.
    """
    try:
        rate = validate_rate(rate, f"{kind} device rate")
    except ValueError as exc:
        raise UnsupportedRateError(f"{device.describe()}: {exc}") from exc
    sd = _sounddevice()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    problem: Exception | None = None
    for channels in (1, 2):
        if channels > max(device.channels(kind), 1):
            break
        try:
            check(device=device.index, channels=channels, dtype="float32", samplerate=rate)
        except (sd.PortAudioError, ValueError) as exc:
            problem = problem or exc
            continue
        return channels
    raise UnsupportedRateError(f"{kind} device {device.describe()} does not support {rate} Hz: {problem}")


class _Stream:
    """Common start/stop/close of a sounddevice stream; usable as a context manager. `callbacks` counts the
    PortAudio callbacks so far: one that stops growing while the stream should run means the device is gone."""

    _stream: Any
    callbacks: int = 0

    def start(self) -> None:
        try:
            self._stream.start()
        except Exception as exc:
            raise DeviceError(f"cannot start audio stream: {exc}") from exc

    @property
    def active(self) -> bool:
        """PortAudio still runs the stream: False once it stopped it (a host error, the device gone) or it was
        stopped here."""
        stream = self._stream
        return stream is not None and bool(stream.active)

    def stop(self) -> None:
        """Stop and close; safe to call twice and after a failed start."""
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
            finally:
                stream.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _open(kind: Kind, device: DeviceInfo, rate: int, **kwargs: Any) -> Any:
    channels = check_rate(device, rate, kind)
    sd = _sounddevice()
    cls = sd.InputStream if kind == "input" else sd.OutputStream
    try:
        return cls(device=device.index, samplerate=rate, channels=channels, dtype="float32", **kwargs)
    except (sd.PortAudioError, ValueError) as exc:
        raise DeviceError(f"cannot open {kind} device {device.describe()} at {rate} Hz: {exc}") from exc


class CaptureStream(_Stream):
    """Microphone blocks (mono float32 copies) delivered into an asyncio.Queue on `loop`.

    The queue is the loop's; blocks beyond `max_queued` (the consumer is stuck) are dropped oldest-first and
    counted in `dropped_blocks`, so a stalled network cannot grow memory without bound.
    """

    def __init__(
        self,
        device: DeviceInfo,
        rate: int,
        block_frames: int,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[FloatArray],
        max_queued: int = 500,
    ) -> None:
        self.device = device
        self.rate = rate
        self.overflows = 0  # PortAudio said input was lost before we got it
        self.dropped_blocks = 0
        self._loop = loop
        self._queue = queue
        self._max_queued = max_queued
        self._stream = _open("input", device, rate, blocksize=block_frames, callback=self._callback)

    def _deliver(self, block: FloatArray) -> None:
        # Runs on the loop thread.
        while self._queue.qsize() >= self._max_queued:
            self._queue.get_nowait()
            self.dropped_blocks += 1
        self._queue.put_nowait(block)

    def _callback(self, indata: npt.NDArray[np.float32], frames: int, time: Any, status: Any) -> None:
        # PortAudio thread: copy (indata is reused after we return), hand over, return.
        self.callbacks += 1
        if status.input_overflow:
            self.overflows += 1
        block = indata[:, 0].copy()
        try:  # plain try, not contextlib.suppress: no context-manager object per real-time callback
            self._loop.call_soon_threadsafe(self._deliver, block)
        except RuntimeError:
            pass  # the loop is closing: the session is over, the block has nowhere to go


class PlaybackStream(_Stream):
    """Speaker output pulled from a PlaybackBuffer by the PortAudio callback."""

    def __init__(
        self, device: DeviceInfo, buffer: PlaybackBuffer, block_frames: int, latency: float | str = "low"
    ) -> None:
        self.device = device
        self.buffer = buffer
        self.underflows = 0  # PortAudio reported it ran out before our callback delivered
        self.callback_errors = 0
        # A barge-in is heard only after what the device already holds has played: `latency` bounds that.
        self._stream = _open(
            "output", device, buffer.rate, blocksize=block_frames, latency=latency, callback=self._callback
        )

    @property
    def latency_ms(self) -> float:
        stream = self._stream
        return float(stream.latency) * 1000.0 if stream is not None else 0.0

    def _callback(self, outdata: npt.NDArray[np.float32], frames: int, time: Any, status: Any) -> None:
        self.callbacks += 1
        if status.output_underflow:
            self.underflows += 1
        try:
            self.buffer.read_into(outdata)
        except Exception:
            # Never let an exception stop the stream from the real-time thread: play silence, count it.
            outdata.fill(0.0)
            self.callback_errors += 1

"""Pure PCM helpers: PCM16 <-> float32, base64 framing, G.711 (u-law, a-law), one-shot resampling, WAV files.

Everything here is a pure function over bytes and numpy arrays, except `write_wav`/`read_wav`, which touch
exactly the one file they are given. No sockets, no devices, no event loop. Audio on the wire is signed 16-bit
little-endian mono (PROTOCOL.md); G.711 is always 8 kHz.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

FloatArray = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]

SAMPLE_WIDTH = 2  # bytes per PCM16 sample
G711_RATE = 8000


class AudioFormatError(ValueError):
    """Audio bytes that cannot be what they claim to be (bad base64, odd PCM16 length, bad WAV)."""


def pcm16_to_int16(data: bytes) -> Int16Array:
    if len(data) % SAMPLE_WIDTH:
        raise AudioFormatError(f"PCM16 needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)


def pcm16_to_float(data: bytes) -> FloatArray:
    """PCM16 bytes -> float32 samples in [-1, 1)."""
    return (pcm16_to_int16(data).astype(np.float32)) / np.float32(32768.0)


def float_to_pcm16(samples: npt.ArrayLike) -> bytes:
    """float samples (clipped to [-1, 1]) -> PCM16 little-endian bytes."""
    arr = np.asarray(samples, dtype=np.float32)
    scaled = np.clip(np.rint(arr * 32768.0), -32768, 32767).astype("<i2")
    return bytes(scaled.tobytes())


def decode_base64_audio(text: str) -> bytes:
    """Strict base64 decode (whitespace or junk is an error, not silently skipped)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioFormatError(f"invalid base64 audio: {exc}") from exc


def encode_base64_audio(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def duration_ms(n_bytes: int, rate: int, bytes_per_sample: int = SAMPLE_WIDTH) -> float:
    """Milliseconds of mono audio in `n_bytes` at `rate` Hz."""
    if rate <= 0:
        return 0.0
    return n_bytes / bytes_per_sample / rate * 1000.0


# --- G.711 (ITU-T G.711; the classic Sun reference algorithm, vectorised) ---------------------------

_ULAW_BIAS = 0x84


def ulaw_encode(pcm: bytes) -> bytes:
    # Sun g711.c on 14-bit magnitudes (bias 0x21, clip 8159): bit-exact with audioop.lin2ulaw.
    v = pcm16_to_int16(pcm).astype(np.int32) >> 2
    mask = np.where(v < 0, 0x7F, 0xFF).astype(np.int32)
    v = np.minimum(np.where(v < 0, -v, v), 8159) + 0x21
    segment = np.maximum(np.floor(np.log2(np.maximum(v, 1))).astype(np.int32) - 5, 0)
    # Past the last segment the reference code returns the largest code word (0x7F before the mask).
    uval = np.where(segment > 7, 0x7F, (np.minimum(segment, 7) << 4) | ((v >> (np.minimum(segment, 7) + 1)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(sign != 0, -mag, mag).astype("<i2").tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    x = pcm16_to_int16(pcm).astype(np.int32) >> 3  # A-law works on 13-bit magnitudes
    sign = np.where(x >= 0, 0x80, 0).astype(np.int32)
    mag = np.where(x >= 0, x, -x - 1)
    mag = np.minimum(mag, 0xFFF)
    exponent = np.where(mag >= 32, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4, 0)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()


def alaw_decode(data: bytes) -> bytes:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, mag, -mag).astype("<i2").tobytes()


# --- resampling and files ----------------------------------------------------------------------------


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """One-shot high-quality resampling of a whole PCM16 buffer (soxr). For streams use audio.resample."""
    if from_rate == to_rate or not pcm:
        return pcm
    out = soxr.resample(pcm16_to_float(pcm), from_rate, to_rate, quality="HQ")
    return float_to_pcm16(out)


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """A mono PCM16 WAV file's bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a WAV; 0640 in a 0750 folder, as
    recordings of conversations are private to the relay's user and group."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    data = wav_bytes(pcm, rate)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        tmp.replace(path)
    except BaseException:
        # A full disk leaves no half-written `.part` behind: the space goes back, and no stray file is left.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_wav(path: Path) -> tuple[bytes, int]:
    """(PCM16 mono bytes, rate) of a WAV file; stereo is down-mixed, other widths rejected."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"{path}: not a PCM WAV file: {exc}") from exc
    if width != SAMPLE_WIDTH:
        raise AudioFormatError(f"{path}: {width * 8}-bit WAV, only 16-bit is supported")
    if channels > 1:
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).astype(np.int32)
        frames = (samples.mean(axis=1)).astype("<i2").tobytes()
    return frames, rate

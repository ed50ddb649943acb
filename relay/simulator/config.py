"""Session config of the simulator: its shape, the defaults per flavour, the audio formats, typed readers.

The effective config is a plain JSON-shaped dict in the GA shape (`session.type`, `audio.input.format`, ...),
holding only keys the official SDK models know, plus the Yandex extensions a client itself sent
(`audio.input.languages`, `audio.output.role`) in the yandex flavour. `AudioFormat` turns wire bytes of the
configured format into PCM16 and back; `input_format`, `output_format` and `turn_detection` read the config.
Checking and applying what a client sends (`session.update`, `response.create`) is `validation`'s.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from audio import pcm

Flavour = Literal["yandex", "openai"]
FLAVOURS: Final = ("yandex", "openai")

PCM: Final = "audio/pcm"
PCMU: Final = "audio/pcmu"
PCMA: Final = "audio/pcma"
MIN_RATE: Final = 8000
MAX_RATE: Final = 48000
OPENAI_RATE: Final = 24000


class SessionConfigError(ValueError):
    """A client-supplied value the server rejects; becomes an `error` event (invalid_request_error)."""

    def __init__(self, code: str, message: str, param: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass(frozen=True)
class AudioFormat:
    """One audio format as configured: `audio/pcm` at `rate`, or G.711 (always 8 kHz)."""

    type: str
    rate: int

    @classmethod
    def from_config(cls, fmt: dict[str, Any]) -> AudioFormat:
        kind = fmt.get("type", PCM)
        if kind == PCM:
            return cls(PCM, int(fmt.get("rate", OPENAI_RATE)))
        return cls(kind, pcm.G711_RATE)

    def to_pcm16(self, wire: bytes) -> bytes:
        """Wire bytes of this format -> PCM16 at `self.rate`. Raises AudioFormatError on odd PCM16."""
        if self.type == PCMU:
            return pcm.ulaw_decode(wire)
        if self.type == PCMA:
            return pcm.alaw_decode(wire)
        pcm.pcm16_to_int16(wire)  # validates the even length
        return wire

    def from_pcm16(self, samples: bytes) -> bytes:
        """PCM16 at `self.rate` -> wire bytes of this format."""
        if self.type == PCMU:
            return pcm.ulaw_encode(samples)
        if self.type == PCMA:
            return pcm.alaw_encode(samples)
        return samples


def decode_client_audio(fmt: AudioFormat, audio: str, param: str) -> bytes:
    """A client's base64 audio in format `fmt` -> PCM16; raises SessionConfigError (at `param`) if malformed."""
    try:
        return fmt.to_pcm16(pcm.decode_base64_audio(audio))
    except pcm.AudioFormatError as exc:
        raise SessionConfigError("invalid_value", f"Invalid 'audio': {exc}.", param) from exc


@dataclass(frozen=True)
class TurnDetection:
    """The server-VAD parameters in effect (None in the session means manual turns)."""

    threshold: float
    silence_duration_ms: int
    prefix_padding_ms: int
    create_response: bool
    interrupt_response: bool


def default_turn_detection(flavour: Flavour) -> dict[str, Any]:
    # Yandex's own examples use 400 ms of silence; OpenAI documents 500 ms.
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "silence_duration_ms": 400 if flavour == "yandex" else 500,
        "prefix_padding_ms": 300,
        "create_response": True,
        "interrupt_response": True,
        "idle_timeout_ms": None,
    }


def default_session(flavour: Flavour, model: str) -> dict[str, Any]:
    """The effective config a new session starts with (sent whole in `session.created`)."""
    fmt = {"type": PCM, "rate": OPENAI_RATE}
    return {
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful voice assistant (simulated).",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "audio": {
            "input": {
                "format": dict(fmt),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": default_turn_detection(flavour),
            },
            "output": {
                "format": dict(fmt),
                "voice": "alena" if flavour == "yandex" else "marin",
                "speed": 1.0,
            },
        },
    }


def input_format(config: dict[str, Any]) -> AudioFormat:
    return AudioFormat.from_config(config["audio"]["input"]["format"])


def output_format(config: dict[str, Any]) -> AudioFormat:
    return AudioFormat.from_config(config["audio"]["output"]["format"])


def turn_detection(config: dict[str, Any]) -> TurnDetection | None:
    td = config["audio"]["input"]["turn_detection"]
    if td is None:
        return None
    return TurnDetection(
        threshold=float(td["threshold"]),
        silence_duration_ms=int(td["silence_duration_ms"]),
        prefix_padding_ms=int(td["prefix_padding_ms"]),
        create_response=bool(td["create_response"]),
        interrupt_response=bool(td["interrupt_response"]),
    )


def wants_audio(modalities: list[str]) -> bool:
    return "audio" in modalities

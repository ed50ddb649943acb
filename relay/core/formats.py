"""Audio wire formats: what the session's audio is in (`AudioFormat`), read from a session config as the
upstream states it; `DEFAULT_FORMAT` is the API's default (PCM16 at 24 kHz). Pure values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

G711_TYPES: Final = frozenset({"audio/pcmu", "audio/pcma"})  # 8 kHz, one byte per sample


@dataclass(frozen=True)
class AudioFormat:
    """An audio wire format: `audio/pcm` at `rate`, or G.711 (`audio/pcmu`, `audio/pcma`) at 8 kHz."""

    type: str = "audio/pcm"
    rate: int = 24000

    # Derived once: they are read several times per audio frame.
    sample_width: int = field(init=False, repr=False, compare=False)
    bytes_per_second: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        width = 1 if self.type in G711_TYPES else 2
        object.__setattr__(self, "sample_width", width)
        object.__setattr__(self, "bytes_per_second", self.rate * width)

    def ms(self, n_bytes: int) -> float:
        return n_bytes * 1000.0 / self.bytes_per_second if self.bytes_per_second else 0.0

    @classmethod
    def from_config(cls, value: object, default: AudioFormat) -> AudioFormat:
        if not isinstance(value, dict):
            return default
        kind = value.get("type", default.type)
        if not isinstance(kind, str):
            return default
        if kind in G711_TYPES:
            return cls(kind, 8000)
        rate = value.get("rate", default.rate if kind == default.type else 24000)
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            rate = default.rate
        return cls(kind, rate)


DEFAULT_FORMAT: Final = AudioFormat()

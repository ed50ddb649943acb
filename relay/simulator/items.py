"""Conversation items as the simulator keeps them: ids, the stored item with its audio, and the audio archive.

Plain data and the one audio rule shared by everyone who reads item audio back (what a retrieve carries).
The commands that create, retrieve, truncate and delete items live in `conversation`; the order of a
session's items lives in `session_state`. No events are emitted here.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from audio import pcm
from relay.simulator import replies
from relay.simulator.config import AudioFormat


class IdMint:
    """Unique ids: a random per-session token and a counter, e.g. `item_3f9a1c0b000012`."""

    def __init__(self) -> None:
        self._token = secrets.token_hex(4)
        self._n = 0

    def __call__(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._token}{self._n:06d}"


@dataclass
class StoredItem:
    """A conversation item: its wire form (never with audio) and, for audio content, the PCM16 behind it."""

    item: dict[str, Any]
    audio: bytearray | None = None
    fmt: AudioFormat | None = None
    audio_index: int = 0

    def audio_ms(self) -> float:
        if self.audio is None or self.fmt is None:
            return 0.0
        return pcm.duration_ms(len(self.audio), self.fmt.rate)


class AudioArchive:
    """Item audio kept across sessions (bounded), so a test can ask what a retrieve would have answered."""

    def __init__(self, max_items: int = 10_000) -> None:
        self._items: OrderedDict[str, StoredItem] = OrderedDict()
        self._max = max_items

    def put(self, stored: StoredItem) -> None:
        self._items[stored.item["id"]] = stored
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def remove(self, item_id: str) -> None:
        self._items.pop(item_id, None)

    def retrieved_pcm(self, item_id: str) -> tuple[bytes, int] | None:
        stored = self._items.get(item_id)
        return None if stored is None else retrieved_pcm(stored)


def retrieved_wire(stored: StoredItem) -> bytes | None:
    """The audio bytes a retrieve of this item carries: post-processed, in the item's format."""
    if stored.audio is None or stored.fmt is None:
        return None
    return stored.fmt.from_pcm16(replies.post_process(bytes(stored.audio)))


def retrieved_pcm(stored: StoredItem) -> tuple[bytes, int] | None:
    """The PCM16 a client decodes from a retrieve of this item (post-processed; G.711 round-tripped)."""
    wire = retrieved_wire(stored)
    if wire is None or stored.fmt is None:
        return None
    return stored.fmt.to_pcm16(wire), stored.fmt.rate

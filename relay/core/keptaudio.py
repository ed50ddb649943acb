"""The process-wide budget for audio kept as a fallback for saves: pure accounting, no I/O, no clock.

Every session keeps the audio that crossed it (client appends, assistant deltas) until the item it belongs to is
saved, because a retrieve may come back without audio (see docs/client-input.md, "Memory"). Each session bounds
that per item; this object bounds it across all sessions of a process. Each kept piece is a `KeptAudio` that holds
its payload; past the budget the oldest pieces (of any session) lose their payload, and the session that later
needs them sees `released` and reports the audio as lost instead of saving a WAV with holes in it.
"""

from __future__ import annotations

from collections import deque
from typing import Final

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024


class KeptAudio:
    """One kept piece of audio (base64, as it crossed the relay) and its decoded size."""

    __slots__ = ("data", "nbytes", "released")

    def __init__(self, data: str, nbytes: int) -> None:
        self.data: str | None = data
        self.nbytes = nbytes
        self.released = False  # True when the budget took the payload away (not when its owner let it go)


class KeptAudioBudget:
    """At most `max_bytes` of kept audio in the process; oldest released first.

    Sessions call `keep` for each piece and `free` once they no longer need it (item saved, audio trimmed, session
    over). Pieces a session freed stay in the age queue as empty shells until they reach its head or the queue is
    compacted, which happens whenever shells outnumber live pieces: the queue stays within twice the live count.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.kept_bytes = 0
        self.released_bytes = 0  # total ever taken away for the budget (a counter for tests and metrics)
        self._order: deque[KeptAudio] = deque()
        self._live = 0

    def __len__(self) -> int:
        """How many pieces hold audio now."""
        return self._live

    def keep(self, data: str, nbytes: int) -> KeptAudio:
        piece = KeptAudio(data, nbytes)
        self._order.append(piece)
        self._live += 1
        self.kept_bytes += nbytes
        order = self._order
        while self.kept_bytes > self.max_bytes and order:
            oldest = order.popleft()
            if oldest.data is not None:
                self.released_bytes += oldest.nbytes
                self._drop(oldest)
                oldest.released = True
        return piece

    def free(self, piece: KeptAudio) -> None:
        """The owner no longer needs `piece` (a no-op when it was already freed or released)."""
        if piece.data is None:
            return
        self._drop(piece)
        order = self._order
        while order and order[0].data is None:
            order.popleft()
        if len(order) > 2 * self._live + 64:
            self._order = deque(p for p in order if p.data is not None)

    def _drop(self, piece: KeptAudio) -> None:
        piece.data = None
        self.kept_bytes -= piece.nbytes
        self._live -= 1

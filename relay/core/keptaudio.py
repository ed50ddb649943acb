"""The process-wide budget for audio kept as a fallback for saves: pure accounting, no I/O, no clock.

Every session keeps the audio that crossed it (client appends, assistant deltas) until the item it belongs to is
saved, because a retrieve may come back without audio (docs/client-input.md, "Memory"). Each session bounds
that per item; this object bounds it across all sessions of a process. Each kept piece is a `KeptAudio`; past the
budget the oldest pieces (of any session) are released, and the session that later needs them sees `released` and
reports the audio as lost instead of saving a WAV with holes in it.

Where the payload lives is not this module's business: a piece holds its base64 text until a spool (`relay.spool`,
which sets `on_keep` and `read_spooled` for `serve`) moves it to disk. Sessions read payloads through
`payloads`, whichever place they are in; without a spool everything stays in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
# Sessions keep audio in runs of about this many decoded bytes (~170 ms of 24 kHz PCM16), one piece per run: the
# frames of a run wait in a list until it is sealed, so the budget and the spool see a piece per run, not per frame.
RUN_BYTES: Final = 8 * 1024
SEPARATOR: Final = "\n"  # between the base64 texts of one run (never part of valid base64)


class KeptAudio:
    """One kept piece of audio (base64 texts as they crossed the relay, joined by SEPARATOR) and its decoded size.

    `live`: counted in the budget (neither freed by its owner nor released). `released`: its payload is gone while
    its owner may still want it (the budget took it, or the spool could not write it). `data`: the payload while it
    is in memory; once spooled, `spool_file` and `spool_loc` say where (the spool's own handles) and `data` is None.
    """

    __slots__ = ("data", "live", "nbytes", "owner", "released", "spool_file", "spool_loc")

    def __init__(self, data: str, nbytes: int, owner: object = None) -> None:
        self.data: str | None = data
        self.nbytes = nbytes
        self.live = True
        self.released = False
        self.owner = owner  # the spool's handle for the session that kept it (None: never spooled)
        self.spool_file: object = None
        self.spool_loc = 0


class KeptAudioBudget:
    """At most `max_bytes` of kept audio in the process (in memory or spooled); oldest released first.

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
        # Set by a spool: pieces with an owner are handed to it here (queued for its writer); `read_spooled` reads
        # them back.
        self.on_keep: Callable[[KeptAudio], None] | None = None
        self.read_spooled: Callable[[Sequence[KeptAudio]], list[str | None]] | None = None

    def __len__(self) -> int:
        """How many pieces are kept now."""
        return self._live

    def keep(self, data: str, nbytes: int, owner: object = None) -> KeptAudio:
        piece = KeptAudio(data, nbytes, owner)
        self._order.append(piece)
        self._live += 1
        self.kept_bytes += nbytes
        if owner is not None and self.on_keep is not None:
            self.on_keep(piece)
        order = self._order
        while self.kept_bytes > self.max_bytes and order:
            oldest = order.popleft()
            if oldest.live:
                self.released_bytes += oldest.nbytes
                self._drop(oldest)
                oldest.released = True
        return piece

    def free(self, piece: KeptAudio) -> None:
        """The owner no longer needs `piece` (a no-op when it was already freed or released)."""
        if not piece.live:
            return
        self._drop(piece)
        order = self._order
        while order and not order[0].live:
            order.popleft()
        if len(order) > 2 * self._live + 64:
            self._order = deque(p for p in order if p.live)

    def payloads(self, pieces: Sequence[KeptAudio]) -> list[str | None]:
        """The base64 payload of each piece, from memory or the spool; None where it is gone (released, freed, or
        unreadable)."""
        if self.read_spooled is None:
            return [p.data if p.live else None for p in pieces]
        return self.read_spooled(pieces)  # (a spool's writer may move any piece meanwhile: it reads each once)

    def _drop(self, piece: KeptAudio) -> None:
        piece.data = None
        piece.live = False
        self.kept_bytes -= piece.nbytes
        self._live -= 1

"""Writes of one burst go out together: one send(2) for every frame the callbacks of a loop iteration (or of one
upstream read) produced, instead of one each. Used by both sides of the relay; see docs/performance.md. No I/O of
its own beyond `asyncio.Transport.write`.

- `OncePerBurst` runs a call once at the end of a burst however often it is asked for during it.
- `WriteBatch` collects the bytes for a transport the relay writes itself (the client side) and writes them
  together when the burst ends.
- The upstream link holds its burst's frames itself (it bounds their bytes), asks `at_burst_end` for a call, and
  at the end masks them into one buffer and writes that (`relay.links.wsframe.masked_text_frames`).
- A burst ends at the end of the innermost open `WriteScope` (a read callback that knows where its burst ends: the
  upstream link's read), else in the next loop iteration (`call_soon`): a real-time frame then costs no scheduled
  callback and no extra turn of the loop. A call made at the end of a burst may ask for more calls at the end of
  that same burst (the bridge carrying out a read's decisions fills the client's batch): they run in that order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# What waits for the end of the burst inside the innermost open `WriteScope` (event loop thread only), or None
# outside any.
_scope: list[Callable[[], None]] | None = None


def at_burst_end(call: Callable[[], None]) -> None:
    """Call `call()` when the current burst ends."""
    if _scope is not None:
        _scope.append(call)
    else:
        asyncio.get_running_loop().call_soon(call)


class WriteScope:
    """`with WriteScope():` (or `enter()` ... `exit()` around a burst that spans callbacks) ends the burst at its end:
    what was filled inside is written then, in the order it was first filled."""

    __slots__ = ("_outer",)

    def enter(self) -> None:
        global _scope
        self._outer = _scope
        _scope = []

    def exit(self) -> None:
        """Run what waits for the end of the burst, in order. A call that raises does not keep the later ones
        from running (another write, a session's flush); the first error is raised once all have run."""
        global _scope
        error: Exception | None = None
        # A call may ask for more at the end of this burst: a list's iterator also yields what is appended while
        # it runs.
        for call in _scope or ():
            try:
                call()
            except Exception as exc:
                error = error or exc
        _scope = self._outer
        if error is not None:
            raise error

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, *exc: object) -> None:
        self.exit()


class OncePerBurst:
    """`request()` any number of times during a burst: `call` runs once, when the burst ends (a session carrying
    out what the frames of one read decided, once per read)."""

    __slots__ = ("_call", "_due")

    def __init__(self, call: Callable[[], None]) -> None:
        self._call = call
        self._due = False

    def request(self) -> None:
        if not self._due:
            self._due = True
            at_burst_end(self._run)

    def _run(self) -> None:
        self._due = False  # before the call: what the call itself causes may ask again
        self._call()


class WriteBatch:
    """Bytes for `transport`, written in order by `write` (at the end of the burst the first chunk was added in;
    callers that must write something else after them call `write` first)."""

    __slots__ = ("_chunks", "_transport", "size")

    def __init__(self, transport: asyncio.Transport | None) -> None:
        self._transport = transport
        self._chunks: list[bytes] = []
        self.size = 0  # bytes collected and not written yet

    def add(self, data: bytes) -> None:
        chunks = self._chunks
        chunks.append(data)
        self.size += len(data)
        if len(chunks) == 1:
            at_burst_end(self.write)

    def write(self) -> None:
        chunks = self._chunks
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.size = 0
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def clear(self) -> None:
        """Forget what was collected (the connection is being aborted)."""
        self._chunks.clear()
        self.size = 0

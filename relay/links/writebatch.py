"""Writes to one transport collected during a loop iteration and written together right after it: one send(2) for
every frame the callbacks of that iteration produced (a burst of client messages, or an upstream read carrying
several events), instead of one each. Used by both sides of the relay; see docs/performance.md. No I/O of its own
beyond `asyncio.Transport.write`.

Inside a read callback that knows where its burst ends (the upstream link's `data_received`), a `WriteScope`
collects the batches its frames filled and writes them when the callback returns, instead of one loop iteration
later: a real-time frame then costs no scheduled callback and no extra turn of the loop.
"""

from __future__ import annotations

import asyncio

# The batches filled inside the innermost open `WriteScope` (event loop thread only), or None outside any.
_scope: list[WriteBatch] | None = None


class WriteScope:
    """`with WriteScope():` batches filled inside are written at its end, in the order they were first filled."""

    __slots__ = ("_outer",)

    def __enter__(self) -> None:
        global _scope
        self._outer = _scope
        _scope = []

    def __exit__(self, *exc: object) -> None:
        global _scope
        batches, _scope = _scope, self._outer
        for batch in batches or ():
            batch.write()


class WriteBatch:
    """Bytes for `transport`, written in order by `write` (scheduled with `call_soon` when the first chunk is added;
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
            if _scope is not None:
                _scope.append(self)
            else:
                asyncio.get_running_loop().call_soon(self.write)

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

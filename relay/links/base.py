"""What the bridge sees of the two links: the client side as a small protocol, the upstream as a place to connect.

Boundary: types only, no I/O. The links (`relay.links.client`, `relay.links.upstream`) and the local audio client
(`relay.mic`) implement or fill these; the bridge (`relay.bridge`) consumes them and `relay.wiring` builds the
upstream target from settings. Nothing here imports the bridge, so the links never depend on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 us, and there is one per client frame
class ClientFrame:
    """What the client side produced: a text frame, a binary frame (its size), or the end (close code)."""

    text: str | None = None
    binary_size: int | None = None
    closed: bool = False
    close_code: int | None = None


class ClientSide(Protocol):
    """The client half of a session: a WebSocket for `serve`, the local audio loop for `mic`."""

    async def receive(self) -> ClientFrame:
        """The next frame, or the end: one read that can be cancelled (the bridge reads so while the upstream
        handshake runs)."""
        ...

    async def read(self, on_text: Callable[[str], None], on_binary: Callable[[int], None]) -> ClientFrame:
        """Read to the end: each text frame to `on_text` and each binary frame's size to `on_binary`, in order, as
        they are read; returns the end (`closed`). The session's steady state: no object or task per frame."""
        ...

    def send(self, text: str) -> bool:
        """Queue a frame without waiting; False when the client's backlog is over its bound (too slow)."""
        ...

    async def close(self, code: int, reason: str, *, grace: float) -> int | None:
        """Send what is queued (within `grace` seconds), then close with `code`; returns the close code used.

        Must finish in bounded time: a close handshake the peer does not complete within 5 s aborts the
        connection (docs/lifecycle.md)."""
        ...

    def abort(self) -> None: ...


async def read_by_receive(
    receive: Callable[[], Awaitable[ClientFrame]], on_text: Callable[[str], None], on_binary: Callable[[int], None]
) -> ClientFrame:
    """`ClientSide.read` for a side whose frames come one `receive` at a time (the local audio loop)."""
    while True:
        frame = await receive()
        if frame.closed:
            return frame
        dispatch_frame(frame, on_text, on_binary)


def dispatch_frame(frame: ClientFrame, on_text: Callable[[str], None], on_binary: Callable[[int], None]) -> None:
    """A data frame to the callback `ClientSide.read` would have handed it to."""
    if frame.text is not None:
        on_text(frame.text)
    elif frame.binary_size is not None:
        on_binary(frame.binary_size)


@dataclass(frozen=True)
class UpstreamTarget:
    """Where the upstream link connects: the URL (model and forwarded query included), the authorization
    headers, and how long the handshake may take."""

    url: str
    headers: Mapping[str, str]
    connect_timeout: float

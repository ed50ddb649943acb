"""What the bridge sees of the two links: the client side as a small protocol, the upstream as a place to connect.

Boundary: types only, no I/O. The links (`relay.links.client`, `relay.links.upstream`) and the local audio client
(`relay.mic`) implement or fill these; the bridge (`relay.bridge`) consumes them and `relay.wiring` builds the
upstream target from settings. Nothing here imports the bridge, so the links never depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
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

    async def receive(self) -> ClientFrame: ...

    def send(self, text: str) -> bool:
        """Queue a frame without waiting; False when the client's backlog is over its bound (too slow)."""
        ...

    async def close(self, code: int, reason: str, *, grace: float) -> int | None:
        """Send what is queued (within `grace` seconds), then close with `code`; returns the close code used.

        Must finish in bounded time: a close handshake the peer does not complete within 5 s aborts the
        connection (docs/lifecycle.md)."""
        ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class UpstreamTarget:
    """Where the upstream link connects: the URL (model and forwarded query included), the authorization
    headers, and how long the handshake may take."""

    url: str
    headers: Mapping[str, str]
    connect_timeout: float

"""What one `serve` app holds while it runs: `RelayState`, kept on the app under the one `web.AppKey` `STATE`.

Boundary: plain data and the bookkeeping of live sessions (the set of bridges, the event that is set whenever it is
empty, live sessions per minted token). No routes and no I/O; every handler and the factory read it from here.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from relay.bridge import SessionBridge
from relay.core.keptaudio import KeptAudioBudget
from relay.core.toolset import ToolSet
from relay.eventlog.writer import EventLog
from relay.metrics import RelayMetrics
from relay.outcome import EndReason
from relay.server import access
from relay.server.auth import TokenAuthority
from relay.server.heap import HeapTrimmer, find_malloc_trim
from relay.settings import Settings
from relay.spool import AudioSpool

if TYPE_CHECKING:
    from relay.simulator import SimulatorOptions


@dataclass
class RelayState:
    settings: Settings
    authority: TokenAuthority
    event_log: EventLog
    metrics: RelayMetrics
    upstream_base: str
    rest_base: str
    draining: bool = False
    bridges: set[SessionBridge] = field(default_factory=set)
    sockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)
    http: aiohttp.ClientSession | None = None
    simulator: Any = None
    simulator_options: SimulatorOptions | None = None  # set when the upstream is the embedded simulator
    owns_event_log: bool = False
    # Live sessions per minted token (by hash), for token_max_sessions.
    token_sessions: Counter[str] = field(default_factory=Counter)
    proxies: tuple[access.Network, ...] = ()
    tools: ToolSet | None = None  # the server tools, loaded once at start (docs/tools.md)
    # Set whenever `bridges` is empty, so shutdown waits on it instead of polling.
    no_sessions: asyncio.Event = field(default_factory=asyncio.Event)
    # Audio kept for fallback saves, one budget for every session of the process (see docs/client-input.md).
    kept_audio: KeptAudioBudget = field(default_factory=KeptAudioBudget)
    # ... held on disk, not in memory (docs/client-input.md, "Memory"): made for `kept_audio` when not given.
    spool: AudioSpool | None = None
    heap: HeapTrimmer = field(default_factory=lambda: HeapTrimmer(find_malloc_trim()))  # free memory back to the OS

    def __post_init__(self) -> None:
        if not self.bridges:
            self.no_sessions.set()
        self.kept_audio.max_bytes = self.settings.kept_audio_max_bytes
        if self.spool is None:
            self.spool = AudioSpool(self.kept_audio)

    def add_bridge(self, bridge: SessionBridge) -> None:
        self.bridges.add(bridge)
        self.no_sessions.clear()

    def live_sessions(self) -> int:
        return live_sessions(self.bridges)

    def discard_bridge(self, bridge: SessionBridge) -> None:
        self.bridges.discard(bridge)
        if not self.bridges:
            self.no_sessions.set()

    def stop_sessions(self) -> None:
        """Ask every live session to close now with 1001 (the drain's end, a second signal, the app's cleanup)."""
        for bridge in list(self.bridges):
            bridge.request_stop(EndReason.DRAIN)

    @property
    def auth_required(self) -> bool:
        return self.authority.auth_enabled


STATE: web.AppKey[RelayState] = web.AppKey("relay_state", RelayState)


def live_sessions(bridges: Iterable[SessionBridge]) -> int:
    """Sessions not over yet (one whose last records are still being written no longer counts)."""
    return sum(1 for bridge in bridges if not bridge.ended)

"""The relay's code uses aiohttp and picows (and websockets, had it come back) through their public, documented APIs
only: no private attribute (`ws._req`, `aiohttp._*`, `picows._*`), no undocumented module (`picows.picows`,
`websockets.utils`, `websockets.speedups`, `websockets.legacy`), no subclass of a library's connection classes
(their overridable methods are not an API; picows' `WSListener` is the one class its documentation says to
subclass). A minor release of any of them may change those; see docs/performance.md for the public ways the data
plane uses instead.

The check reads every source file under relay/ and fails on the first forbidden use, naming file and line; it is
itself checked against snippets that must be caught and ones that must not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parents[2] / "relay"

FORBIDDEN: dict[str, re.Pattern[str]] = {
    "aiohttp's private request handle": re.compile(r"\._req\b"),
    # A library object's private attribute, by the names the relay gives those objects (its own `self._x` are fine).
    "a private attribute of an aiohttp or websockets object": re.compile(
        r"\b(?:ws|websocket|request|req|response|resp|session|connection|protocol|transport)\._[a-z]\w*"
    ),
    "a private aiohttp module or name": re.compile(r"\baiohttp\._|from\s+aiohttp(?:\.\w+)*\s+import\s+[^\n]*\b_\w+"),
    "websockets.utils": re.compile(r"\bwebsockets\.utils\b"),
    "websockets.speedups": re.compile(r"\bwebsockets\.speedups\b"),
    "websockets.legacy": re.compile(r"\bwebsockets\.legacy\b"),
    "a private websockets name": re.compile(r"from\s+websockets(?:\.\w+)*\s+import\s+[^\n]*\b_\w+|\bwebsockets(?:\.\w+)*\._\w+"),
    "a private or undocumented picows name": re.compile(
        r"from\s+picows(?:\.\w+)*\s+import\s+[^\n]*\b_\w+|\bpicows(?:\.\w+)*\._\w+|\bpicows\.(?:picows|api|common|proxy)\b"
    ),
    "a subclass of a library connection class": re.compile(
        r"^\s*class\s+\w+\s*\([^)]*\b(?:ClientConnection|ServerConnection|WebSocketWriter|WebSocketReader|"
        r"WebSocketResponse|ClientWebSocketResponse|WebSocketCommonProtocol|Connection|WSTransport|WSProtocol|WSFrame)\b",
        re.MULTILINE,
    ),
}


# Known exceptions, each with why it has no public alternative yet. None today: keep it that way.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def violations(source: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for what, pattern in FORBIDDEN.items():
        for match in pattern.finditer(source):
            found.append((source.count("\n", 0, match.start()) + 1, what))
    return sorted(found)


def test_nothing_under_relay_uses_a_private_or_undocumented_part_of_aiohttp_or_websockets() -> None:
    files = sorted(RELAY.rglob("*.py"))
    assert files, "relay/ has Python sources"
    found = []
    for path in files:
        name = str(path.relative_to(RELAY.parent))
        lines = path.read_text().splitlines()
        for line, what in violations(path.read_text()):
            if (name, lines[line - 1].strip()) not in ALLOWED:
                found.append(f"{name}:{line}: {what}")
    assert found == []


@pytest.mark.parametrize(
    "snippet",
    [
        "transport = ws._req.transport",
        "transport = self.ws._req.transport if self.ws._req else None",
        "from websockets.utils import apply_mask",
        "from websockets.speedups import apply_mask",
        "import websockets.speedups",
        "from websockets.legacy.client import connect",
        "from aiohttp._websocket.writer import WebSocketWriter",
        "import aiohttp._http_parser",
        "from aiohttp.http_websocket import _xor_table",
        "class Fast(ClientConnection):\n    pass",
        "class Fast(websockets.asyncio.client.ClientConnection):\n    pass",
        "class W(web.WebSocketResponse):\n    pass",
        "size = ws._writer.transport.get_write_buffer_size()",
        "from picows.picows import WSProtocol",
        "from picows import _make_test_ws_frame",
        "import picows.api",
        "picows._internal = 1",
        "class Fast(WSTransport):\n    pass",
        "class Fast(picows.WSProtocol):\n    pass",
    ],
)
def test_the_check_catches_each_kind_of_forbidden_use(snippet: str) -> None:
    assert violations(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        "from websockets.client import ClientProtocol",
        "from websockets.frames import Close, CloseCode, Frame, Opcode",
        "from picows import WSListener, WSMsgType, WSTransport, ws_connect",
        "class _Listener(WSListener):\n    pass",
        "transport.underlying_transport.get_write_buffer_size()",
        "transport = request.transport",
        "await ws.send_str(text)",
        "class _LinkProtocol(asyncio.Protocol):\n    pass",
        "self._parts = []\nself._text = False",
        "",
        "\x00\xff garbage ._ ._re class (",
    ],
)
def test_the_check_leaves_public_uses_and_own_private_names_alone(snippet: str) -> None:
    assert violations(snippet) == []

"""`UpstreamLink.connect` fed URLs that are not WebSocket URLs, or headers that cannot go on the wire: each is
`UpstreamUnavailable` (no HTTP status) before any socket is opened, never another exception."""

from __future__ import annotations

import pytest

from relay.errors import UpstreamUnavailable
from relay.links.upstream import UpstreamLink


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:1/v1/realtime", "", "not a url", "ws://", "ws://[::1/x", "wss://h:99999/x", "ws://\x00\xff/", "ftp://x/"],
)
async def test_a_url_that_is_not_a_websocket_url_is_upstream_unavailable(url: str) -> None:
    with pytest.raises(UpstreamUnavailable) as caught:
        await UpstreamLink.connect(url, {}, open_timeout=1.0, backlog_limit=1 << 20)
    assert caught.value.status is None


@pytest.mark.parametrize("headers", [{"Authorization": "Api-Key a\r\nX-Injected: 1"}, {"X-Bad\n": "v"}, {"X": "\x00"}])
async def test_a_header_that_cannot_go_on_the_wire_is_upstream_unavailable(headers: dict[str, str]) -> None:
    with pytest.raises(UpstreamUnavailable):
        await UpstreamLink.connect("ws://127.0.0.1:1/v1/realtime", headers, open_timeout=1.0, backlog_limit=1 << 20)

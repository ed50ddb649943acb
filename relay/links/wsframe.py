"""RFC 6455 text frames for the relay's direct-write path to a client (`relay.links.client`). Pure: bytes in, bytes out.
Only final, unfragmented, unmasked text frames are built (a server's frames are never masked, and no extension is
negotiated with clients); aiohttp still does every other frame (control frames, the close handshake) and all
reading.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying `payload`, with the shortest length encoding."""
    size = len(payload)
    if size < 126:
        header = bytes((_FIN_TEXT, size))
    elif size < 65536:
        header = struct.pack("!BBH", _FIN_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, size)
    return header + payload

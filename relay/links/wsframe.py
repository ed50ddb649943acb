"""RFC 6455 text frames for the relay's two direct-write paths: unmasked to a client (`relay.links.client`), masked to
the upstream (`relay.links.upstream`). Pure: bytes in, bytes out. Only final, unfragmented text frames are built; the
libraries (aiohttp, websockets) still do every other frame (control frames, the close handshake) and all reading.
"""

from __future__ import annotations

import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a websockets build without its C extension
    from websockets.utils import apply_mask

_FIN_TEXT = 0x81
_MASK_BIT = 0x80


def text_frame(payload: bytes, mask: bytes | None = None) -> bytes:
    """One final text frame carrying `payload`, with the shortest length encoding; masked with the 4-byte `mask`
    when given (a client's frames must be, RFC 6455 5.3), unmasked otherwise (a server's must not be)."""
    size = len(payload)
    mask_bit = _MASK_BIT if mask is not None else 0
    if size < 126:
        header = bytes((_FIN_TEXT, mask_bit | size))
    elif size < 65536:
        header = struct.pack("!BBH", _FIN_TEXT, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, mask_bit | 127, size)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)

"""RFC 6455 text frames the relay writes itself. Pure: bytes in, bytes out.

- `text_frame`: a server's frame for the client side's direct-write path (`relay.links.client`): final,
  unfragmented, unmasked (a server's frames are never masked, and no extension is negotiated with clients); aiohttp
  still does every other frame (control frames, the close handshake) and all reading.
- `masked_text_frames`: a burst of a client's frames for the upstream link (`relay.links.upstream`), each masked
  with its own key, back to back in one bytes object so the burst leaves in one write; picows still does every
  other frame and all reading. In native code when it was built (`_wsframes.c`, the same bytes; docs/performance.md,
  "The twelfth round"), else in Python here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

_FIN_TEXT = 0x81
_MASKED = 0x80

native_masked_text_frames: Callable[[list[bytes], bytes], bytes] | None
try:
    from relay.links._wsframes import masked_text_frames as native_masked_text_frames
except ImportError:
    native_masked_text_frames = None


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying `payload`, with the shortest length encoding."""
    return _header(len(payload), 0) + payload


def masked_text_frames(payloads: list[bytes], keys: bytes) -> bytes:
    """Final text frames carrying `payloads`, payload i masked with `keys[4*i:4*i+4]` (4 random bytes per frame:
    RFC 6455 asks a client for an unpredictable key per frame), back to back. ValueError when `keys` is not 4 bytes
    per payload, TypeError when a payload is not bytes."""
    if native_masked_text_frames is not None:
        return native_masked_text_frames(payloads, keys)
    return masked_text_frames_python(payloads, keys)


def masked_text_frames_python(payloads: list[bytes], keys: bytes) -> bytes:
    """`masked_text_frames` without native code: the XOR as one big-integer operation per frame."""
    if len(keys) != 4 * len(payloads):
        raise ValueError(f"{len(payloads)} payloads need {4 * len(payloads)} key bytes, got {len(keys)}")
    out: list[bytes] = []
    for index, payload in enumerate(payloads):
        if type(payload) is not bytes:
            raise TypeError(f"payload {index} is {type(payload).__name__}, not bytes")
        key = bytes(keys[4 * index : 4 * index + 4])
        size = len(payload)
        repeated = (key * (size // 4 + 1))[:size]
        out += (_header(size, _MASKED), key)
        out.append((int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big"))
    return b"".join(out)


def _header(size: int, mask_bit: int) -> bytes:
    """The first bytes of a final text frame of `size` payload bytes, with the shortest length encoding."""
    if size < 126:
        return bytes((_FIN_TEXT, mask_bit | size))
    if size < 65536:
        return struct.pack("!BBH", _FIN_TEXT, mask_bit | 126, size)
    return struct.pack("!BBQ", _FIN_TEXT, mask_bit | 127, size)

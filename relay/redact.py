"""Secret redaction for everything the relay writes to its own output (see docs/security.md). Pure, no I/O.

`redact_text` masks what looks like a credential in any text: `Authorization`-style header values (raw bytes,
reprs and dicts alike), `Bearer`/`Api-Key` values, the browser subprotocol `openai-insecure-api-key.<token>`, the
relay's own minted tokens, URL userinfo and the values of secret-looking query parameters, plus every exact value
registered with `register_secret` (static client tokens, the token secret) and the upstream credentials last read
(`register_credentials`: the current and the previous values, so a rotated key is still masked in the lines of
sessions that used it, while the list does not grow with every rotation). `RedactingFormatter` applies it to the
final text of every log record (structlog's and the stdlib loggers' of aiohttp, picows and asyncio alike,
tracebacks included), so nothing a library decides to log can carry a token past it. `printable` makes text
from events (which any upstream or client may have written) safe for a terminal: control characters, which could
move the cursor, rewrite lines or retitle the window, are shown as visible `\\uXXXX` escapes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, Final

MASK: Final = "****"

# A token's characters as any rendering writes them: plain, or a repr's `\xNN`/`\uNNNN` escape of a byte that
# does not belong there (a garbled header keeps going after it). It stops at quotes, whitespace, commas,
# semicolons and the escapes of CR/LF/tab, which end a header line.
_TOKEN: Final = r"(?:[^\s'\",\\;]|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4})"
# Header names whose values are credentials, in any rendering: `Authorization: Bearer x`, `'authorization': 'x'`,
# `b"Authorization: Api-Key x\r\n"`, `"Cookie": "a=b"`. The value runs to the end of the token. The command-line
# flag `--api-key` followed by a colon is the flag named in an error message ("from flag --api-key: is not..."),
# not a header: its message stays whole (`--api-key=K` is still masked).
_HEADER_RE: Final = re.compile(
    r"(?i)((?:proxy-)?authorization|cookie|set-cookie|x-api-key|(?<!--)api-key|api-key(?=['\"]?\s*=))"
    r"(['\"]?\s*[:=]\s*(?:b(?=['\"]))?['\"]?)"
    r"(?:(bearer|api-key|basic|token)\s+)?"
    rf"({_TOKEN}+)"
)
# A credential scheme followed by its value anywhere else (error messages, tracebacks).
_SCHEME_RE: Final = re.compile(rf"(?i)\b(bearer|api-key)(\s+)({_TOKEN}{{4,}})")
# The browser's token subprotocol, whole or inside a list of offered protocols.
_SUBPROTOCOL_RE: Final = re.compile(rf"(?i)(openai-insecure-api-key\.)({_TOKEN}+)")
# The relay's own minted tokens (see relay.server.auth): `ek_rt<version>.` (or, from older replicas, `rt<version>.`)
# followed by dotted base64url parts.
_MINTED_RE: Final = re.compile(r"\b(?:ek_)?rt[0-9]\.[0-9]{1,12}\.[A-Za-z0-9_.-]{8,}")
# userinfo in any URL: scheme://user:password@host -> scheme://****@host
_USERINFO_RE: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s@'\"]+)@")
# Query parameters whose names say they hold a credential.
_SECRET_NAME: Final = r"[A-Za-z0-9_.\-\[\]]*(?:key|token|secret|pass|pwd|auth|sig|credential|session_id|code)[A-Za-z0-9_.\-\[\]]*"
_QUERY_RE: Final = re.compile(rf"(?i)([?&;]{_SECRET_NAME}=)([^&#\s'\"\\]+)")

_known_lock = threading.Lock()
_registered: frozenset[str] = frozenset()
_credentials: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())  # (current, previous)
_known: tuple[str, ...] = ()


def _spellings(values: tuple[str | None, ...]) -> frozenset[str]:
    fresh = {v for v in values if v and len(v) >= 4}
    # JSON renderers escape some characters: mask the escaped spelling as well.
    return frozenset(fresh | {json.dumps(v)[1:-1] for v in fresh})


def _rebuild() -> None:
    """Longest first, so a value that contains another is masked whole. Called with the lock held."""
    global _known
    _known = tuple(sorted(_registered | _credentials[0] | _credentials[1], key=len, reverse=True))


def register_secret(*values: str | None) -> None:
    """Mask these exact values wherever they appear in output from now on (values shorter than 4 are ignored)."""
    global _registered
    fresh = _spellings(values)
    if not fresh:
        return
    with _known_lock:
        _registered |= fresh
        _rebuild()


def register_credentials(*values: str | None) -> None:
    """Mask the upstream credentials just read (and, until the next read, the ones read before them)."""
    global _credentials
    fresh = _spellings(values)
    with _known_lock:
        if fresh == _credentials[0]:
            return
        _credentials = (fresh, _credentials[0])
        _rebuild()


def forget_secrets() -> None:
    """Drop every registered value (a new configuration replaces the old one)."""
    global _registered, _credentials
    with _known_lock:
        _registered = frozenset()
        _credentials = (frozenset(), frozenset())
        _rebuild()


def redact_text(text: str) -> str:
    """`text` with every credential-looking part replaced by ****."""
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    text = _SUBPROTOCOL_RE.sub(lambda m: m.group(1) + MASK, text)
    text = _HEADER_RE.sub(lambda m: m.group(1) + m.group(2) + (m.group(3) + " " if m.group(3) else "") + MASK, text)
    text = _SCHEME_RE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = _MINTED_RE.sub(MASK, text)
    text = _USERINFO_RE.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _QUERY_RE.sub(lambda m: m.group(1) + MASK, text)
    return text


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """`value` (JSON-like data) with `fn` applied to every string in it, keys included; containers are copied."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {map_strings(k, fn): map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_strings(v, fn) for v in value]
    return value


def redact_data(value: Any) -> Any:
    """`value` (JSON-like data) with `redact_text` applied to every string in it."""
    return map_strings(value, redact_text)


class RedactingFormatter(logging.Formatter):
    """Wraps the handler's real formatter and redacts the finished text, tracebacks and all."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))


# ASCII controls but tab and newline, DEL, the 0x80-0x9f controls (0x9b is a one-byte CSI), and bidi overrides that reorder text.
_CONTROL_RE: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every terminal control character replaced by a visible `\\uXXXX` (valid inside JSON strings too)."""
    return _CONTROL_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def printable_data(value: Any) -> Any:
    """`value` (JSON-like data) with `printable` applied to every string in it, keys included."""
    return map_strings(value, printable)

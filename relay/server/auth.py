"""Client authentication (CONTRACT C4): static tokens and short-lived HMAC-signed tokens. Pure, no I/O.

Ephemeral token format: `rt1.<expires_at>.<nonce>.<signature>` where signature = base64url(HMAC-SHA256(secret,
"rt1.<expires_at>.<nonce>")). Any replica that holds the same secret verifies it; nothing is stored. Static
tokens are compared in constant time. Tokens are read from `Authorization: Bearer|Api-Key <t>` or the browser
subprotocol `openai-insecure-api-key.<t>`, never from the query string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from relay.settings import Secret

TOKEN_PREFIX: Final = "rt1"
SUBPROTOCOL_TOKEN_PREFIX: Final = "openai-insecure-api-key."
MIN_TTL_SECONDS: Final = 10
MAX_TTL_SECONDS: Final = 7200
_EPHEMERAL_RE: Final = re.compile(r"rt1\.([0-9]{1,12})\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{43})")


def _token_bytes(token: str) -> bytes:
    # Header values may carry any byte (aiohttp decodes them with surrogateescape); never fail on them.
    return token.encode("utf-8", "surrogateescape")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class MintedToken:
    value: str
    expires_at: int


class TokenAuthority:
    """Verifies static and ephemeral tokens; mints ephemeral ones."""

    def __init__(self, static_tokens: Iterable[Secret], secret: bytes, *, default_ttl: int = 600) -> None:
        self._static = [t.reveal().encode() for t in static_tokens if t.reveal()]
        self._secret = secret
        self.default_ttl = default_ttl

    @staticmethod
    def random_secret() -> bytes:
        return secrets.token_bytes(32)

    @property
    def auth_enabled(self) -> bool:
        return bool(self._static)

    def is_static(self, token: str) -> bool:
        candidate = _token_bytes(token)
        found = False
        for known in self._static:
            # Compare against every token so timing does not tell which (or whether one) matched.
            found |= hmac.compare_digest(candidate, known)
        return found

    def _sign(self, payload: str) -> str:
        return _b64url(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def mint(self, ttl: int | None = None, *, now: float | None = None) -> MintedToken:
        ttl = self.default_ttl if ttl is None else ttl
        if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
            raise ValueError(f"expires_after.seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}")
        expires_at = int((time.time() if now is None else now) + ttl)
        payload = f"{TOKEN_PREFIX}.{expires_at}.{secrets.token_urlsafe(12)}"
        return MintedToken(f"{payload}.{self._sign(payload)}", expires_at)

    def is_valid_ephemeral(self, token: str, *, now: float | None = None) -> bool:
        match = _EPHEMERAL_RE.fullmatch(token)
        if match is None:
            return False
        expires_at, nonce, signature = match.groups()
        payload = f"{TOKEN_PREFIX}.{expires_at}.{nonce}"
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return False
        return int(expires_at) > (time.time() if now is None else now)

    def verify(self, token: str | None, *, now: float | None = None) -> bool:
        if not token:
            return False
        return self.is_static(token) or self.is_valid_ephemeral(token, now=now)


def token_from_request(headers: Mapping[str, str], offered_protocols: Iterable[str]) -> str | None:
    """The client's token from Authorization (Bearer or Api-Key) or the browser subprotocol."""
    header = headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "api-key") and value.strip():
        return value.strip()
    for protocol in offered_protocols:
        protocol = protocol.strip()
        if protocol.startswith(SUBPROTOCOL_TOKEN_PREFIX) and len(protocol) > len(SUBPROTOCOL_TOKEN_PREFIX):
            return protocol[len(SUBPROTOCOL_TOKEN_PREFIX) :]
    return None

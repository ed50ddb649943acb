"""Client authentication: static tokens and short-lived HMAC-signed tokens (see docs/security.md). Pure, no I/O.

Ephemeral token format: `ek_rt1.<expires_at>.<nonce>.<signature>` where signature = base64url(HMAC-SHA256(secret,
"rt1.<expires_at>.<nonce>")), or, when the token pins a session, `ek_rt2.<expires_at>.<nonce>.<session>.<signature>`
where `<session>` is the base64url of the zlib-compressed JSON session object, covered by the signature. The
`ek_` prefix is the one OpenAI's client secrets carry, by which client libraries tell an ephemeral key from an
account key (the `openai` JavaScript SDK allows only those in a browser); it is not signed, and a token minted
without it (by an older replica during a rolling upgrade) still verifies. Any
replica that holds the same secret verifies it; nothing is stored. A minted token is scoped (`Grant.minted`):
it opens realtime sessions but is no operator credential. Expiry is checked against now + the maximum TTL too,
so a token minted with a longer life elsewhere is refused. Static tokens are compared in constant time. Tokens
are read from `Authorization: Bearer|Api-Key <t>` or the browser subprotocol `openai-insecure-api-key.<t>`, never
from the query string.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from relay.settings import Secret

TOKEN_PREFIX: Final = "rt1"
SUBPROTOCOL_TOKEN_PREFIX: Final = "openai-insecure-api-key."
MIN_TTL_SECONDS: Final = 10
MAX_TTL_SECONDS: Final = 7200
MIN_SECRET_BYTES: Final = 32
MAX_TOKEN_BYTES: Final = 6 * 1024
PINNED_TOKEN_PREFIX: Final = "rt2"
EPHEMERAL_KEY_PREFIX: Final = "ek_"
_EPHEMERAL_RE: Final = re.compile(r"(?:ek_)?rt1\.([0-9]{1,12})\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{43})")
_PINNED_RE: Final = re.compile(
    r"(?:ek_)?rt2\.([0-9]{1,12})\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,8192})\.([A-Za-z0-9_-]{43})"
)
# A pinned session inflates to at most this much: a forged or hostile token cannot make a replica allocate more.
_MAX_SESSION_JSON_BYTES: Final = 256 * 1024


def _token_bytes(token: str) -> bytes:
    # Header values may carry any byte (aiohttp decodes them with surrogateescape); never fail on them.
    return token.encode("utf-8", "surrogateescape")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class MintedToken:
    value: str
    expires_at: int


class TokenTooLarge(ValueError):
    """The minted token would exceed MAX_TOKEN_BYTES (its pinned session is too big)."""


@dataclass(frozen=True)
class Grant:
    """Who a verified token is: `minted` tokens are scoped to realtime sessions; `session` is their pinned one."""

    token: str
    minted: bool
    session: dict[str, Any] = field(default_factory=dict)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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

    def mint(
        self, ttl: int | None = None, *, session: Mapping[str, Any] | None = None, now: float | None = None
    ) -> MintedToken:
        """A token living `ttl` seconds; a non-empty `session` is pinned inside it. TokenTooLarge past 6 KiB."""
        ttl = self.default_ttl if ttl is None else ttl
        if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
            raise ValueError(f"expires_after.seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}")
        expires_at = int((time.time() if now is None else now) + ttl)
        nonce = secrets.token_urlsafe(12)
        if session:
            packed = _b64url(zlib.compress(orjson.dumps(dict(session)), 9))
            payload = f"{PINNED_TOKEN_PREFIX}.{expires_at}.{nonce}.{packed}"
        else:
            payload = f"{TOKEN_PREFIX}.{expires_at}.{nonce}"
        value = f"{EPHEMERAL_KEY_PREFIX}{payload}.{self._sign(payload)}"
        if len(value) > MAX_TOKEN_BYTES:
            raise TokenTooLarge(
                f"the token would be {len(value)} bytes, over the {MAX_TOKEN_BYTES}-byte limit: pin a smaller session"
            )
        return MintedToken(value, expires_at)

    def _fresh(self, expires_at: str, now: float | None, *, expired_ok: bool) -> bool:
        moment = time.time() if now is None else now
        # A token claiming a life longer than any this relay mints is refused, however well signed.
        return (expired_ok or moment < int(expires_at)) and int(expires_at) <= moment + MAX_TTL_SECONDS

    def minted_grant(self, token: str, *, now: float | None = None, expired_ok: bool = False) -> Grant | None:
        """The grant of a valid, unexpired minted token, else None. `expired_ok` also admits one whose expiry has
        passed (its signature still checked): for the files of the sessions it opened while they run."""
        if len(token) > MAX_TOKEN_BYTES:
            return None
        match = _EPHEMERAL_RE.fullmatch(token)
        if match is not None:
            expires_at, nonce, signature = match.groups()
            payload = f"{TOKEN_PREFIX}.{expires_at}.{nonce}"
            session: dict[str, Any] = {}
        else:
            match = _PINNED_RE.fullmatch(token)
            if match is None:
                return None
            expires_at, nonce, packed, signature = match.groups()
            payload = f"{PINNED_TOKEN_PREFIX}.{expires_at}.{nonce}.{packed}"
            session = {}
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return None
        if not self._fresh(expires_at, now, expired_ok=expired_ok):
            return None
        if payload.startswith(PINNED_TOKEN_PREFIX + "."):
            try:
                inflater = zlib.decompressobj()
                raw = inflater.decompress(_b64url_decode(packed), _MAX_SESSION_JSON_BYTES)
                decoded = orjson.loads(raw) if not inflater.unconsumed_tail else None
            except (zlib.error, binascii.Error, orjson.JSONDecodeError, ValueError):
                return None
            if not isinstance(decoded, dict):
                return None
            session = decoded
        return Grant(token, minted=True, session=session)

    def is_valid_ephemeral(self, token: str, *, now: float | None = None) -> bool:
        return self.minted_grant(token, now=now) is not None

    def grant(self, token: str | None, *, now: float | None = None) -> Grant | None:
        """Who `token` is (static or minted), or None for a missing, unknown, expired or tampered one."""
        if not token:
            return None
        if self.is_static(token):
            return Grant(token, minted=False)
        return self.minted_grant(token, now=now)

    def verify(self, token: str | None, *, now: float | None = None) -> bool:
        return self.grant(token, now=now) is not None


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

"""Who may talk to `serve`, beyond tokens (see docs/security.md). Request checks only; the one I/O is the small
opener file of a session folder (`record_session_opener` / `session_opener_matches`).

- With auth off (a loopback bind and no client tokens) only requests whose `Host` is a loopback name are served,
  and a present `Origin` must be `http://` (`https://` with TLS) + that Host or listed in `allowed_origins`: no website
  can drive a local daemon through the visitor's browser, by cross-site WebSocket or by DNS rebinding.
- `client_address` names the client: the socket peer, or the last `X-Forwarded-For` hop that is not one of the
  proxies listed in `forwarded_allow_ips`.
- A session folder records a hash of the token that opened the session, so per-session files (saved audio,
  recordings) stay readable with that token on any replica that shares `data_dir`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from relay.server.replies import openai_error

log = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPENER_FILE: Final = ".opener"
LOOPBACK_NAMES: Final = frozenset({"localhost"})


def host_name(host_header: str) -> str:
    """The name part of a Host header (`[::1]:8080` -> `::1`, `Localhost:80` -> `localhost`)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1 :] and not _is_port(host[end + 1 :])):
            return ""
        return host[1:end]
    name, sep, port = host.rpartition(":")
    if sep and _is_port(":" + port) and ":" not in name:
        return name
    return host if ":" not in host else ""


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isascii() and text[1:].isdigit() and len(text) <= 6


def is_loopback_host(host_header: str | None) -> bool:
    """`127.0.0.1`, any 127/8 address, `localhost` or `[::1]`, with any port."""
    if not host_header:
        return False
    return is_loopback(host_name(host_header))


def is_loopback(host: str) -> bool:
    """A loopback name or address as written, with no port: `localhost`, any 127/8 address, `::1`."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_own_origin(origin: str, host_header: str | None, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    """The Origin of a page this relay served: one of `schemes` + the Host the request was sent to (behind a TLS
    proxy the page is https while the relay itself speaks http)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    return any(origin.lower() == f"{scheme}://{host}" for scheme in schemes)


def loopback_request_allowed(
    host_header: str | None, origin: str | None, allowed_origins: Iterable[str], scheme: str = "http"
) -> bool:
    """The rule for a relay with auth off: a loopback Host, and an Origin (if any) of that Host on the relay's own
    `scheme` (https with tls_cert_file) or listed."""
    if not is_loopback_host(host_header):
        return False
    if origin is None:
        return True
    return is_own_origin(origin, host_header, (scheme,)) or origin in set(allowed_origins)


@web.middleware
async def one_host_one_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request with more than one `Host` (RFC 9112 asks for a 400) or more than one `Origin` names no single
    origin to check, whatever the auth mode: 400, logged, before any other rule reads the first of them."""
    for name in ("Host", "Origin"):
        if len(request.headers.getall(name, ())) > 1:
            log.warning("relay.request_refused", reason=f"duplicate_{name.lower()}", path=request.path)
            return openai_error(400, f"the request has more than one {name} header", "invalid_request")
    return await handler(request)


def loopback_guard(allowed_origins: Iterable[str], scheme: str = "http") -> Middleware:
    """Middleware for a relay with auth off: refuse (403, logged) what `loopback_request_allowed` refuses."""
    allowed = tuple(allowed_origins)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        origin = request.headers.get("Origin")
        if not loopback_request_allowed(host, origin, allowed, scheme):
            log.warning("relay.request_refused", reason="not_loopback_origin", host=host, origin=origin, path=request.path)
            return openai_error(
                403, "this relay serves only its own loopback origin (see allowed_origins)", "origin_not_allowed"
            )
        return await handler(request)

    return guard


# ---- the client's address behind proxies ---------------------------------------------------------------------


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """`forwarded_allow_ips` entries as networks (a bare address is a /32 or /128); ValueError names a bad one."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip())


def _trusted(address: str | None, proxies: tuple[Network, ...]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str | None:
    """The client: the socket peer unless it is a listed proxy; then the nearest X-Forwarded-For hop that is not."""
    if not proxies or not _trusted(peer, proxies) or not forwarded_for:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header names nobody
    return hops[0] if hops else peer


# ---- per-session files ---------------------------------------------------------------------------------------


def session_folder(data_dir: str | Path, session_id: str) -> Path:
    """A session's folder under `data_dir` (its saved audio, recording and opener file); `session_id` already checked."""
    return Path(data_dir) / "sessions" / session_id


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def record_session_opener(session_dir: Path, token: str) -> None:
    """Write the opening token's hash into the session folder (0750 folder, 0640 file)."""
    session_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    path = session_dir / OPENER_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token_digest(token) + "\n")


def session_opener_matches(session_dir: Path, token: str) -> bool:
    """True when `token` opened the session whose folder this is (constant-time compare)."""
    try:
        recorded = (session_dir / OPENER_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(recorded.encode(), token_digest(token).encode())

"""How a session ended: why (`EndReason`, the `reason` of `relay.session_ended`) and what it leaves behind
(`SessionOutcome`: close codes, counts, dropped log records).

Boundary: plain values, no I/O. The bridge decides them; the server (drain, refusals), the mic side and the CLI's
exit codes read them. The reasons and the close codes that go with them are in docs/lifecycle.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EndReason(enum.StrEnum):
    CLIENT_CLOSED = "client_closed"
    UPSTREAM_CLOSED = "upstream_closed"
    UPSTREAM_DISCONNECTED = "upstream_disconnected"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    CLIENT_TOO_SLOW = "client_too_slow"
    DRAIN = "drain"
    TOO_MANY_SESSIONS = "too_many_sessions"
    EXPIRED = "expired"
    ERROR = "error"


@dataclass
class SessionOutcome:
    session_id: str
    reason: EndReason
    client_close_code: int | None
    upstream_close_code: int | None
    counts: dict[str, int]
    log_dropped: int

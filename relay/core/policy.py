"""What the operator configured for every session: the slice of Settings the core needs (`SessionPolicy`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relay.core.resume import ResumePolicy
from relay.core.toolset import ToolSet


@dataclass(frozen=True)
class SessionPolicy:
    """What the operator configured for every session (a slice of Settings the core needs)."""

    retrieve_after_done: bool = True
    clamp_truncate: bool = True
    pinned_session: dict[str, Any] = field(default_factory=dict)
    blocked_client_events: frozenset[str] = frozenset()
    max_item_audio_seconds: float = 120.0
    relay_events: bool = False
    tools: ToolSet | None = None  # server-side tools (relay.tools; docs/tools.md)
    resume: ResumePolicy | None = None  # None: a dropped upstream ends the session (docs/resume.md)


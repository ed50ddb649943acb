"""What a server-side tool handler learns about the call besides its arguments. Pure data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolContext:
    session_id: str  # the relay's session id (the event log's file name)
    call_id: str  # the model's call id, as in the function_call item
    tool: str  # the tool's name

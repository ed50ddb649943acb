"""The server tools' data, pure and frozen: what the operator configured (`ToolSpec`, `ToolSet`; loaded and
validated by relay.tools.config), a call to run (`ToolCall`) and how it ended (`ToolOutcome`), the model's
arguments read (`parse_arguments`) and the output of a call that produced none (`error_output`). See docs/tools.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

DEFAULT_TIMEOUT_S: Final = 10.0
MAX_RUNNING_PER_SESSION: Final = 4


@dataclass(frozen=True)
class ToolSpec:
    """One server tool: what the model is told about it and how the relay runs it."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    kind: Literal["python", "http"]
    handler: str  # as configured ("python:MODULE:function" or "http:URL")
    timeout_seconds: float
    function: Callable[..., Any] | None = field(default=None, repr=False, compare=False)  # python handlers
    url: str = ""  # http handlers
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # http handlers; may hold secrets

    def definition(self) -> dict[str, Any]:
        """The tool as the model sees it in `session.tools`."""
        return {"type": "function", "name": self.name, "description": self.description, "parameters": dict(self.parameters)}


@dataclass(frozen=True)
class ToolSet:
    """Every server tool of a relay, and the operator's rules for showing them to clients."""

    tools: tuple[ToolSpec, ...]
    hide_events: bool = True
    details_to_client: bool = False
    max_output_bytes: int = 64 * 1024
    max_running: int = MAX_RUNNING_PER_SESSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {tool.name: tool for tool in self.tools})

    def get(self, name: object) -> ToolSpec | None:
        by_name: dict[str, ToolSpec] = self._by_name  # type: ignore[attr-defined]
        return by_name.get(name) if isinstance(name, str) else None

    @property
    def names(self) -> frozenset[str]:
        return frozenset(tool.name for tool in self.tools)

    @property
    def max_timeout(self) -> float:
        return max((tool.timeout_seconds for tool in self.tools), default=DEFAULT_TIMEOUT_S)

    def definitions(self) -> list[dict[str, Any]]:
        return [tool.definition() for tool in self.tools]


@dataclass(frozen=True)
class ToolCall:
    """A server-tool call to run: `arguments` is None when the model's JSON was unusable (`problem` says why)."""

    call_id: str
    name: str
    item_id: str | None
    response_id: str | None
    arguments_text: str
    arguments: dict[str, Any] | None
    problem: str | None = None


@dataclass(frozen=True)
class ToolOutcome:
    result: Literal["ok", "error", "timeout", "cancelled"]
    output: str  # what goes upstream as the function_call_output's `output`
    duration_ms: float


def parse_arguments(text: object) -> tuple[dict[str, Any] | None, str | None]:
    """The model's arguments as a dict, or None and the reason they cannot be used."""
    if not isinstance(text, str):
        return None, f"arguments must be a JSON string, got {type(text).__name__}"
    if not text.strip():
        return {}, None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def error_output(message: str) -> str:
    """The output the model gets when a call could not produce a result."""
    return orjson.dumps({"error": message}).decode()

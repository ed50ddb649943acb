"""Server-side tools as configured: validation of the `tools` setting and resolution of each handler.

`load_tools(settings)` turns the raw `[[tools]]` tables into a frozen `ToolSet` (a pure data class of the core,
relay.core.toolset) or raises `ConfigError` naming the tool and the problem (a handler module that does not
import, a missing function, a URL that is not http(s), a duplicate name, `parameters` that is not a JSON Schema
object). It imports handler modules, and nothing else: no sockets, no threads. The rules are written for users in
docs/tools.md.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from relay.core.toolset import DEFAULT_TIMEOUT_S, ToolSet, ToolSpec
from relay.errors import ConfigError
from relay.settings import Settings

DEFAULT_PARAMETERS: Final = {"type": "object", "properties": {}}
MAX_TIMEOUT_S: Final = 600.0
# The function-name rule of the realtime API: what the model can be asked to call.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")  # matched whole (fullmatch)
_KEYS: Final = frozenset({"name", "description", "parameters", "handler", "timeout_seconds", "headers"})


def load_tools(settings: Settings, source: str = "config") -> ToolSet | None:
    """The server tools of `settings` (None when there are none); bad ones raise ConfigError naming the tool."""
    if not settings.tools:
        return None
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(settings.tools):
        spec = _parse_tool(index, raw, source)
        if spec.name in seen:
            raise ConfigError("tools", source, f"tool {spec.name!r}: duplicate name (tools[{index}])")
        seen.add(spec.name)
        specs.append(spec)
    return ToolSet(
        tuple(specs),
        hide_events=settings.server_tool_events == "hide",
        details_to_client=settings.tool_details_to_client,
        max_output_bytes=settings.max_tool_output_bytes,
    )


def _parse_tool(index: int, raw: Mapping[str, Any], source: str) -> ToolSpec:
    name = raw.get("name")
    label = f"tool {name!r}" if isinstance(name, str) and name else f"tools[{index}]"

    def bad(problem: str) -> ConfigError:
        return ConfigError("tools", source, f"{label}: {problem}")

    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise bad("`name` must be 1-64 letters, digits, '_' or '-'")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise bad(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise bad("`description` must be a string")
    parameters = raw.get("parameters", DEFAULT_PARAMETERS)
    if not isinstance(parameters, dict):
        raise bad("`parameters` must be a JSON Schema object (a table), e.g. {type = \"object\", properties = {}}")
    if parameters.get("type", "object") != "object":
        raise bad(f"`parameters` must be a JSON Schema of type \"object\", got type {parameters.get('type')!r}")
    if "properties" in parameters and not isinstance(parameters["properties"], dict):
        raise bad("`parameters.properties` must be an object")
    timeout = raw.get("timeout_seconds", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout):
        raise bad("`timeout_seconds` must be a number")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise bad(f"`timeout_seconds` must be > 0 and <= {MAX_TIMEOUT_S:g}, got {timeout}")
    handler = raw.get("handler")
    if not isinstance(handler, str) or not handler:
        raise bad("`handler` is required: \"python:MODULE:function\" or \"http:URL\"")
    headers = raw.get("headers")
    common: dict[str, Any] = {
        "name": name,
        "description": description,
        "parameters": parameters,
        "handler": handler,
        "timeout_seconds": float(timeout),
    }
    if handler.startswith("python:"):
        if headers is not None:
            raise bad("`headers` applies to http handlers only")
        return ToolSpec(kind="python", function=_import_function(handler, bad), **common)
    if handler.startswith("http:"):
        url = handler[len("http:") :]
        try:
            parts = urlsplit(url)
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            parts, port_ok = urlsplit(""), False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            # The URL may carry a password even without a scheme the output's redaction recognizes (`//u:p@h`).
            shown = re.sub(r"//[^/@]*@", "//****@", url, count=1)
            raise bad(f"handler URL must be http:// or https://, got {shown!r}")
        if headers is None:
            headers = {}
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise bad("`headers` must be a table of strings")
        return ToolSpec(kind="http", url=url, headers=dict(headers), **common)
    raise bad(f"`handler` must start with python: or http:, got {handler!r}")


def _import_function(handler: str, bad: Callable[[str], ConfigError]) -> Callable[..., Any]:
    parts = handler.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise bad(f"python handler must be \"python:MODULE:function\", got {handler!r}")
    _, module_name, function_name = parts
    try:
        module = importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise  # Ctrl-C during start-up is the user's, whatever was importing
    except BaseException as exc:  # anything the module raises while importing (SystemExit too) is the operator's to see
        raise bad(f"handler module {module_name!r} does not import: {type(exc).__name__}: {exc}") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise bad(f"handler module {module_name!r} has no function {function_name!r}")
    if not callable(function):
        raise bad(f"handler {module_name}:{function_name} is not callable")
    return function  # type: ignore[no-any-return]

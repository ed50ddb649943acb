"""Example server-side tools, ready to name in `[[tools]]` (see config/tools.example.toml and docs/tools.md).

A handler gets the call's arguments (a dict parsed from the model's JSON) and a `ToolContext`; it returns a
string or anything JSON-serializable. Sync handlers run on a thread, async ones on the relay's loop.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from relay.tools.context import ToolContext


def current_time(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """The current date and time, in the IANA time zone given as `tz` (default UTC)."""
    name = arguments.get("tz") or "UTC"
    if not isinstance(name, str):
        raise ValueError("tz must be a string such as 'Europe/Moscow'")
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    now = dt.datetime.now(zone)
    return {"tz": name, "iso": now.isoformat(timespec="seconds"), "weekday": now.strftime("%A")}


async def echo(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Returns its arguments and the call's ids: handy to check a deployment's wiring."""
    return {"arguments": arguments, "session_id": context.session_id, "call_id": context.call_id}

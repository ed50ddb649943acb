"""Server-side tools: functions the model calls that run in the relay, never in the client (docs/tools.md).

- `relay.tools.config`: the `tools` setting validated, handlers resolved into a `ToolSet` of `ToolSpec`s (pure
  data classes that live in the core, relay.core.toolset).
- The pure bookkeeping the session core calls (which calls are the relay's, what the client may see, when to
  continue the response) is the core's own: relay.core.tools.
- `relay.tools.runner`: runs handlers off the loop with timeouts, caps outputs (asyncio, threads, HTTP).
- `relay.tools.examples`: ready-made handlers (`current_time`).
"""

from __future__ import annotations

from relay.tools.context import ToolContext

__all__ = ["ToolContext"]

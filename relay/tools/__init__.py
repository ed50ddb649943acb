"""Server-side tools: functions the model calls that run in the relay, never in the client (docs/tools.md).

- `relay.tools.config`: the `tools` setting validated, handlers resolved (`ToolSet`, `ToolSpec`).
- `relay.tools.state`: the pure bookkeeping the session core calls (which calls are the relay's, what the client
  may see, when to continue the response); no I/O.
- `relay.tools.runner`: runs handlers off the loop with timeouts, caps outputs (asyncio, threads, HTTP).
- `relay.tools.examples`: ready-made handlers (`current_time`).
"""

from __future__ import annotations

from relay.tools.context import ToolContext

__all__ = ["ToolContext"]

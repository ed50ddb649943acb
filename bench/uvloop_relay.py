"""`python -m bench.uvloop_relay serve ...`: the unchanged relay CLI on uvloop's event loop, to measure what the
optional uvloop dependency would buy (adopted only if it pays: docs/performance.md). Bench-only; the relay itself is untouched.
Exits 2 with a message when uvloop is not installed.
"""

from __future__ import annotations

import asyncio
import sys


def main() -> int:
    try:
        import uvloop
    except ImportError:
        print("bench.uvloop_relay: uvloop is not installed", file=sys.stderr)
        return 2
    # asyncio.run() in `serve` picks the loop from the policy; 3.11/3.12 still honour set_event_loop_policy.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from relay.cli.main import main as relay_main

    return relay_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())

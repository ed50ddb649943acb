"""`python -m bench.reference_relay serve --upstream ws://H:P/... --port P ...`: the reference pass-through relay.

Built the way Azure's `rtmt.py` sample relays a realtime session: an aiohttp server for the client, an aiohttp
`ws_connect` client for the upstream, one task per direction, `json.loads` of every message (the sample inspects
each one) and `send_str` of the original text, no logging. This is what "a relay a user would pick" costs on this
machine, measured in the same run as the product. It shares no code with the product on purpose. It answers
`GET /readyz` with its live session count (the harness polls it) and ignores every other relay flag. Bench-only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aiohttp
from aiohttp import web

LIVE: set[web.WebSocketResponse] = set()


async def readyz(request: web.Request) -> web.Response:
    return web.json_response({"sessions": len(LIVE)})


async def relay(request: web.Request) -> web.StreamResponse:
    upstream_url: str = request.app["upstream"]
    http: aiohttp.ClientSession = request.app["http"]
    client = web.WebSocketResponse()
    await client.prepare(request)
    LIVE.add(client)
    try:
        async with http.ws_connect(upstream_url) as upstream:

            async def from_client() -> None:
                async for message in client:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        json.loads(message.data)
                        await upstream.send_str(message.data)
                    else:
                        break

            async def from_upstream() -> None:
                async for message in upstream:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        json.loads(message.data)
                        await client.send_str(message.data)
                    else:
                        break

            tasks = [asyncio.create_task(from_client()), asyncio.create_task(from_upstream())]
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    except (aiohttp.ClientError, OSError):
        pass
    finally:
        LIVE.discard(client)
        await client.close()
    return client


async def serve(upstream: str, port: int) -> None:
    app = web.Application()
    app["upstream"] = upstream
    # No cap on upstream connections: aiohttp's default pool of 100 would leave every session past the 100th
    # waiting for a connection, and the reference would not carry the bench's 200 sessions at all.
    app["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/realtime", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await app["http"].close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference_relay")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args, _ignored = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(serve(args.upstream, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

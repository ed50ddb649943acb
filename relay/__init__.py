"""realtime-relay: an asyncio relay between realtime-voice clients and an OpenAI-compatible Realtime API.

Subpackages and modules: `session` (the pure per-session core), `bridge` (drives one session), `server`
(the aiohttp `serve` app), `upstream` (the websockets client), `eventlog` (per-session JSONL), `simulator`
(an offline stand-in for the upstream), `commands` (the CLI's subcommands).
"""

__version__ = "0.1.0"

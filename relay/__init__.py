"""realtime-relay: an asyncio relay between realtime-voice clients and an OpenAI-compatible Realtime API.

The layout is the architecture (docs/architecture.md draws it):
- `core/`: the pure session state machine (events in, decisions out; no I/O, no clock);
- `links/`: the client and upstream socket adapters;
- `bridge`: drives one session (feed the core, drain it, act);
- `server/`: the `serve` HTTP/WebSocket app (routes, auth, REST proxy);
- `mic/`: the local microphone/speaker client side;
- `eventlog/`: per-session JSONL records;
- `inspect/`, `history/`: reading logs and conversations back;
- `simulator/`: an offline stand-in for the upstream;
- `cli/`: the command line, one module per subcommand;
- `settings`, `credentials`, `errors`, `logconfig`, `metrics`: process-wide plumbing.
"""

__version__ = "0.1.0"

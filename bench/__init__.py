"""`make bench` (docs/performance.md): the relay measured against a direct connection, in one run, on loopback.

Parts, each its own process so they can be pinned to their own core:
- `bench.echo` — a minimal WebSocket upstream that answers every `input_audio_buffer.append` at once with a
  `response.output_audio.delta` of the same size (so the upstream is never the bottleneck);
- `bench.loadgen` — the load generator: sessions sending 20 ms PCM16 chunks in real time (or flooding), timing
  each round trip;
- `bench.relayproc` — a real `realtime-relay serve` subprocess under test, in three logging variants;
- `bench.measure` — /proc readers (CPU ticks, RSS), percentiles, machine facts;
- `bench.profiling` — py-spy (or nothing) on the relay under load, summarized;
- `bench.runner` — the phases, the report, the targets; `bench.table` — the README table from a result file;
- `bench.gc_relay` — the unchanged relay CLI under a what-if (GC pauses timed),
  for measured perf proposals;
- `bench.reference_relay` — the reference pass-through relay (aiohttp both sides, `json.loads` of every message, no
  logging, built like Azure's rtmt.py and sharing no code with the product): the contract's targets are read
  against it, measured in the same run;
- `bench.splice_floor` (and `_uvloop`) — not a relay: a byte-for-byte TCP splice, the floor under any asyncio
  relay on this machine, measured in the same run so each target can be read against it.
Tools beside `make bench`: `bench.ab` (two revisions interleaved), `bench.calls` (Python calls per round trip),
`bench.recorder` (the session recording alone, on a fake clock).
Both WebSocket peers here speak RFC 6455 through `bench.frames`, a few dozen lines of framing, because the
generator has to outrun the relay on one core: a general-purpose client library would measure itself.
"""

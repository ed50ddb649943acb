"""The realtime simulator: a local server speaking the Yandex/OpenAI realtime protocol (docs/architecture.md).

Public API:

    from relay.simulator import SimulatorOptions, create_app, start_simulator, RunningSimulator
    opts = SimulatorOptions(flavour="yandex", speed=1.0, api_key=None, knobs={})
    app = create_app(opts)                          # aiohttp app: GET /v1/realtime + /v1/conversations REST
    sim = await start_simulator(opts, host="127.0.0.1", port=0)
    sim.realtime_url, sim.rest_base, sim.port, sim.item_audio(item_id)
    await sim.close()

Modules: `config` (session config shape, defaults, audio formats), `validation` (what a client may send, per
flavour), `vad` (energy VAD), `replies` (the fake model's words), `model` (which reply a response carries),
`items` (stored items and their audio), `session` (pure per-socket protocol state, built from `session_state`,
`responses`, `turns` and `conversation`), `knobs` (fault knobs), `rest_store` / `rest_routes` (Conversations
REST), `server` (aiohttp adapter). A session is tied to a REST conversation with `?conversation_id=` (see
`server`).
"""

from __future__ import annotations

from relay.simulator.server import RunningSimulator, SimulatorOptions, create_app, start_simulator

__all__ = ["RunningSimulator", "SimulatorOptions", "create_app", "start_simulator"]

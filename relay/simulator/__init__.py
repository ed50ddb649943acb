"""The realtime simulator (CONTRACT C8): a local server speaking the Yandex/OpenAI realtime protocol.

Public API:

    from relay.simulator import SimulatorOptions, create_app, start_simulator, RunningSimulator
    opts = SimulatorOptions(flavour="yandex", speed=1.0, api_key=None, knobs={})
    app = create_app(opts)                          # aiohttp app: GET /v1/realtime + /v1/conversations REST
    sim = await start_simulator(opts, host="127.0.0.1", port=0)
    sim.realtime_url, sim.rest_base, sim.port, sim.item_audio(item_id)
    await sim.close()

Modules: `config` (session config and validation), `vad` (energy VAD), `replies` (what the fake model says),
`session` (pure per-socket protocol state), `knobs` (fault knobs), `rest` (Conversations REST), `server`
(aiohttp adapter). A session is tied to a REST conversation with `?conversation_id=` (see `server`).
"""

from __future__ import annotations

from relay.simulator.server import RunningSimulator, SimulatorOptions, create_app, start_simulator

__all__ = ["RunningSimulator", "SimulatorOptions", "create_app", "start_simulator"]

"""`/healthz`, `/readyz` and `/metrics` of `serve` (docs/lifecycle.md), scraped and parsed with prometheus-client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from relay.core import events as ev
from relay.server.app import start_drain
from tests.support.relay_fixtures import RunningRelay, running_relay
from tests.support.timing import seconds

EXPECTED = {
    # family name as the parser reports it: (type, label names of its samples)
    "relay_active_sessions": ("gauge", set()),
    "relay_events": ("counter", {"dir", "type"}),
    "relay_bytes": ("counter", {"dir"}),
    "relay_upstream_connect_seconds": ("histogram", set()),
    "relay_retrieves": ("counter", {"result"}),
    "relay_client_errors": ("counter", {"code"}),
    "relay_closes": ("counter", {"code"}),
    "relay_connections_closed": ("counter", {"reason"}),
    "relay_log_dropped": ("counter", set()),
}
KNOWN_TYPES = ev.CLIENT_EVENT_TYPES | ev.SERVER_EVENT_TYPES | {"other"}


async def scrape(relay: RunningRelay) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(relay.base_url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str, sample: str | None = None, **labels: str) -> float:
    family = families[name]
    wanted = sample or (name + "_total" if family.type == "counter" else name)
    matches = [s.value for s in family.samples if s.name == wanted and all(s.labels.get(k) == v for k, v in labels.items())]
    return float(sum(matches))


async def test_every_contract_metric_is_present_with_its_labels(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            await ws.receive_json(timeout=seconds(5))
            await ws.send_str("junk")
            await ws.receive_json(timeout=seconds(5))
        await wait_gone(relay)
        families = await scrape(relay)
    for name, (kind, labels) in EXPECTED.items():
        assert name in families, name
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)


async def test_standard_process_and_python_gc_collectors_are_exposed(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        families = await scrape(relay)
    assert value(families, "process_resident_memory_bytes") > 0
    assert value(families, "process_open_fds") > 0
    assert value(families, "process_cpu_seconds", "process_cpu_seconds_total") > 0
    assert {"python_gc_objects_collected", "python_gc_collections"} <= set(families)
    assert {s.labels["generation"] for s in families["python_gc_collections"].samples} == {"0", "1", "2"}


async def test_metrics_move_with_a_session(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        before = await scrape(relay)
        assert value(before, "relay_active_sessions") == 0
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            await ws.receive_json(timeout=seconds(5))
            during = await scrape(relay)
            assert value(during, "relay_active_sessions") == 1
            await ws.send_str("junk")
            await ws.receive_json(timeout=seconds(5))
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
            await ws.send_str(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send_str(json.dumps({"type": "response.create"}))
            deltas = 0
            while (event := await ws.receive_json(timeout=seconds(5)))["type"] != "response.done":
                deltas += event["type"] == "response.output_audio.delta"
        await wait_gone(relay)
        await asyncio.sleep(0)
        after = await scrape(relay)
    assert value(after, "relay_active_sessions") == 0
    assert value(after, "relay_events", dir="client", type="conversation.item.create") == 1
    assert value(after, "relay_events", dir="client", type="response.create") == 1
    assert value(after, "relay_events", dir="server", type="session.created") == 1
    assert value(after, "relay_events", dir="server", type="response.output_audio.delta") == deltas
    assert value(after, "relay_bytes", dir="client") > 0 and value(after, "relay_bytes", dir="server") > 0
    assert value(after, "relay_upstream_connect_seconds", sample="relay_upstream_connect_seconds_count") == 1
    assert value(after, "relay_client_errors", code="invalid_json") == 1
    assert value(after, "relay_closes", code="1000") == 1
    assert value(after, "relay_retrieves") >= 1  # the reply's audio item was retrieved and saved
    assert value(after, "relay_log_dropped") == 0


async def test_binary_frame_counts_once_as_a_client_error(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            await ws.receive_json(timeout=seconds(5))
            await ws.send_bytes(b"\x00")
            await ws.receive_json(timeout=seconds(5))
        await wait_gone(relay)
        assert value(await scrape(relay), "relay_client_errors", code="binary_not_supported") == 1


async def test_event_type_labels_stay_bounded_whatever_clients_send(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url) as ws:
            await ws.receive_json(timeout=seconds(5))
            for index in range(50):
                await ws.send_str(json.dumps({"type": f"x.random.{index}", "event_id": f"e{index}"}))
                await ws.receive_json(timeout=seconds(5))
        await wait_gone(relay)
        families = await scrape(relay)
    types = {s.labels["type"] for s in families["relay_events"].samples}
    assert "x.random.0" not in types
    assert value(families, "relay_events", dir="client", type="other") == 50
    assert all(t in KNOWN_TYPES or t.startswith("relay.") for t in types), types
    codes = {s.labels["code"] for s in families["relay_client_errors"].samples}
    assert codes <= {"invalid_json", "missing_type", "binary_not_supported", "event_blocked"} | {
        "upstream_unavailable",
        "upstream_disconnected",
        "session_expired",
        "too_many_sessions",
        "client_too_slow",
    }


async def test_healthz_and_readyz_answer_200_and_readyz_503_while_draining(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz"):
                async with http.get(relay.base_url + path) as resp:
                    assert resp.status == 200, path
            start_drain(relay.app)
            async with http.get(relay.base_url + "/readyz") as resp:
                assert resp.status == 503
            async with http.get(relay.base_url + "/healthz") as resp:
                assert resp.status == 200
            async with http.get(relay.base_url + "/metrics") as resp:
                assert resp.status == 200


async def test_readyz_does_not_depend_on_the_upstream(tmp_path: Path) -> None:
    async with running_relay(tmp_path, upstream_query="refuse=503") as relay:
        async with aiohttp.ClientSession() as http, http.get(relay.base_url + "/readyz") as resp:
            assert resp.status == 200
        assert relay.sim_handshakes == 0


async def wait_gone(relay: RunningRelay) -> None:
    async with asyncio.timeout(seconds(5)):
        while relay.state.bridges:
            await asyncio.sleep(0.01)

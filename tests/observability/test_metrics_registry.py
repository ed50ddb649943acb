"""relay.metrics on its own (the scrape over HTTP is tests/server/test_metrics.py): what the counters render to,
read back with prometheus-client's own parser; labels stay bounded whatever types clients send."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from relay.core import events as ev
from relay.core.outbox import LogEntry
from relay.metrics import CONNECT_BUCKETS, RelayMetrics


def scrape(metrics: RelayMetrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name -> its samples (sample name, labels, value), as a Prometheus server reads them."""
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(metrics.render().decode())
    }


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    (found,) = [v for n, lab, v in samples if n == name and lab == labels]
    return found


def test_an_idle_relay_renders_every_family() -> None:
    families = scrape(RelayMetrics(lambda: 0, lambda: 0))
    for name in (
        "relay_active_sessions",
        "relay_events",
        "relay_bytes",
        "relay_upstream_connect_seconds",
        "relay_retrieves",
        "relay_client_errors",
        "relay_closes",
        "relay_connections_closed",
        "relay_upstream_resumes",
        "relay_tool_calls",
        "relay_tool_seconds",
        "relay_log_dropped",
    ):
        assert name in families, name
    assert any(name.startswith("process_") for name in families)  # the standard families stock dashboards use
    assert any(name.startswith("python_gc_") for name in families)


def test_gauges_are_read_at_scrape_time() -> None:
    state = {"sessions": 3, "dropped": 7}
    metrics = RelayMetrics(lambda: state["sessions"], lambda: state["dropped"])
    families = scrape(metrics)
    assert value(families["relay_active_sessions"], "relay_active_sessions") == 3
    assert value(families["relay_log_dropped"], "relay_log_dropped_total") == 7
    state.update(sessions=0, dropped=9)
    families = scrape(metrics)
    assert value(families["relay_active_sessions"], "relay_active_sessions") == 0
    assert value(families["relay_log_dropped"], "relay_log_dropped_total") == 9


def test_events_and_bytes_count_by_direction_and_type() -> None:
    metrics = RelayMetrics(lambda: 0, lambda: 0)
    metrics.count_events([LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {}, bytes=100)])
    metrics.count_events([LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {}, bytes=50)])
    metrics.count_events([LogEntry("server", ev.RESPONSE_DONE, {}, bytes=None)])  # a relay-made record has no wire size
    metrics.count_events([LogEntry("server", ev.RESPONSE_DONE, {}, bytes=0)])
    families = scrape(metrics)
    events = families["relay_events"]
    assert value(events, "relay_events_total", dir="client", type=ev.INPUT_AUDIO_BUFFER_APPEND) == 2
    assert value(events, "relay_events_total", dir="server", type=ev.RESPONSE_DONE) == 2
    assert value(families["relay_bytes"], "relay_bytes_total", dir="client") == 150
    assert [lab for _, lab, _ in families["relay_bytes"] if lab.get("dir") == "server"] == []


def test_a_flushs_relay_records_count_client_errors_by_code_and_failed_retrieves_by_reason() -> None:
    metrics = RelayMetrics(lambda: 0, lambda: 0)
    metrics.count_events(
        [
            LogEntry("client", ev.INPUT_AUDIO_BUFFER_APPEND, {}, bytes=100),
            LogEntry("relay", ev.RELAY_CLIENT_ERROR, {"code": "invalid_json", "message": "m"}),
            LogEntry("relay", ev.RELAY_RETRIEVE_FAILED, {"item_id": "i", "reason": "timeout"}),
            LogEntry("relay", ev.RELAY_CLIENT_ERROR, ["not", "a", "dict"]),  # nothing to count it by: only as an event
            LogEntry("relay", ev.RELAY_CLIENT_ERROR, {"code": "invalid_json"}),
        ]
    )
    families = scrape(metrics)
    assert value(families["relay_client_errors"], "relay_client_errors_total", code="invalid_json") == 2
    assert value(families["relay_retrieves"], "relay_retrieves_total", result="timeout") == 1
    assert value(families["relay_events"], "relay_events_total", dir="relay", type=ev.RELAY_CLIENT_ERROR) == 3


@given(st.one_of(st.none(), st.text(max_size=200)))
def test_an_unknown_or_garbage_type_is_other(event_type: Any) -> None:
    known = ev.CLIENT_EVENT_TYPES | ev.SERVER_EVENT_TYPES | ev.RELAY_RECORD_TYPES
    assert counted_labels([event_type]) == [event_type if event_type in known else "other"]


def counted_labels(types: list[Any]) -> list[str]:
    """The type label each event is counted under, in order."""
    labels = []
    for event_type in types:
        metrics = RelayMetrics(lambda: 0, lambda: 0)
        metrics.count_events([LogEntry("relay", event_type, {})])
        ((_direction, label),) = metrics.events
        labels.append(label)
    return labels


def test_every_record_type_the_relay_writes_is_counted_under_its_own_name() -> None:
    written = [ev.RELAY_RECORDING_SAVED, ev.RELAY_RECORDING_STOPPED, ev.RELAY_UPSTREAM_EVENT_DROPPED, ev.RELAY_LOG_GAP]
    written += [ev.RELAY_AUDIO_NOT_SAVED, ev.RELAY_INTERNAL_ERROR, ev.RELAY_UPSTREAM_BINARY_FRAME, ev.RELAY_TOOL_CALL]
    assert counted_labels(written) == written
    # Every relay.* name in the events module is one of them.
    names = {value for key, value in vars(ev).items() if key.startswith("RELAY_") and isinstance(value, str)}
    assert {name for name in names if name.startswith("relay.")} == ev.RELAY_RECORD_TYPES


def test_the_type_label_set_is_bounded_whatever_clients_send() -> None:
    metrics = RelayMetrics(lambda: 0, lambda: 0)
    for n in range(500):
        metrics.count_events([LogEntry("client", f"made.up.{n}", {}, bytes=10)])
    metrics.count_events([LogEntry("client", 'quote" and \n newline', {}, bytes=10)])
    metrics.count_events([LogEntry("server", ev.RELAY_SESSION_ENDED, {}, bytes=None)])
    labels = {lab["type"] for _, lab, _ in scrape(metrics)["relay_events"]}
    assert labels == {"other", ev.RELAY_SESSION_ENDED}


def test_histograms_are_cumulative_with_count_and_sum() -> None:
    metrics = RelayMetrics(lambda: 0, lambda: 0)
    for seconds in (0.003, 0.2, 0.25, 100.0):
        metrics.observe_connect(seconds)
    samples = scrape(metrics)["relay_upstream_connect_seconds"]
    buckets = {lab["le"]: v for n, lab, v in samples if n.endswith("_bucket")}
    assert buckets["0.005"] == 1 and buckets["0.1"] == 1 and buckets["0.25"] == 3 and buckets["30.0"] == 3
    assert buckets["+Inf"] == 4
    assert len(buckets) == len(CONNECT_BUCKETS) + 1
    assert all(a <= b for a, b in zip(list(buckets.values()), list(buckets.values())[1:], strict=False))
    assert value(samples, "relay_upstream_connect_seconds_count") == 4
    assert abs(value(samples, "relay_upstream_connect_seconds_sum") - 100.453) < 1e-9


def test_tool_calls_count_by_tool_and_result_and_time_one_histogram() -> None:
    metrics = RelayMetrics(lambda: 0, lambda: 0)
    metrics.observe_tool("get_weather", "ok", 0.01)
    metrics.observe_tool("get_weather", "ok", 0.02)
    metrics.observe_tool("get_weather", "timeout", 60.0)
    families = scrape(metrics)
    calls = families["relay_tool_calls"]
    assert value(calls, "relay_tool_calls_total", tool="get_weather", result="ok") == 2
    assert value(calls, "relay_tool_calls_total", tool="get_weather", result="timeout") == 1
    assert value(families["relay_tool_seconds"], "relay_tool_seconds_count") == 3


def test_plain_counters_render_under_their_label() -> None:
    metrics = RelayMetrics(lambda: 0, lambda: 0)
    metrics.retrieves["ok"] += 2
    metrics.client_errors["invalid_json"] += 1
    metrics.closes["1000"] += 4
    metrics.connections_closed["header_timeout"] += 1
    metrics.resumes["failed"] += 1
    families = scrape(metrics)
    assert value(families["relay_retrieves"], "relay_retrieves_total", result="ok") == 2
    assert value(families["relay_client_errors"], "relay_client_errors_total", code="invalid_json") == 1
    assert value(families["relay_closes"], "relay_closes_total", code="1000") == 4
    assert value(families["relay_connections_closed"], "relay_connections_closed_total", reason="header_timeout") == 1
    assert value(families["relay_upstream_resumes"], "relay_upstream_resumes_total", result="failed") == 1


def test_two_apps_in_one_process_keep_their_own_counts() -> None:
    first, second = RelayMetrics(lambda: 1, lambda: 0), RelayMetrics(lambda: 2, lambda: 0)
    first.count_events([LogEntry("client", ev.RESPONSE_CREATE, {}, bytes=5)])
    assert value(scrape(first)["relay_active_sessions"], "relay_active_sessions") == 1
    assert value(scrape(second)["relay_active_sessions"], "relay_active_sessions") == 2
    assert scrape(second)["relay_events"] == []

"""Process metrics (CONTRACT C4 `/metrics`), kept as plain counters and exposed at scrape time.

The forwarding path only does dict increments; a prometheus-client Collector turns them into metric families
when `/metrics` is scraped. Event-type labels are bounded: known protocol types, else `other`. No I/O here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from relay import events as ev

_KNOWN_TYPES = (
    ev.CLIENT_EVENT_TYPES
    | ev.SERVER_EVENT_TYPES
    | {
        ev.RELAY_SESSION_STARTED,
        ev.RELAY_UPSTREAM_CONNECTED,
        ev.RELAY_AUDIO_SAVED,
        ev.RELAY_RETRIEVE_FAILED,
        ev.RELAY_CLIENT_ERROR,
        ev.RELAY_SESSION_ENDED,
        ev.RELAY_UPSTREAM_INTERRUPTED,
        ev.RELAY_UPSTREAM_RESUME_ATTEMPT,
        ev.RELAY_UPSTREAM_RESUMED,
        ev.RELAY_UPSTREAM_RESUME_FAILED,
    }
)
CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def type_label(event_type: str | None) -> str:
    return event_type if event_type in _KNOWN_TYPES else "other"


class RelayMetrics:
    def __init__(self, active_sessions: Callable[[], int], log_dropped: Callable[[], int]) -> None:
        self._active_sessions = active_sessions
        self._log_dropped = log_dropped
        self.events: Counter[tuple[str, str]] = Counter()
        self.bytes: Counter[str] = Counter()
        self.retrieves: Counter[str] = Counter()
        self.client_errors: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.resumes: Counter[str] = Counter()  # upstream resumes by result: ok|failed|abandoned (docs/resume.md)
        self._connect_buckets = [0] * len(CONNECT_BUCKETS)
        self._connect_count = 0
        self._connect_sum = 0.0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    def count_event(self, direction: str, event_type: str | None, size: int | None) -> None:
        self.events[(direction, type_label(event_type))] += 1
        if size:
            self.bytes[direction] += size

    def observe_connect(self, seconds: float) -> None:
        self._connect_count += 1
        self._connect_sum += seconds
        for index, bound in enumerate(CONNECT_BUCKETS):
            if seconds <= bound:
                self._connect_buckets[index] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _families(self) -> Iterator[object]:
        gauge = GaugeMetricFamily("relay_active_sessions", "Client sessions currently open.")
        gauge.add_metric([], self._active_sessions())
        yield gauge
        events = CounterMetricFamily("relay_events", "Events that crossed the relay.", labels=["dir", "type"])
        for (direction, event_type), value in sorted(self.events.items()):
            events.add_metric([direction, event_type], value)
        yield events
        sizes = CounterMetricFamily("relay_bytes", "Frame bytes that crossed the relay.", labels=["dir"])
        for direction, value in sorted(self.bytes.items()):
            sizes.add_metric([direction], value)
        yield sizes
        buckets = [(str(bound), float(count)) for bound, count in zip(CONNECT_BUCKETS, self._connect_buckets, strict=True)]
        buckets.append(("+Inf", float(self._connect_count)))
        histogram = HistogramMetricFamily("relay_upstream_connect_seconds", "Upstream handshake time.")
        histogram.add_metric([], buckets, sum_value=self._connect_sum)
        yield histogram
        for name, doc, label, counter in (
            ("relay_retrieves", "Relay retrieves by result.", "result", self.retrieves),
            (
                "relay_client_errors",
                "Client-facing errors by code: error events sent, and client_too_slow closes.",
                "code",
                self.client_errors,
            ),
            ("relay_closes", "Client sockets closed by close code.", "code", self.closes),
            ("relay_upstream_resumes", "Upstream resumes after a drop, by result (ok|failed|abandoned).", "result", self.resumes),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, value in sorted(counter.items()):
                family.add_metric([key], value)
            yield family
        dropped = CounterMetricFamily("relay_log_dropped", "Event-log records dropped (queue full or disk failing).")
        dropped.add_metric([], self._log_dropped())
        yield dropped


class _Collector(Collector):
    def __init__(self, metrics: RelayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        return self._metrics._families()

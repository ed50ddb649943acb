"""Process metrics (`GET /metrics`, docs/lifecycle.md), kept as plain counters and exposed at scrape time.

The forwarding path only does dict increments; a prometheus-client Collector turns them into metric families
when `/metrics` is scraped. Event-type labels are bounded: known protocol types, else `other`. No I/O here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from relay.core import events as ev
from relay.core.outbox import LogEntry

# Bounded label values: the protocol's event types and the relay's own record types; anything else is `other`.
_KNOWN_TYPES = ev.CLIENT_EVENT_TYPES | ev.SERVER_EVENT_TYPES | ev.RELAY_RECORD_TYPES
_COUNTED_RELAY_RECORDS = frozenset({ev.RELAY_CLIENT_ERROR, ev.RELAY_RETRIEVE_FAILED})  # counted by what they say
CONNECT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Histogram:
    """Cumulative buckets, count and sum of one unlabelled histogram; rendered as a family at scrape time."""

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name, self.doc, self.bounds = name, doc, bounds
        self.buckets = [0] * len(bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum += seconds
        for index, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.buckets[index] += 1

    def family(self) -> HistogramMetricFamily:
        buckets = [(str(bound), float(count)) for bound, count in zip(self.bounds, self.buckets, strict=True)]
        buckets.append(("+Inf", float(self.count)))
        family = HistogramMetricFamily(self.name, self.doc)
        family.add_metric([], buckets, sum_value=self.sum)
        return family


class RelayMetrics:
    def __init__(self, active_sessions: Callable[[], int], log_dropped: Callable[[], int]) -> None:
        self._active_sessions = active_sessions
        self._log_dropped = log_dropped
        # Events by direction, then by type label: two plain dict lookups per event (this runs for every frame).
        self._events: dict[str, dict[str, int]] = {}
        self.bytes: Counter[str] = Counter()
        self.retrieves: Counter[str] = Counter()
        self.client_errors: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        # Server-side tools: calls by (tool, result) and their durations (docs/tools.md).
        self.tool_calls: Counter[tuple[str, str]] = Counter()
        self._tool_seconds = _Histogram("relay_tool_seconds", "Server-side tool handler time.", TOOL_BUCKETS)
        self._connect = _Histogram("relay_upstream_connect_seconds", "Upstream handshake time.", CONNECT_BUCKETS)
        self.connections_closed: Counter[str] = Counter()  # by reason: header_timeout, max_connections
        self.resumes: Counter[str] = Counter()  # upstream resumes by result: ok|failed|abandoned (docs/resume.md)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))
        # The standard process_* (CPU, memory, open fds) and python_gc_* families every Python exporter has, so
        # stock dashboards and alerts work; the registry is per app, so several apps in one process can coexist.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def count_events(self, entries: Iterable[LogEntry]) -> None:
        """The events one flush logged: each by direction and type, its wire bytes, and (from the relay's own
        records) the client errors by code and the failed retrieves by reason. One call per flush, not per event."""
        events = self._events
        sizes = self.bytes
        known = _KNOWN_TYPES
        for entry in entries:
            direction = entry.dir
            by_type = events.get(direction)
            if by_type is None:
                by_type = events[direction] = {}
            event_type = entry.type
            label = event_type if event_type in known else "other"  # a bounded label set whatever clients send
            by_type[label] = by_type.get(label, 0) + 1
            if entry.bytes:
                sizes[direction] += entry.bytes
            if event_type in _COUNTED_RELAY_RECORDS:
                self._count_relay_record(event_type, entry.event)

    def _count_relay_record(self, event_type: str | None, event: object) -> None:
        if not isinstance(event, dict):
            return
        if event_type == ev.RELAY_CLIENT_ERROR:
            self.client_errors[str(event.get("code"))] += 1
        else:
            self.retrieves[str(event.get("reason"))] += 1

    @property
    def events(self) -> Counter[tuple[str, str]]:
        """Events counted so far, by (direction, type label)."""
        return Counter({(d, t): n for d, by_type in self._events.items() for t, n in by_type.items()})

    def observe_connect(self, seconds: float) -> None:
        self._connect.observe(seconds)

    def observe_tool(self, tool: str, result: str, seconds: float) -> None:
        """One server-tool call; `tool` is a configured name, so the label set stays bounded."""
        self.tool_calls[(tool, result)] += 1
        self._tool_seconds.observe(seconds)

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
        yield self._connect.family()
        for name, doc, label, counter in (
            ("relay_retrieves", "Relay retrieves by result.", "result", self.retrieves),
            (
                "relay_client_errors",
                "Client-facing errors by code: error events sent, and client_too_slow closes.",
                "code",
                self.client_errors,
            ),
            ("relay_closes", "Client sockets closed by close code.", "code", self.closes),
            (
                "relay_connections_closed",
                "Connections the listener closed by reason: header_timeout, max_connections.",
                "reason",
                self.connections_closed,
            ),
            ("relay_upstream_resumes", "Upstream resumes after a drop, by result (ok|failed|abandoned).", "result", self.resumes),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, value in sorted(counter.items()):
                family.add_metric([key], value)
            yield family
        tool_calls = CounterMetricFamily(
            "relay_tool_calls", "Server-side tool calls by tool and result.", labels=["tool", "result"]
        )
        for (tool, result), value in sorted(self.tool_calls.items()):
            tool_calls.add_metric([tool, result], value)
        yield tool_calls
        yield self._tool_seconds.family()
        dropped = CounterMetricFamily("relay_log_dropped", "Event-log records dropped (queue full or disk failing).")
        dropped.add_metric([], self._log_dropped())
        yield dropped


class _Collector(Collector):
    def __init__(self, metrics: RelayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        return self._metrics._families()

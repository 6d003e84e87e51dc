"""Prometheus metrics of one controller, in a registry of its own (several controllers in one test
process must not share counters). Fleet and rollout gauges are computed when scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Why controller.ingest drops a message (see its docstring).
DROP_REASONS = ("oversized", "bad_topic", "malformed", "forged", "overload")


class _Computed(Collector):
    def __init__(self, fleet: Callable[[], tuple[int, int]], rollouts: Callable[[], dict[str, int]]) -> None:
        self.fleet = fleet
        self.rollouts = rollouts

    def collect(self) -> Iterator[Metric]:
        online, total = self.fleet()
        devices = GaugeMetricFamily("tinyfleet_devices", "Devices the controller knows, by liveness",
                                    labels=["state"])
        devices.add_metric(["online"], online)
        devices.add_metric(["offline"], total - online)
        yield devices
        rollouts = GaugeMetricFamily("tinyfleet_rollouts", "Rollouts by state (most recent ones)", labels=["state"])
        for state, count in sorted(self.rollouts().items()):
            rollouts.add_metric([state], count)
        yield rollouts


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingested = Counter("tinyfleet_ingest_messages", "Device messages accepted, by kind", ["kind"], registry=r)
        self.dropped = Counter("tinyfleet_ingest_dropped", "Device messages dropped, by reason", ["reason"],
                               registry=r)
        for reason in DROP_REASONS:  # present from the start, so a rate() over them works
            self.dropped.labels(reason)
        self.batch_seconds = Histogram("tinyfleet_ingest_batch_seconds", "Time to write one ingest batch",
                                       registry=r, buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self.queue_depth = Gauge("tinyfleet_ingest_queue_depth", "Messages waiting to be written", registry=r)
        self.desired_published = Counter("tinyfleet_desired_published", "Desired-state documents sent", registry=r)
        self.mqtt_connected = Gauge("tinyfleet_mqtt_connected", "1 while connected to the broker", registry=r)
        self.api_requests = Counter("tinyfleet_api_requests", "API requests by method, route and status",
                                    ["method", "route", "status"], registry=r)

    def watch(self, fleet: Callable[[], tuple[int, int]], rollouts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_Computed(fleet, rollouts))

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics of one scoring server (its own registry, so tests can run several in a process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    """Requests by status, latency, rows scored, the model version being served."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "vintage_requests", "Scoring requests by HTTP status.", ["status"], registry=self.registry
        )
        self.latency = Histogram(
            "vintage_request_seconds",
            "Time from request start to response, /invocations only.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter("vintage_rows_scored", "Rows scored.", registry=self.registry)
        self.model = Gauge(
            "vintage_model_info",
            "The model being served (value 1).",
            ["name", "version", "run_id"],
            registry=self.registry,
        )
        self.swaps = Counter(
            "vintage_model_swaps", "Model swaps by outcome.", ["outcome"], registry=self.registry
        )
        self._status = {code: self.requests.labels(str(code)) for code in (200, 400, 401, 413, 415, 504)}

    def count(self, status: int) -> None:
        """Count one request with its status (pre-bound children for the common codes)."""
        child = self._status.get(status)
        (child or self.requests.labels(str(status))).inc()

    def serving(self, name: str | None, version: str | None, run_id: str | None) -> None:
        """Set the model-info gauge to exactly one label set."""
        self.model.clear()
        self.model.labels(name or "", version or "", run_id or "").set(1)

    def watch_inference(self, inference: InferenceCounts) -> None:
        """Export the inference log's counters (read when ``/metrics`` is rendered: always current)."""
        self.registry.register(_InferenceCollector(inference))

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)


class InferenceCounts(Protocol):
    """What :class:`vintage.serving.inference_log.InferenceLog` counts (each written by one thread)."""

    dropped_queue_full: int
    dropped_write_failed: int
    rows_written: int

    @property
    def queued_rows(self) -> int: ...


class _InferenceCollector(Collector):
    """The inference log's counters, read at collection time (no lock on the hot path)."""

    def __init__(self, counts: InferenceCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        dropped = CounterMetricFamily(
            "vintage_inference_rows_dropped",
            "Sampled rows not written to the inference log: queue full, or the write failed.",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], counts.dropped_queue_full)
        dropped.add_metric(["write_failed"], counts.dropped_write_failed)
        yield dropped
        yield CounterMetricFamily(
            "vintage_inference_rows_written", "Rows written to the inference log.", value=counts.rows_written
        )
        yield GaugeMetricFamily(
            "vintage_inference_queue_rows",
            "Rows waiting for the inference log writer.",
            value=counts.queued_rows,
        )

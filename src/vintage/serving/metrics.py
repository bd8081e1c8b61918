"""Prometheus metrics of one scoring server (its own registry, so tests can run several in a process).

The per-request figures (requests by status, latency, rows scored) are plain Python numbers that the
request handler adds to on the event loop's thread, read by a collector when ``/metrics`` is rendered:
prometheus-client's own ``Counter.inc`` and ``Histogram.observe`` take a lock each, four per request, which
cost the scoring request ~3 us of ~14 (BENCHMARKS.md, "Serving speed"). The exposition is prometheus-client's
(``generate_latest``), and the figures are the ones its ``Histogram`` would give (tests/unit/serving/
test_metrics.py compares them).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_le: Callable[[float], str] = floatToGoString  # a bucket bound as prometheus-client writes it (untyped there)

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
        self.requests = RequestCounts()
        self.registry.register(_RequestCollector(self.requests))
        self.model = Gauge(
            "vintage_model_info",
            "The model being served (value 1).",
            ["name", "version", "run_id"],
            registry=self.registry,
        )
        self.swaps = Counter(
            "vintage_model_swaps", "Model swaps by outcome.", ["outcome"], registry=self.registry
        )

    def observe(self, status: int, seconds: float) -> None:
        """Count one ``/invocations`` request: its status and its latency. Called on the event loop's
        thread only (no lock)."""
        counts = self.requests
        by_status = counts.by_status
        by_status[status] = by_status.get(status, 0) + 1
        counts.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts.seconds += seconds

    def scored(self, rows: int) -> None:
        """Count rows scored (event loop's thread only)."""
        self.requests.rows += rows

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


class RequestCounts:
    """The per-request figures: written by the event loop's thread, read by :class:`_RequestCollector`."""

    __slots__ = ("buckets", "by_status", "rows", "seconds")

    def __init__(self) -> None:
        # The common codes are shown from the start, at 0, as prometheus-client's pre-bound children were.
        self.by_status: dict[int, int] = dict.fromkeys((200, 400, 401, 413, 415, 504), 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound (+Inf)
        self.seconds = 0.0
        self.rows = 0


class _RequestCollector(Collector):
    """:class:`RequestCounts` as the metric families ``vintage_requests``, ``vintage_request_seconds`` and
    ``vintage_rows_scored``."""

    def __init__(self, counts: RequestCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        requests = CounterMetricFamily(
            "vintage_requests", "Scoring requests by HTTP status.", labels=["status"]
        )
        for status, n in sorted(dict(counts.by_status).items()):
            requests.add_metric([str(status)], n)
        yield requests
        snapshot, cumulative, buckets = list(counts.buckets), 0, []
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), snapshot, strict=True):
            cumulative += n
            buckets.append((_le(bound), cumulative))
        yield HistogramMetricFamily(
            "vintage_request_seconds",
            "Time from request start to response, /invocations only.",
            buckets=buckets,
            sum_value=counts.seconds,
        )
        yield CounterMetricFamily("vintage_rows_scored", "Rows scored.", value=counts.rows)


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

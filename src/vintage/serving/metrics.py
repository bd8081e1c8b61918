"""Prometheus metrics of one scoring server (its own registry, so tests can run several in a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)

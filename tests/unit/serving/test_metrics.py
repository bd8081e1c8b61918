"""The scoring server's per-request metrics: plain counters read at /metrics time give what
prometheus-client's own Counter and Histogram would give for the same requests, in its exposition."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vintage.serving.metrics import LATENCY_BUCKETS, Metrics


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):  # prometheus-client's creation times: not figures
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_the_figures_equal_prometheus_clients_own_counter_and_histogram() -> None:
    metrics = Metrics()
    registry = CollectorRegistry()
    requests = Counter("vintage_requests", "Scoring requests by HTTP status.", ["status"], registry=registry)
    latency = Histogram(
        "vintage_request_seconds",
        "Time from request start to response, /invocations only.",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    rows = Counter("vintage_rows_scored", "Rows scored.", registry=registry)
    for code in (200, 400, 401, 413, 415, 504):
        requests.labels(str(code))
    rng = random.Random(7)
    # every bound exactly (a bucket counts values <= its bound), values between them and beyond the last
    seconds = [*LATENCY_BUCKETS, 0.0, 1e-6, 30.0] + [rng.uniform(0, 12) ** 3 / 200 for _ in range(500)]
    for i, s in enumerate(seconds):
        status = (200, 200, 200, 400, 401, 503)[i % 6]
        metrics.observe(status, s)
        requests.labels(str(status)).inc()
        latency.observe(s)
        metrics.scored(i % 11)
        rows.inc(i % 11)
    mine = _samples(metrics.render())
    theirs = _samples(generate_latest(registry))
    assert {k: v for k, v in mine.items() if k[0] in {n for n, _ in theirs}} == theirs
    assert mine[("vintage_requests_total", (("status", "503"),))] == len(seconds) // 6
    assert mine[("vintage_request_seconds_bucket", (("le", "+Inf"),))] == len(seconds)
    assert mine[("vintage_request_seconds_count", ())] == len(seconds)


def test_a_fresh_server_shows_the_common_codes_at_zero_and_an_empty_histogram() -> None:
    samples = _samples(Metrics().render())
    assert samples[("vintage_requests_total", (("status", "200"),))] == 0
    assert samples[("vintage_requests_total", (("status", "401"),))] == 0
    assert samples[("vintage_request_seconds_count", ())] == 0
    assert samples[("vintage_request_seconds_sum", ())] == 0
    assert samples[("vintage_rows_scored_total", ())] == 0

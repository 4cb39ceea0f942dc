"""The request metrics: our plain-dict counters export what prometheus_client's own Counter and
Histogram would, for the same observations (names, labels, buckets, counts and sums)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from streamml.modelserver.telemetry import LATENCY_BUCKETS, RequestCollector, Telemetry


def _lines(registry: CollectorRegistry) -> list[str]:
    # *_created holds creation timestamps, which differ by construction
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


def test_request_metrics_match_prometheus_client() -> None:
    ours = Telemetry.__new__(Telemetry)  # the request metrics only: no model service needed
    ours.requests, ours.latencies = {}, {}
    reference = CollectorRegistry()
    counter = Counter(
        "streamml_http_requests", "HTTP requests", ["method", "route", "status"], registry=reference
    )
    histogram = Histogram(
        "streamml_http_request_duration_seconds",
        "HTTP request latency",
        ["method", "route"],
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    rnd = random.Random(7)
    # bucket bounds exactly, values between them, and beyond the largest bound
    values = [*LATENCY_BUCKETS, 0.0, 0.0007, 0.003, 0.3, 7.5]
    for _ in range(3_000):
        method = rnd.choice(["GET", "POST"])
        route = rnd.choice(["/api/learn/", "/api/predict/", "unmatched"])
        status = rnd.choice([200, 201, 400, 401, 503])
        seconds = rnd.choice(values) if rnd.random() < 0.5 else rnd.random() / 20
        ours.observe(method, route, status, seconds)
        counter.labels(method, route, str(status)).inc()
        histogram.labels(method, route).observe(seconds)
    exported = CollectorRegistry()
    exported.register(RequestCollector(ours))
    expected = _lines(reference)
    assert any(line.startswith("streamml_http_requests_total{") for line in expected)
    assert _lines(exported) == expected

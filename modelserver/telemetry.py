"""Prometheus metrics: requests, latencies, and per-model samples read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streamml.modelserver.service import ModelService

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class ModelCollector:
    """Per-model counts straight from the registry: no per-request cost on the learn path."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        learned = CounterMetricFamily(
            "streamml_samples_learned", "samples learned per model", labels=["model"]
        )
        predicted = CounterMetricFamily(
            "streamml_predictions", "predictions served per model", labels=["model"]
        )
        for name, state in self.service.registry.models.items():
            learned.add_metric([name], state.learn_stats.n_calls)
            predicted.add_metric([name], state.predict_stats.n_calls)
        yield learned
        yield predicted
        yield GaugeMetricFamily(
            "streamml_models", "models served", value=len(self.service.registry.models)
        )
        yield GaugeMetricFamily(
            "streamml_pending_predictions",
            "predictions waiting for a label",
            value=len(self.service.registry.pending),
        )
        yield CounterMetricFamily(
            "streamml_storage_commits",
            "group commits to storage",
            value=self.service.storage.commits,
        )
        yield CounterMetricFamily(
            "streamml_stream_clients_dropped",
            "slow event-stream clients dropped",
            value=self.service.hub.dropped_total,
        )


class Telemetry:
    def __init__(self, service: ModelService) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "streamml_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "streamml_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(ModelCollector(service))
        # .labels() is a dict lookup plus locking; cache the children per label set
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(method, route, str(status))
        counter.inc()
        hkey = (method, route)
        histogram = self._histograms.get(hkey)
        if histogram is None:
            histogram = self._histograms[hkey] = self.latency.labels(method, route)
        histogram.observe(seconds)

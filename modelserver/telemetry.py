"""Prometheus metrics: requests, latencies, and per-model samples read at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

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
        yield from self._damage()
        yield CounterMetricFamily(
            "streamml_storage_commits",
            "group commits to storage",
            value=self.service.storage.commits,
        )
        yield GaugeMetricFamily(
            "streamml_pending_prediction_bytes",
            "estimated bytes of predictions waiting for a label",
            value=self.service.registry.pending.bytes,
        )
        yield CounterMetricFamily(
            "streamml_stream_events_skipped",
            "events coalesced into a count for stream clients whose buffer was full",
            value=self.service.hub.skipped_total,
        )
        yield GaugeMetricFamily(
            "streamml_busy_models",
            "models with work running or waiting on their own thread",
            value=len(self.service.workers.busy_models()),
        )
        yield CounterMetricFamily(
            "streamml_stream_clients_dropped",
            "slow event-stream clients dropped",
            value=self.service.hub.dropped_total,
        )

    def _damage(self) -> Iterator[Any]:
        """What start-up could not load: quarantined models, skipped log rows, data-dir losses."""
        quarantined = self.service.registry.quarantined
        report = self.service.report
        yield GaugeMetricFamily(
            "streamml_models_quarantined", "stored models held out (damaged)", len(quarantined)
        )
        each = GaugeMetricFamily(
            "streamml_model_quarantined",
            "1 for each quarantined model, by what is damaged",
            labels=["model", "kind"],
        )
        for name, quarantine in quarantined.items():
            each.add_metric([name, quarantine.kind], 1)
        yield each
        yield GaugeMetricFamily(
            "streamml_startup_log_rows_replayed",
            "learn-log rows replayed at start-up",
            value=report.replayed_rows,
        )
        skipped = GaugeMetricFamily(
            "streamml_startup_log_rows_skipped",
            "learn-log rows not replayed at start-up, by why",
            labels=["reason"],
        )
        for kind, count in sorted(report.skipped_rows.items()):
            skipped.add_metric([kind], count)
        yield skipped
        yield GaugeMetricFamily(
            "streamml_data_dir_findings",
            "problems of the data dir found at start-up (e.g. a WAL that lost commits)",
            value=len(report.findings),
        )


class Telemetry:
    """Request counts and latencies as plain dicts on the hot path, exported at scrape time with
    the names and labels prometheus_client's Counter/Histogram gave them (their per-request
    locking and label handling were ~2% of a request). Only the event loop writes them."""

    def __init__(self, service: ModelService) -> None:
        self.registry = CollectorRegistry()
        self.requests: dict[tuple[str, str, int], int] = {}
        #: (method, route) -> per-bucket counts (the last one is +Inf) and the sum, in seconds
        self.latencies: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self.registry.register(RequestCollector(self))
        self.registry.register(ModelCollector(service))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hkey = (method, route)
        histogram = self.latencies.get(hkey)
        if histogram is None:
            histogram = self.latencies[hkey] = ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
        histogram[0][bisect_left(LATENCY_BUCKETS, seconds)] += 1
        histogram[1][0] += seconds


class RequestCollector:
    """``streamml_http_requests_total`` and ``streamml_http_request_duration_seconds``."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "streamml_http_requests", "HTTP requests", labels=["method", "route", "status"]
        )
        for (method, route, status), count in list(self.telemetry.requests.items()):
            requests.add_metric([method, route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "streamml_http_request_duration_seconds",
            "HTTP request latency",
            labels=["method", "route"],
        )
        # repr is how prometheus_client writes these bounds (the unit test compares the output)
        bounds = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
        for (method, route), (counts, total) in list(self.telemetry.latencies.items()):
            buckets = list(zip(bounds, accumulate(counts), strict=True))
            latency.add_metric([method, route], buckets=buckets, sum_value=total[0])
        yield latency

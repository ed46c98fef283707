"""Prometheus metrics (prometheus-client): requests and latency by endpoint and status,
predictions by decision, the model being served, and the prediction log's backlog.

With several uvicorn workers, ``python -m serving`` sets PROMETHEUS_MULTIPROC_DIR so
every worker's numbers add up in /metrics, whichever worker answers the scrape.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Sub-millisecond buckets: a single prediction takes about one millisecond.
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ServiceMetrics:
    """The service's metrics, on a registry of its own (one per app, so tests stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["method", "endpoint", "status"]
        self.requests = Counter(
            "http_requests_total", "HTTP requests", labels, registry=self.registry
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer, from request start to the last byte sent",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "fraud_predictions_total",
            "Transactions scored, by decision",
            ["decision"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "fraud_model_info",
            "The model being served (value 1)",
            ["name", "version", "alias", "scoring"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.model_loaded = Gauge(
            "fraud_model_loaded",
            "1 when a model is loaded and /ready answers 200",
            registry=self.registry,
            multiprocess_mode="min",
        )
        self.log_pending = Gauge(
            "fraud_prediction_log_pending_rows",
            "Predictions queued for the log but not yet written",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.log_failures = Gauge(
            "fraud_prediction_log_write_failures",
            "Failed (and retried) writes to the prediction log since start",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def count_predictions(self, fraud: int, legit: int) -> None:
        if fraud:
            self.predictions.labels("fraud").inc(fraud)
        if legit:
            self.predictions.labels("legit").inc(legit)

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROCESS_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy): counts and times requests
    by route template, so /predict/batch is one series whatever the body."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Label lookups cost more than the increments: keep each series' child.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            key = (scope["method"], _endpoint(scope, status), status)
            series = self._series.get(key)
            if series is None:
                labels = (key[0], key[1], str(status))
                series = (
                    self.metrics.requests.labels(*labels),
                    self.metrics.latency.labels(*labels),
                )
                self._series[key] = series
            series[0].inc()
            series[1].observe(time.perf_counter() - started)


def _endpoint(scope: Scope, status: int) -> str:
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    # /openapi.json is a plain route without a template in the scope; unknown paths (404)
    # share one label so a scanner cannot create a series per URL.
    if status == 404:
        return "unmatched"
    if "app_root_path" in scope:
        # Inside a mount (the docs pages' files): one label for the mount, or a POST to
        # /static-offline-docs/<anything> (405) would make a series per URL.
        return f"{scope['root_path'].removeprefix(scope['app_root_path'])}/{{path}}"
    return str(scope["path"])

"""Prometheus metrics of one app (its own registry, so several apps can share a process)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class ServingMetrics:
    """Request counts and latencies, decisions by source, fallbacks, shadow agreement, versions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "taktline_requests", "HTTP requests.", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "taktline_request_latency_seconds",
            "HTTP request latency.",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "taktline_decisions", "Decisions served, by source.", ["policy", "source"], registry=r
        )
        self.fallbacks = Counter(
            "taktline_fallbacks",
            "Decisions served by the fallback rule instead of the policy.",
            ["policy", "reason", "rule"],
            registry=r,
        )
        self.shadow = Counter(
            "taktline_shadow_decisions",
            "Shadow-mode decisions, by agreement of policy and rule.",
            ["policy", "agrees"],
            registry=r,
        )
        self.actions = Counter(
            "taktline_act_observations", "Observations answered by /act.", ["policy"], registry=r
        )
        self.model_version = Gauge(
            "taktline_model_version",
            "Served model version (the value is the version number; 0 when not numeric).",
            ["policy", "source"],
            registry=r,
        )
        self.reloads = Counter(
            "taktline_reloads", "Reload attempts.", ["policy", "outcome"], registry=r
        )
        self._decided: dict[tuple[str, str], Any] = {}
        self._served: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def decided(self, policy: str, source: str) -> None:
        """Count one decision of ``policy`` by ``source`` (``policy``, ``fallback``, ...).

        The series is looked up once: ``labels()`` takes a lock and builds a key each call,
        which on the ``/decide`` hot path costs as much as the count itself.
        """
        child = self._decided.get((policy, source))
        if child is None:
            child = self._decided[(policy, source)] = self.decisions.labels(policy, source)
        child.inc()

    def served(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and record its latency (by route template).

        What the routes' middleware and the fast path both call; each series is looked up
        once (see :meth:`decided`).
        """
        children = self._served.get((route, method, status))
        if children is None:
            children = self._served[(route, method, status)] = (
                self.latency.labels(route, method),
                self.requests.labels(route, method, str(status)),
            )
        children[0].observe(seconds)
        children[1].inc()

    def set_version(self, policy: str, version: str | None, source: str | None) -> None:
        """Record the version now served for ``policy``."""
        for src in ("registry", "cache", "path"):
            self.model_version.labels(policy, src).set(float("nan"))
        if version is not None and source is not None:
            value = float(version) if version.isdigit() else 0.0
            self.model_version.labels(policy, source).set(value)


class MetricsMiddleware:
    """ASGI middleware counting requests and timing them by route template."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.served(path, method, status, time.perf_counter() - start)

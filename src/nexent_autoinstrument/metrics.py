"""The LLM metrics of the contract, defined once and recorded once per finished call.

Prometheus exposition comes from ``prometheus_client`` (which also gives multiprocess mode);
when an OpenTelemetry metrics exporter is configured, the same values are also recorded on
OpenTelemetry instruments of the same names and buckets.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from . import conventions as names
from .guard import export_warnings, internal_errors

OTHER = "other"


class BoundedLabel:
    """Lets the first ``cap`` distinct values through and folds the rest into ``other``."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        value = (value or "unknown")[:128]
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._cap:
                self._seen.add(value)
                return value
        return OTHER


class _InternalErrorCollector(Collector):
    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily("nexent_autoinstrument_internal_errors",
                                     "Failures inside the agent, swallowed to protect the app", labels=["where"])
        for where, count in sorted(internal_errors.items()):
            family.add_metric([where], count)
        yield family
        yield CounterMetricFamily("nexent_autoinstrument_export_warnings",
                                  "Exporter warnings (an unreachable collector); only the first is logged",
                                  value=export_warnings["total"])


class LLMMetrics:
    """Records one finished LLM call into every instrument of the contract."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, meter: Any = None,
                 max_model_labels: int = 100) -> None:
        self.model_label = BoundedLabel(max_model_labels)
        self.error_label = BoundedLabel(64)
        self._prom: dict[str, Any] = {}
        for spec in names.METRICS:
            if spec.kind == "histogram":
                self._prom[spec.name] = Histogram(spec.name, spec.description, spec.labels,
                                                  buckets=spec.buckets, registry=registry)
            else:
                self._prom[spec.name] = Counter(spec.name, spec.description, spec.labels, registry=registry)
        if registry is not None:
            registry.register(_InternalErrorCollector())
        self._otel: dict[str, Any] = {}
        if meter is not None:
            for spec in names.METRICS:
                if spec.kind == "histogram":
                    self._otel[spec.name] = meter.create_histogram(
                        spec.name, unit=spec.unit, description=spec.description,
                        explicit_bucket_boundaries_advisory=list(spec.buckets))
                else:
                    self._otel[spec.name] = meter.create_counter(spec.name, unit=spec.unit,
                                                                 description=spec.description)

    def _observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        self._prom[name].labels(**labels).observe(value)
        otel = self._otel.get(name)
        if otel is not None:
            otel.record(value, labels)

    def _add(self, name: str, value: float, labels: dict[str, str]) -> None:
        self._prom[name].labels(**labels).inc(value)
        otel = self._otel.get(name)
        if otel is not None:
            otel.add(value, labels)

    def record(self, *, model: str, operation: str, outcome: str, duration: float,
               ttft: float | None = None, rate: float | None = None, gaps: Sequence[float] = (),
               input_tokens: int | None = None, output_tokens: int | None = None,
               error_type: str | None = None, slow_reasons: Iterable[str] = ()) -> None:
        """Record a finished call. Values that were not measured are passed as None."""
        base = {"model": self.model_label(model), "operation": operation}
        self._observe(names.REQUEST_DURATION, duration, {**base, "outcome": outcome})
        if ttft is not None:
            self._observe(names.TTFT, ttft, base)
        if rate is not None:
            self._observe(names.TOKEN_RATE, rate, base)
        if gaps:
            itl = self._prom[names.INTER_TOKEN_LATENCY].labels(**base)
            itl_otel = self._otel.get(names.INTER_TOKEN_LATENCY)
            for gap in gaps:
                itl.observe(gap)
                if itl_otel is not None:
                    itl_otel.record(gap, base)
        if input_tokens:
            self._add(names.TOTAL_TOKENS, input_tokens, {**base, "type": "input"})
        if output_tokens:
            self._add(names.TOTAL_TOKENS, output_tokens, {**base, "type": "output"})
        if error_type is not None:
            self._add(names.ERROR_COUNT, 1, {**base, "error_type": self.error_label(error_type)})
        for reason in slow_reasons:
            self._add(names.SLOW_REQUESTS, 1, {**base, "reason": reason})


class HTTPMetrics:
    """``http.client.request.duration`` for every HTTP request the httpx layer traces."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, meter: Any = None) -> None:
        self.server_label = BoundedLabel(100)
        self._prom = Histogram(names.HTTP_CLIENT_DURATION_PROMETHEUS, "Duration of HTTP client requests, to the end "
                               "of the body", ("http_request_method", "http_response_status_code", "server_address"),
                               buckets=names.HTTP_BUCKETS, registry=registry)
        self._otel = None if meter is None else meter.create_histogram(
            names.HTTP_CLIENT_DURATION, unit="s", description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(names.HTTP_BUCKETS))

    def record(self, duration: float, attributes: dict[str, Any]) -> None:
        """Record one request; ``attributes`` use the semantic-convention names."""
        self._prom.labels(attributes.get("http.request.method", "_OTHER"),
                          str(attributes.get("http.response.status_code", "")),
                          self.server_label(attributes.get("server.address"))).observe(duration)
        if self._otel is not None:
            self._otel.record(duration, attributes)


def exposition() -> tuple[bytes, str]:
    """The /metrics payload and its content type; sums over workers in multiprocess mode."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

"""The LLM metrics, defined once and recorded once per finished call.

Prometheus exposition comes from ``prometheus_client`` (which also gives multiprocess mode).
When an OpenTelemetry metrics exporter is configured, the same values are recorded on
OpenTelemetry instruments of the same names and buckets, and on the GenAI semantic-convention
client metrics (``gen_ai.client.*``) with the attributes the conventions ask for.

The gaps between tokens are many per call. They are counted into buckets once, at the end of
the call, from the sorted gaps, and added to the histograms in one step: to prometheus_client's
bucket values directly, and to the OpenTelemetry side through ``BulkHistograms``, which the
pipeline adds to each metrics export (the OpenTelemetry SDK records one value per call of
``record``, about 9 µs each).
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from . import conventions as names
from .guard import export_warnings, internal_errors, report_internal_error

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


def bucket_counts(ordered: Sequence[float], bounds: Sequence[float]) -> list[int]:
    """How many of the ascending values fall in each bucket ``(previous bound, bound]``, plus
    the overflow bucket: one binary search per bound, not one step per value."""
    counts, below, total = [], 0, len(ordered)
    for bound in bounds:
        if below == total:  # (every value counted: the rest of the buckets are empty)
            counts.append(0)
            continue
        upto = bisect_right(ordered, bound, below)
        counts.append(upto - below)
        below = upto
    counts.append(total - below)
    return counts


def add_observations(child: Any, ordered: Sequence[float]) -> None:
    """Add many observations to a prometheus_client histogram child at once. Its bucket values
    are per bucket (cumulated at exposition), so each non-empty bucket is one ``inc``; works in
    multiprocess mode too. Falls back to ``observe`` per value if the client changes inside."""
    buckets, total = getattr(child, "_buckets", None), getattr(child, "_sum", None)
    bounds = getattr(child, "_upper_bounds", None)
    if buckets is None or total is None or bounds is None or len(bounds) != len(buckets):
        for value in ordered:
            child.observe(value)
        return
    for value, count in zip(buckets, bucket_counts(ordered, bounds[:-1]), strict=True):
        if count:
            value.inc(count)
    total.inc(sum(ordered))


class BulkHistogram(NamedTuple):
    """One histogram fed many values at once: cumulative points per attribute set, each
    ``[count, sum, min, max, bucket counts]``."""

    name: str
    unit: str
    description: str
    bounds: tuple[float, ...]
    points: dict[frozenset[tuple[str, Any]], list[Any]]


class BulkHistograms:
    """OpenTelemetry histograms fed many values at once, turned into data points by the
    pipeline at each metrics export."""

    def __init__(self) -> None:
        self.start_ns = time.time_ns()
        self._lock = threading.Lock()
        self._histograms: dict[str, BulkHistogram] = {}

    def define(self, name: str, unit: str, description: str, bounds: tuple[float, ...]) -> None:
        """Declare a histogram (once)."""
        self._histograms[name] = BulkHistogram(name, unit, description, bounds, {})

    def add(self, name: str, ordered: Sequence[float], attributes: dict[str, Any]) -> None:
        """Add the ascending values ``ordered`` to histogram ``name`` for ``attributes``."""
        histogram = self._histograms[name]
        counts = bucket_counts(ordered, histogram.bounds)
        key = frozenset(attributes.items())
        with self._lock:
            point = histogram.points.get(key)
            if point is None:
                histogram.points[key] = [len(ordered), sum(ordered), ordered[0], ordered[-1], counts]
                return
            point[0] += len(ordered)
            point[1] += sum(ordered)
            point[2] = min(point[2], ordered[0])
            point[3] = max(point[3], ordered[-1])
            point[4] = [a + b for a, b in zip(point[4], counts, strict=True)]

    def snapshot(self) -> list[BulkHistogram]:
        """A copy of every histogram with its points, for an export."""
        with self._lock:
            return [h._replace(points={k: [*v[:4], list(v[4])] for k, v in h.points.items()})
                    for h in self._histograms.values()]


class LLMMetrics:
    """Records one finished LLM call into every instrument."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, meter: Any = None,
                 max_model_labels: int = 100, bulk: BulkHistograms | None = None) -> None:
        self.model_label = BoundedLabel(max_model_labels)
        self.error_label = BoundedLabel(64)
        self._prom: dict[str, Any] = {}
        self._label_names = {spec.name: spec.labels for spec in names.METRICS}
        self._children: dict[tuple[str, ...], Any] = {}
        for spec in names.METRICS:
            if spec.kind == "histogram":
                self._prom[spec.name] = Histogram(spec.name, spec.description, spec.labels,
                                                  buckets=spec.buckets, registry=registry)
            else:
                self._prom[spec.name] = Counter(spec.name, spec.description, spec.labels, registry=registry)
        if registry is not None:
            registry.register(_InternalErrorCollector())
        self._otel: dict[str, Any] = {}
        #: What OpenTelemetry gets in bulk (gaps); None without a meter.
        self.bulk: BulkHistograms | None = None
        if meter is not None:
            self.bulk = bulk or BulkHistograms()
            for spec in (*names.METRICS, *names.GENAI_METRICS):
                if spec.name in names.BULK_METRICS:
                    self.bulk.define(spec.name, spec.unit, spec.description, spec.buckets)
                elif spec.kind == "histogram":
                    self._otel[spec.name] = meter.create_histogram(
                        spec.name, unit=spec.unit, description=spec.description,
                        explicit_bucket_boundaries_advisory=list(spec.buckets))
                else:
                    self._otel[spec.name] = meter.create_counter(spec.name, unit=spec.unit,
                                                                 description=spec.description)

    def _child(self, name: str, *values: str) -> Any:
        """The Prometheus child of metric ``name`` for label ``values`` (in the metric's label
        order). Cached: ``labels()`` checks and converts its arguments again on every call."""
        key = (name, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._prom[name].labels(*values)
        return child

    def _observe(self, name: str, value: float, *values: str) -> None:
        self._child(name, *values).observe(value)
        otel = self._otel.get(name)
        if otel is not None:
            otel.record(value, dict(zip(self._label_names[name], values, strict=True)))

    def _add(self, name: str, value: float, *values: str) -> None:
        self._child(name, *values).inc(value)
        otel = self._otel.get(name)
        if otel is not None:
            otel.add(value, dict(zip(self._label_names[name], values, strict=True)))

    def record(self, *, model: str, operation: str, outcome: str, duration: float,
               ttft: float | None = None, rate: float | None = None, gaps: Sequence[float] = (),
               gaps_sorted: bool = False, input_tokens: int | None = None, output_tokens: int | None = None,
               error_type: str | None = None, slow_reasons: Iterable[str] = (),
               time_to_request_sent: float | None = None, provider: str = "openai",
               response_model: str | None = None, server: tuple[str, int] | None = None,
               stream: bool = False) -> None:
        """Record a finished call. Values that were not measured are passed as None."""
        model = self.model_label(model)
        self._observe(names.REQUEST_DURATION, duration, model, operation, outcome)
        if ttft is not None:
            self._observe(names.TTFT, ttft, model, operation)
        if rate is not None:
            self._observe(names.TOKEN_RATE, rate, model, operation)
        if time_to_request_sent is not None:
            self._observe(names.TIME_TO_REQUEST_SENT, time_to_request_sent, model, operation)
        ordered = gaps if gaps_sorted else sorted(gaps)
        if ordered:
            add_observations(self._child(names.INTER_TOKEN_LATENCY, model, operation), ordered)
        if input_tokens:
            self._add(names.TOTAL_TOKENS, input_tokens, model, operation, "input")
        if output_tokens:
            self._add(names.TOTAL_TOKENS, output_tokens, model, operation, "output")
        if error_type is not None:
            self._add(names.ERROR_COUNT, 1, model, operation, self.error_label(error_type))
        for reason in slow_reasons:
            self._add(names.SLOW_REQUESTS, 1, model, operation, reason)
        if self.bulk is not None:
            try:
                self._record_genai({"model": model, "operation": operation}, ordered, duration, ttft,
                                   input_tokens, output_tokens, error_type, provider, response_model, server, stream)
            except Exception as exc:
                report_internal_error("metrics.genai", exc)

    def _record_genai(self, base: dict[str, str], ordered: Sequence[float], duration: float, ttft: float | None,
                      input_tokens: int | None, output_tokens: int | None, error_type: str | None,
                      provider: str, response_model: str | None, server: tuple[str, int] | None,
                      stream: bool) -> None:
        """The GenAI semantic-convention client metrics, with the attributes they require."""
        assert self.bulk is not None
        if ordered:
            self.bulk.add(names.INTER_TOKEN_LATENCY, ordered, base)
        attributes: dict[str, Any] = {names.GEN_AI_OPERATION: base["operation"], names.GEN_AI_PROVIDER: provider,
                                      names.GEN_AI_REQUEST_MODEL: base["model"]}
        if response_model:
            attributes[names.GEN_AI_RESPONSE_MODEL] = self.model_label(response_model)
        if server is not None:
            attributes[names.SERVER_ADDRESS], attributes[names.SERVER_PORT] = server
        if error_type is not None:
            attributes[names.ERROR_TYPE] = self.error_label(error_type)
        self._otel[names.GENAI_DURATION].record(duration, attributes)
        for kind, count in (("input", input_tokens), ("output", output_tokens)):
            if count:
                self._otel[names.GENAI_TOKEN_USAGE].record(count, {**attributes, names.GEN_AI_TOKEN_TYPE: kind})
        if stream and ttft is not None:
            self._otel[names.GENAI_TIME_TO_FIRST_CHUNK].record(ttft, attributes)
        if stream and ordered:
            self.bulk.add(names.GENAI_TIME_PER_OUTPUT_CHUNK, ordered, attributes)


class HTTPMetrics:
    """``http.client.request.duration`` for every HTTP request the httpx layer traces."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, meter: Any = None) -> None:
        self.server_label = BoundedLabel(100)
        self._children: dict[tuple[str, str, str], Any] = {}
        self._prom = Histogram(names.HTTP_CLIENT_DURATION_PROMETHEUS, "Duration of HTTP client requests, to the end "
                               "of the body", ("http_request_method", "http_response_status_code", "server_address"),
                               buckets=names.HTTP_BUCKETS, registry=registry)
        self._otel = None if meter is None else meter.create_histogram(
            names.HTTP_CLIENT_DURATION, unit="s", description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(names.HTTP_BUCKETS))

    def record(self, duration: float, attributes: dict[str, Any]) -> None:
        """Record one request; ``attributes`` use the semantic-convention names."""
        key = (attributes.get("http.request.method", "_OTHER"), str(attributes.get("http.response.status_code", "")),
               self.server_label(attributes.get("server.address")))
        child = self._children.get(key)
        if child is None:  # (``labels()`` checks and converts its arguments on every call)
            child = self._children[key] = self._prom.labels(*key)
        child.observe(duration)
        if self._otel is not None:
            self._otel.record(duration, attributes)


def exposition() -> tuple[bytes, str]:
    """The /metrics payload and its content type; sums over workers in multiprocess mode. The
    agent's instruments are made first if no call has needed them yet, so they are always listed."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from . import bootstrap

    telemetry = bootstrap.current_telemetry()
    if telemetry is not None:
        telemetry.prepare()

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

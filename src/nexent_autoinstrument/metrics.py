"""The LLM metrics, defined once and recorded once per finished call.

Prometheus exposition comes from ``prometheus_client`` (which also gives multiprocess mode).
When an OpenTelemetry metrics exporter is configured, the same values are aggregated for
OpenTelemetry (``OTelPoints``) under the same names and buckets, with the GenAI
semantic-convention client metrics (``gen_ai.client.*``) and the attributes the conventions ask
for, and each metrics export carries them as data points.

The gaps between tokens are many per call. They are counted into buckets once, at the end of
the call, from the sorted gaps, and added to the histograms in one step: to prometheus_client's
bucket values directly, and to ``OTelPoints``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.samples import Exemplar as PrometheusExemplar

from . import conventions as names
from .guard import export_warnings, internal_errors, report_internal_error

OTHER = "other"

#: How many distinct values each label (Prometheus) and attribute (OpenTelemetry) keeps; later
#: values fold into one more, ``other``. Each has its own budget, so that a dimension an outsider
#: fills (a server's response models, a caller's hosts) crowds out no other. A number (a port, a
#: status code) beyond its budget is left out of the OpenTelemetry attributes rather than turned
#: into a string. ``http.request.method`` needs no budget: the conventions' known methods
#: (``conventions.HTTP_METHODS``) and ``_OTHER``. What the agent itself decides (outcome, token
#: type, slow reason) takes a few fixed values.
BUDGETS: dict[str, int] = {
    # the request model (``model``, gen_ai.request.model): the caller's (LLM_MAX_MODEL_LABELS, of this default)
    "model": 100,
    # gen_ai.response.model: whatever the server answers; as many as request models (LLM_MAX_MODEL_LABELS
    # too), but its own: a server that names a new model in each answer leaves the request models theirs
    "response_model": 100,
    # an LLM call's error_type / error.type: exception names and the error codes a server sends
    "error_type": 64,
    # ``operation`` / gen_ai.operation.name, gen_ai.provider.name: any string in the manual API
    "operation": 20,
    "provider": 20,
    # server_address / server.address: the host of the URL, which the caller (or its settings) chooses
    "server_address": 100,
    # server.port, counted as (address, port) pairs: a port beyond it is left out, its address stays
    "server_port": 100,
    # http_response_status_code / http.response.status_code: any three-digit number a server answers
    "http_status_code": 20,
    # an HTTP request's error.type: a status code from 400, or the class name of what the transport raised
    "http_error_type": 64,
}


def _text(value: str | None) -> str:
    """A text label: ``unknown`` for nothing, cut to 128 characters (the same string if shorter)."""
    return (value or "unknown")[:128]


class BoundedLabel:
    """Lets the first ``cap`` distinct values through and folds the rest into ``other``.

    Lock-free, and called from any thread (the caller's, the agent's): a value seen before costs
    one set lookup; a new one takes a ticket, and only the first ``cap`` tickets let their value
    in. ``next`` on an ``itertools.count`` hands out each ticket once (atomic under the GIL, and
    by compare-and-swap on free-threaded builds, CPython >= 3.13), so at most ``cap`` values ever
    pass, under any race. Two threads bringing the same new value at once both take a ticket:
    the budget then ends a value short, never over. A folded value is not remembered (memory
    stays ``cap`` values); it costs a lookup and a ticket each time."""

    __slots__ = ("_seen", "_tickets", "cap")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: set[Hashable] = set()
        self._tickets = itertools.count()

    def __call__(self, value: str | None) -> str:
        """The label for text ``value``: itself (``unknown`` if empty, cut to 128 characters), or ``other``."""
        value = (value or "unknown")[:128]  # (as ``_text``, inline: this runs for every label of every call)
        return value if value in self._seen or self.admits(value) else OTHER

    def admits(self, value: Hashable) -> bool:
        """Whether ``value`` has (or now gets) one of the ``cap`` places."""
        seen = self._seen
        if value in seen:
            return True
        if next(self._tickets) < self.cap:
            seen.add(value)
            return True
        return value in seen  # (let in by another thread meanwhile)


class ServerBudget:
    """``server.address`` and ``server.port`` within their budgets: an address beyond its budget is
    ``other``, without a port; a port whose (address, port) pair is beyond its budget is left out."""

    __slots__ = ("addresses", "ports")

    def __init__(self) -> None:
        self.addresses = BoundedLabel(BUDGETS["server_address"])
        self.ports = BoundedLabel(BUDGETS["server_port"])

    def __call__(self, address: str | None, port: int | None) -> tuple[str, int | None]:
        address = _text(address)
        if not self.addresses.admits(address):
            return OTHER, None
        if port is None:
            return address, None
        pair = (address, port)
        return pair if self.ports.admits(pair) else (address, None)


class Exemplar(NamedTuple):
    """A sampled call's span, for its observations to point to: as Prometheus exemplar labels,
    and as ids."""

    labels: dict[str, str]
    trace_id: int
    span_id: int

    @staticmethod
    def of(span: Any) -> Exemplar | None:
        """The exemplar of ``span``; None without a span or when it is not sampled."""
        if span is None:
            return None
        ids = span.get_span_context()
        if not ids.trace_flags.sampled:
            return None
        return Exemplar({"trace_id": format(ids.trace_id, "032x"), "span_id": format(ids.span_id, "016x")},
                        ids.trace_id, ids.span_id)


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


def _parts(child: Any) -> tuple[list[Any], Any, Sequence[float]] | None:
    """A prometheus_client histogram child's bucket values, sum and bounds, as the agent writes
    them directly; None if the client has changed inside."""
    buckets, total = getattr(child, "_buckets", None), getattr(child, "_sum", None)
    bounds = getattr(child, "_upper_bounds", None)
    if buckets is None or total is None or bounds is None or len(bounds) != len(buckets):
        return None
    return buckets, total, bounds


def observe(child: Any, value: float, exemplar: Exemplar | None = None, parts: Any = False) -> None:
    """``child.observe(value, exemplar labels)``, without the client checking again the labels the
    agent made valid (a trace id and a span id) and walking the bounds one by one. ``parts``: the
    child's ``_parts``, if known."""
    if parts is False:
        parts = _parts(child)
    if parts is None or value != value:  # (NaN: the client counts it in no bucket)
        child.observe(value, None if exemplar is None else exemplar.labels)
        return
    buckets, total, bounds = parts
    index = bisect_left(bounds, value)
    buckets[index].inc(1)
    total.inc(value)
    if exemplar is not None:
        buckets[index].set_exemplar(PrometheusExemplar(exemplar.labels, value, time.time()))


def add_observations(child: Any, ordered: Sequence[float], exemplar: Exemplar | None = None) -> None:
    """Add many observations to a prometheus_client histogram child at once. Its bucket values
    are per bucket (cumulated at exposition), so each non-empty bucket is one ``inc``; works in
    multiprocess mode too. Falls back to ``observe`` per value if the client changes inside.
    ``exemplar``: the call's, put on the largest value (the gap a person looks into)."""
    parts = _parts(child)
    if parts is None:
        for index, value in enumerate(ordered, 1):
            child.observe(value, exemplar.labels if exemplar is not None and index == len(ordered) else None)
        return
    buckets, total, bounds = parts
    for value, count in zip(buckets, bucket_counts(ordered, bounds[:-1]), strict=True):
        if count:
            value.inc(count)
    total.inc(sum(ordered))
    if exemplar is not None:
        largest = ordered[-1]
        buckets[bisect_left(bounds, largest)].set_exemplar(
            PrometheusExemplar(exemplar.labels, largest, time.time()))


#: An attribute set as ``OTelPoints`` keys its data points: made once per series and cached.
PointKey = frozenset[tuple[str, Any]]


def point_key(attributes: dict[str, Any]) -> PointKey:
    """The key of the data point of ``attributes``."""
    return frozenset(attributes.items())


class OTelMetric(NamedTuple):
    """One metric the agent aggregates for OpenTelemetry: a histogram (``bounds``) or a monotonic
    sum (``bounds`` None). Its points, by attribute set: a histogram's ``[count, sum, min, max,
    bucket counts, exemplar per bucket]`` (an exemplar ``(value, time ns, trace id, span id)``,
    the latest in its bucket, or None), a sum's ``[value, count]``; cumulative."""

    name: str
    unit: str
    description: str
    bounds: tuple[float, ...] | None
    points: dict[PointKey, list[Any]]


class OTelPoints:
    """The agent's OpenTelemetry metrics, aggregated here and turned into data points at each
    metrics export (``metric_export.WithAgentPoints``). The SDK's instruments clean, hash and
    filter every measurement again (about 6 us each, about ten per call); here a call costs a
    dictionary lookup and a few additions per metric, its attributes made valid and keyed once
    per series. The histograms keep the contract's explicit bounds whatever the exporter's
    default aggregation; ``exemplars`` False (``OTEL_METRICS_EXEMPLAR_FILTER=always_off``) keeps
    none."""

    def __init__(self, exemplars: bool = True) -> None:
        self.start_ns = time.time_ns()
        self.exemplars = exemplars
        self._lock = threading.Lock()
        self._metrics: dict[str, OTelMetric] = {}

    def forget(self) -> None:
        """Start again from nothing, now (in a fork child: the parent's calls are not its own,
        and the parent's lock may have been held when it forked)."""
        self._lock = threading.Lock()
        self.start_ns = time.time_ns()
        for metric in self._metrics.values():
            metric.points.clear()

    def define(self, name: str, unit: str, description: str, bounds: tuple[float, ...] | None = None) -> None:
        """Declare a histogram with ``bounds``, or (None) a monotonic sum; once."""
        with self._lock:  # (an export may be taking a snapshot)
            self._metrics[name] = OTelMetric(name, unit, description, bounds, {})

    def observe(self, name: str, value: float, key: PointKey, exemplar: Exemplar | None = None) -> None:
        """One value into histogram ``name``, for the attribute set ``key``."""
        metric = self._metrics[name]
        assert metric.bounds is not None
        self._update(metric, key, 1, value, value, value, bisect_left(metric.bounds, value), None,
                     exemplar)

    def add(self, name: str, ordered: Sequence[float], key: PointKey, exemplar: Exemplar | None = None) -> None:
        """The ascending values ``ordered`` into histogram ``name`` at once; the largest carries
        ``exemplar``, if given."""
        metric = self._metrics[name]
        assert metric.bounds is not None
        high = ordered[-1]
        self._update(metric, key, len(ordered), sum(ordered), ordered[0], high, bisect_left(metric.bounds, high),
                     bucket_counts(ordered, metric.bounds), exemplar)

    def _update(self, metric: OTelMetric, key: PointKey, count: int, total: float, low: float, high: float,
                index: int, counts: list[int] | None, exemplar: Exemplar | None) -> None:
        """Add ``count`` values to a histogram's point: one, in bucket ``index`` (``counts`` None),
        or as many as ``counts`` has in each bucket; ``exemplar`` goes with ``high``, in bucket
        ``index``."""
        sample = None if exemplar is None or not self.exemplars else (
            high, time.time_ns(), exemplar.trace_id, exemplar.span_id)
        with self._lock:
            point = metric.points.get(key)
            if point is None:
                size = len(metric.bounds or ()) + 1
                point = metric.points[key] = [0, 0.0, low, high, [0] * size, [None] * size]
            point[0] += count
            point[1] += total
            if low < point[2]:
                point[2] = low
            if high > point[3]:
                point[3] = high
            if counts is None:
                point[4][index] += 1
            else:
                point[4] = [a + b for a, b in zip(point[4], counts, strict=True)]
            if sample is not None:
                point[5][index] = sample

    def increase(self, name: str, value: float, key: PointKey) -> None:
        """Add ``value`` to sum ``name`` for the attribute set ``key``."""
        points = self._metrics[name].points
        with self._lock:
            point = points.get(key)
            if point is None:
                points[key] = [value, 1]
            else:
                point[0] += value
                point[1] += 1

    def snapshot(self) -> list[OTelMetric]:
        """A copy of every metric with its points, for an export."""
        with self._lock:
            return [m._replace(points={k: [*v[:4], list(v[4]), list(v[5])] if m.bounds is not None else list(v)
                                       for k, v in m.points.items()})
                    for m in self._metrics.values()]


class LLMMetrics:
    """Records one finished LLM call into every instrument."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, points: OTelPoints | None = None,
                 max_model_labels: int = BUDGETS["model"], service: tuple[str, str] | None = None) -> None:
        """``points``: where the OpenTelemetry metrics go, when an OpenTelemetry metrics exporter
        is configured; ``service``: the (name, version) the spans carry, served as
        ``llm_service_info``."""
        self.model_label = BoundedLabel(max_model_labels)
        self.response_model_label = BoundedLabel(max_model_labels)  # (the size of the request models', its own)
        self.error_label = BoundedLabel(BUDGETS["error_type"])
        self.operation_label = BoundedLabel(BUDGETS["operation"])
        self.provider_label = BoundedLabel(BUDGETS["provider"])
        self.servers = ServerBudget()
        self._prom: dict[str, Any] = {}
        self._label_names = {spec.name: spec.labels for spec in names.METRICS}
        #: (metric, *label values) -> its Prometheus child, its ``_parts`` and its OpenTelemetry point key.
        self._children: dict[tuple[str, ...], tuple[Any, Any, PointKey]] = {}
        #: The bounded GenAI attributes -> the point keys made of them (for the call, for each token type).
        self._genai: dict[tuple[Any, ...], tuple[PointKey, PointKey, PointKey]] = {}
        for spec in names.METRICS:
            if spec.kind == "histogram":
                self._prom[spec.name] = Histogram(spec.name, spec.description, spec.labels,
                                                  buckets=spec.buckets, registry=registry)
            else:
                self._prom[spec.name] = Counter(spec.name, spec.description, spec.labels, registry=registry)
        if registry is not None:
            registry.register(_InternalErrorCollector())
            if service is not None:
                Gauge(names.SERVICE_INFO, "The service.name and service.version on this process's spans (always 1)",
                      ["service_name", "service_version"], registry=registry,
                      multiprocess_mode="max").labels(*service).set(1)
        self.points = points
        if points is not None:
            for spec in (*names.METRICS, *names.GENAI_METRICS):
                points.define(spec.name, spec.unit, spec.description,
                              spec.buckets if spec.kind == "histogram" else None)

    def _series(self, name: str, *values: str) -> tuple[Any, Any, PointKey]:
        """The Prometheus child of metric ``name`` for label ``values`` (in the metric's label
        order), the child's ``_parts``, and the key of the same labels as OpenTelemetry
        attributes. Cached: ``labels()`` checks and converts its arguments again on every call."""
        key = (name, *values)
        series = self._children.get(key)
        if series is None:
            child = self._prom[name].labels(*values)
            series = self._children[key] = (child, _parts(child),
                                            point_key(dict(zip(self._label_names[name], values, strict=True))))
        return series

    def _observe(self, name: str, value: float, *values: str, exemplar: Exemplar | None = None) -> None:
        child, parts, key = self._series(name, *values)
        observe(child, value, exemplar, parts)
        if self.points is not None:
            self.points.observe(name, value, key, exemplar)

    def _add(self, name: str, value: float, *values: str) -> None:
        child, _, key = self._series(name, *values)
        child.inc(value)
        if self.points is not None:
            self.points.increase(name, value, key)

    def record(self, *, model: str, operation: str, outcome: str, duration: float,
               ttft: float | None = None, rate: float | None = None, gaps: Sequence[float] = (),
               gaps_sorted: bool = False, input_tokens: int | None = None, output_tokens: int | None = None,
               error_type: str | None = None, slow_reasons: Iterable[str] = (),
               time_to_request_sent: float | None = None, provider: str = "openai",
               response_model: str | None = None, server: tuple[str, int] | None = None,
               stream: bool = False, cost: float | None = None, span: Any = None) -> None:
        """Record a finished call. Values that were not measured are passed as None. ``cost``:
        USD; ``span``: the call's span, whose ids the latency histograms carry as exemplars when
        it is sampled."""
        model = self.model_label(model)
        operation = self.operation_label(operation)
        error = None if error_type is None else self.error_label(error_type)
        exemplar = Exemplar.of(span)
        self._observe(names.REQUEST_DURATION, duration, model, operation, outcome, exemplar=exemplar)
        if ttft is not None:
            self._observe(names.TTFT, ttft, model, operation, exemplar=exemplar)
        if rate is not None:
            self._observe(names.TOKEN_RATE, rate, model, operation)
        if time_to_request_sent is not None:
            self._observe(names.TIME_TO_REQUEST_SENT, time_to_request_sent, model, operation, exemplar=exemplar)
        ordered = gaps if gaps_sorted else sorted(gaps)
        if ordered:
            add_observations(self._series(names.INTER_TOKEN_LATENCY, model, operation)[0], ordered, exemplar)
        if cost is not None:
            self._add(names.COST, cost, model, self.provider_label(provider))
        if input_tokens:
            self._add(names.TOTAL_TOKENS, input_tokens, model, operation, "input")
        if output_tokens:
            self._add(names.TOTAL_TOKENS, output_tokens, model, operation, "output")
        if error is not None:
            self._add(names.ERROR_COUNT, 1, model, operation, error)
        for reason in slow_reasons:
            self._add(names.SLOW_REQUESTS, 1, model, operation, reason)
        if self.points is not None:
            try:
                self._record_genai(model, operation, ordered, duration, ttft, input_tokens, output_tokens, error,
                                   provider, response_model, server, stream, exemplar)
            except Exception as exc:
                report_internal_error("metrics.genai", exc)

    def _genai_attributes(self, model: str, operation: str, error: str | None, provider: str,
                          response_model: str | None,
                          server: tuple[str, int] | None) -> tuple[PointKey, PointKey, PointKey]:
        """The attributes the GenAI conventions ask for, every value within its budget, as point
        keys: for the call, and for its input and output token counts. Made once per distinct set."""
        key = (model, operation, error, self.provider_label(provider),
               None if not response_model else self.response_model_label(response_model),
               None if server is None else self.servers(*server))
        cached = self._genai.get(key)
        if cached is None:
            _, _, _, provider, response_model, bounded_server = key
            attributes: dict[str, Any] = {names.GEN_AI_OPERATION: operation, names.GEN_AI_PROVIDER: provider,
                                          names.GEN_AI_REQUEST_MODEL: model}
            if response_model is not None:
                attributes[names.GEN_AI_RESPONSE_MODEL] = response_model
            if bounded_server is not None:
                attributes[names.SERVER_ADDRESS], port = bounded_server
                if port is not None:
                    attributes[names.SERVER_PORT] = port
            if error is not None:
                attributes[names.ERROR_TYPE] = error
            cached = self._genai[key] = (point_key(attributes),
                                         point_key({**attributes, names.GEN_AI_TOKEN_TYPE: "input"}),
                                         point_key({**attributes, names.GEN_AI_TOKEN_TYPE: "output"}))
        return cached

    def _record_genai(self, model: str, operation: str, ordered: Sequence[float], duration: float,
                      ttft: float | None, input_tokens: int | None, output_tokens: int | None, error: str | None,
                      provider: str, response_model: str | None, server: tuple[str, int] | None,
                      stream: bool, exemplar: Exemplar | None) -> None:
        """The GenAI semantic-convention client metrics, with the attributes they require."""
        points = self.points
        assert points is not None
        if ordered:
            points.add(names.INTER_TOKEN_LATENCY, ordered, self._series(names.INTER_TOKEN_LATENCY, model, operation)[2],
                       exemplar)
        call, input_key, output_key = self._genai_attributes(model, operation, error, provider, response_model, server)
        points.observe(names.GENAI_DURATION, duration, call, exemplar)
        if input_tokens:
            points.observe(names.GENAI_TOKEN_USAGE, input_tokens, input_key)
        if output_tokens:
            points.observe(names.GENAI_TOKEN_USAGE, output_tokens, output_key)
        if stream and ttft is not None:
            points.observe(names.GENAI_TIME_TO_FIRST_CHUNK, ttft, call, exemplar)
        if stream and ordered:
            points.add(names.GENAI_TIME_PER_OUTPUT_CHUNK, ordered, call, exemplar)


class HTTPMetrics:
    """``http.client.request.duration`` for every HTTP request the httpx layer traces, each
    attribute within its budget (``BUDGETS``); the method one of ``known_methods`` or ``_OTHER``."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, points: OTelPoints | None = None,
                 known_methods: Iterable[str] = names.HTTP_METHODS) -> None:
        self.known_methods = frozenset(known_methods)
        self.servers = ServerBudget()
        self.server_label = self.servers.addresses
        self.status_codes = BoundedLabel(BUDGETS["http_status_code"])
        self.error_label = BoundedLabel(BUDGETS["http_error_type"])
        #: The bounded attributes -> the Prometheus child and the OpenTelemetry point key.
        self._series: dict[tuple[Any, ...], tuple[Any, PointKey]] = {}
        self._prom = Histogram(names.HTTP_CLIENT_DURATION_PROMETHEUS, "Duration of HTTP client requests, to the end "
                               "of the body", ("http_request_method", "http_response_status_code", "server_address"),
                               buckets=names.HTTP_BUCKETS, registry=registry)
        self._points = points
        if points is not None:
            points.define(names.HTTP_CLIENT_DURATION, "s", "Duration of HTTP client requests.", names.HTTP_BUCKETS)

    def record(self, duration: float, attributes: dict[str, Any]) -> None:
        """Record one request; ``attributes`` use the semantic-convention names."""
        method = attributes.get(names.HTTP_REQUEST_METHOD)
        status = attributes.get(names.HTTP_RESPONSE_STATUS_CODE)
        address = attributes.get(names.SERVER_ADDRESS)
        error = attributes.get(names.ERROR_TYPE)
        key = (method if method in self.known_methods else names.HTTP_METHOD_OTHER,
               status if status is None or self.status_codes.admits(status) else OTHER,
               self.servers(address, attributes.get(names.SERVER_PORT)), address is None,
               None if error is None else self.error_label(error))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._new_series(key)
        series[0].observe(duration)
        if self._points is not None:
            self._points.observe(names.HTTP_CLIENT_DURATION, duration, series[1])

    def _new_series(self, key: tuple[Any, ...]) -> tuple[Any, PointKey]:
        method, status, (address, port), no_address, error = key
        child = self._prom.labels(method, "" if status is None else str(status), address)
        attributes: dict[str, Any] = {names.HTTP_REQUEST_METHOD: method}
        if not no_address:
            attributes[names.SERVER_ADDRESS] = address
            if port is not None:
                attributes[names.SERVER_PORT] = port
        if status is not None and status is not OTHER:
            attributes[names.HTTP_RESPONSE_STATUS_CODE] = status
        if error is not None:
            attributes[names.ERROR_TYPE] = error
        return child, point_key(attributes)


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The /metrics payload and its content type for a scraper's ``Accept`` header: OpenMetrics,
    with exemplars, to one that asks for it, else the classic text format. Sums over workers in
    multiprocess mode (where prometheus_client keeps no exemplars). The agent's instruments are
    made first if no call has needed them yet, so they are always listed."""
    from prometheus_client.exposition import choose_encoder

    from . import bootstrap

    telemetry = bootstrap.current_telemetry()
    if telemetry is not None:
        telemetry.prepare()

    encoder, content_type = choose_encoder(accept or "")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return encoder(registry), content_type
    return encoder(REGISTRY), content_type

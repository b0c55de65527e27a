"""Metric exports with the agent's own OpenTelemetry metrics (``metrics.OTelPoints``) in them.

Imported only when an OpenTelemetry metrics exporter is configured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import Counter, Histogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from . import __version__
from .guard import report_internal_error
from .metrics import OTelMetric, OTelPoints

_SDKExemplar: Any
try:
    from opentelemetry.sdk.metrics import Exemplar as _SDKExemplar
except ImportError:  # (SDKs before exemplars: their points have none)
    _SDKExemplar = None
_EXEMPLARS = "exemplars" in HistogramDataPoint.__dataclass_fields__


class WithAgentPoints(MetricExporter):
    """A metric exporter that passes every export on with the agent's own metrics added to it,
    as data points of the agent's instrumentation scope, cumulative or delta as the exporter
    prefers for each kind of instrument. An export with nothing in it is not passed on.
    ``resource``: the process's resource now (a fork child has its own)."""

    def __init__(self, inner: MetricExporter, points: OTelPoints, resource: Callable[[], Resource]) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self._inner = inner
        self._points = points
        self._resource = resource
        preferred = self._preferred_temporality or {}
        self._delta = {kind: preferred.get(instrument, AggregationTemporality.CUMULATIVE)
                       == AggregationTemporality.DELTA for kind, instrument in (("histogram", Histogram),
                                                                               ("sum", Counter))}
        #: A delta export's previous cumulative values, by (metric, attribute set), since ``_since``.
        self._previous: dict[tuple[str, Any], list[Any]] = {}
        self._since = self._previous_ns = points.start_ns

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        try:
            metrics_data = self._with_points(metrics_data)
        except Exception as exc:
            report_internal_error("pipeline.agent_metrics", exc)
        if metrics_data is None:
            return MetricExportResult.SUCCESS
        return self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    def _with_points(self, metrics_data: Any) -> Any:
        now = time.time_ns()
        if self._since != self._points.start_ns:  # (the points started again: ``OTelPoints.forget``)
            self._previous.clear()
            self._since = self._previous_ns = self._points.start_ns
        extra = [data for metric in self._points.snapshot() if (data := self._metric(metric, now)) is not None]
        self._previous_ns = now
        if not extra:
            return metrics_data
        resources = list(metrics_data.resource_metrics) if metrics_data is not None else []
        if not resources:
            resources = [ResourceMetrics(resource=self._resource(), scope_metrics=[], schema_url="")]
        first = resources[0]
        scopes = list(first.scope_metrics)
        ours = next((i for i, s in enumerate(scopes) if s.scope.name == "nexent_autoinstrument"), None)
        if ours is None:
            scopes.append(ScopeMetrics(scope=InstrumentationScope("nexent_autoinstrument", __version__),
                                       metrics=extra, schema_url=""))
        else:
            scope = scopes[ours]
            scopes[ours] = ScopeMetrics(scope=scope.scope, metrics=[*scope.metrics, *extra],
                                        schema_url=scope.schema_url)
        resources[0] = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
        return MetricsData(resource_metrics=resources)

    def _metric(self, metric: OTelMetric, now: int) -> Metric | None:
        """``metric``'s data points since the start (cumulative) or the last export (delta), with
        the exemplars taken since the last export, as the SDK sends each once; None without any."""
        kind = "histogram" if metric.bounds is not None else "sum"
        delta = self._delta[kind]
        start = self._previous_ns if delta else self._points.start_ns
        points: list[Any] = []
        for key, point in metric.points.items():
            if delta:
                before = self._previous.get((metric.name, key))
                self._previous[(metric.name, key)] = point
                if before is not None:
                    point = _less(point, before)
                    if not point[1 if metric.bounds is None else 0]:  # (no measurement since)
                        continue
            attributes = dict(key)
            if metric.bounds is None:
                points.append(NumberDataPoint(attributes=attributes, start_time_unix_nano=start, time_unix_nano=now,
                                              value=point[0], **({"exemplars": []} if _EXEMPLARS else {})))
                continue
            count, total, low, high, buckets, samples = point
            points.append(HistogramDataPoint(
                attributes=attributes, start_time_unix_nano=start, time_unix_nano=now, count=count, sum=total,
                bucket_counts=buckets, explicit_bounds=list(metric.bounds), min=low, max=high,
                **({"exemplars": _exemplars(samples, self._previous_ns)} if _EXEMPLARS else {})))
        if not points:
            return None
        temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
        data = (HistogramData(data_points=points, aggregation_temporality=temporality) if metric.bounds is not None
                else Sum(data_points=points, aggregation_temporality=temporality, is_monotonic=True))
        return Metric(name=metric.name, description=metric.description, unit=metric.unit, data=data)


def _less(point: list[Any], before: list[Any]) -> list[Any]:
    """What a point gained since ``before`` (its min and max, and its exemplars, are its own)."""
    if len(point) == 2:  # a sum: its value and count
        return [point[0] - before[0], point[1] - before[1]]
    return [point[0] - before[0], point[1] - before[1], point[2], point[3],
            [a - b for a, b in zip(point[4], before[4], strict=True)], point[5]]


def _exemplars(samples: list[tuple[float, int, int, int] | None], since: int) -> list[Any]:
    """A point's exemplars taken from ``since`` on, each ``(value, time ns, trace id, span id)``,
    as the SDK's type."""
    if _SDKExemplar is None:
        return []
    return [_SDKExemplar(filtered_attributes=None, value=value, time_unix_nano=at, span_id=span_id, trace_id=trace_id)
            for value, at, trace_id, span_id in filter(None, samples) if at >= since]

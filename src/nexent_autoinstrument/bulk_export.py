"""Metric exports with the histograms the agent feeds in bulk (see ``metrics.BulkHistograms``).

Imported only when an OpenTelemetry metrics exporter is configured.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.sdk.metrics import Histogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from . import __version__
from .guard import report_internal_error
from .metrics import BulkHistograms

_SDKExemplar: Any
try:
    from opentelemetry.sdk.metrics import Exemplar as _SDKExemplar
except ImportError:  # (SDKs before exemplars: their points have none)
    _SDKExemplar = None


class WithBulkHistograms(MetricExporter):
    """A metric exporter that passes every export on with the histograms the agent feeds in
    bulk added to it (the gaps between tokens; see ``metrics.BulkHistograms``), as data points of
    the agent's own instrumentation scope, cumulative or delta as the exporter prefers."""

    def __init__(self, inner: MetricExporter, bulk: BulkHistograms, resource: Resource) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self._inner = inner
        self._bulk = bulk
        self._resource = resource
        self._temporality = (self._preferred_temporality or {}).get(Histogram, AggregationTemporality.CUMULATIVE)
        self._delta = self._temporality == AggregationTemporality.DELTA
        self._previous: dict[tuple[str, Any], list[Any]] = {}
        self._previous_ns = bulk.start_ns

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        try:
            metrics_data = self._with_bulk(metrics_data)
        except Exception as exc:
            report_internal_error("pipeline.bulk_histograms", exc)
        return self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    def _with_bulk(self, metrics_data: Any) -> Any:
        now = time.time_ns()
        start = self._previous_ns if self._delta else self._bulk.start_ns
        extra = []
        for histogram in self._bulk.snapshot():
            points = []
            for key, (count, total, low, high, buckets, sample) in histogram.points.items():
                if self._delta:
                    before = self._previous.get((histogram.name, key))
                    self._previous[(histogram.name, key)] = [count, total, buckets]
                    if before is not None:
                        count, total = count - before[0], total - before[1]
                        buckets = [a - b for a, b in zip(buckets, before[2], strict=True)]
                    if not count:
                        continue
                points.append(HistogramDataPoint(
                    attributes=dict(key), start_time_unix_nano=start, time_unix_nano=now, count=count, sum=total,
                    bucket_counts=buckets, explicit_bounds=list(histogram.bounds), min=low, max=high,
                    **({"exemplars": _exemplars(sample)} if "exemplars" in HistogramDataPoint.__dataclass_fields__
                       else {})))
            if points:
                extra.append(Metric(name=histogram.name, description=histogram.description, unit=histogram.unit,
                                    data=HistogramData(data_points=points, aggregation_temporality=self._temporality)))
        self._previous_ns = now
        if not extra:
            return metrics_data
        resources = list(metrics_data.resource_metrics) if metrics_data is not None else []
        if not resources:
            resources = [ResourceMetrics(resource=self._resource, scope_metrics=[], schema_url="")]
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


def _exemplars(sample: tuple[float, int, int, int] | None) -> list[Any]:
    """The point's exemplar, ``(value, time ns, trace id, span id)``, as the SDK's type."""
    if sample is None or _SDKExemplar is None:
        return []
    value, at, trace_id, span_id = sample
    return [_SDKExemplar(filtered_attributes=None, value=value, time_unix_nano=at, span_id=span_id, trace_id=trace_id)]

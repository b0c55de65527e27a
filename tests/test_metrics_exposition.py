"""The Prometheus exposition names are exactly the contract's, with useful buckets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, examples
from nexent_autoinstrument import conventions, lifecycle


def exposition(harness: Any) -> dict[str, Any]:
    harness.telemetry.metrics.record(model="m", operation="chat", outcome="completed", duration=0.4, ttft=0.1,
                                     rate=50.0, gaps=[0.01, 0.02], input_tokens=3, output_tokens=7,
                                     error_type="RateLimitError", slow_reasons=["duration"],
                                     time_to_request_sent=0.03, cost=0.0001)
    text = generate_latest(harness.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_names_types_and_labels_are_the_contract(harness: Any) -> None:
    families = exposition(harness)
    expected = {
        "llm_time_to_first_token_seconds": ("histogram", {"model", "operation"}),
        "llm_token_generation_rate": ("histogram", {"model", "operation"}),
        "llm_request_duration_seconds": ("histogram", {"model", "operation", "outcome"}),
        "llm_inter_token_latency_seconds": ("histogram", {"model", "operation"}),
        "llm_total_tokens": ("counter", {"model", "operation", "type"}),
        "llm_error_count": ("counter", {"model", "operation", "error_type"}),
        "llm_slow_requests": ("counter", {"model", "operation", "reason"}),
        "llm_cost_usd": ("counter", {"model", "provider"}),
    }
    for name, (kind, labels) in expected.items():
        family = families[name]
        assert family.type == kind
        sample_names = {s.name for s in family.samples}
        if kind == "histogram":
            assert {f"{name}_bucket", f"{name}_sum", f"{name}_count"} <= sample_names
            assert {k for s in family.samples for k in s.labels} == labels | {"le"}
        else:
            assert f"{name}_total" in sample_names
            assert {k for s in family.samples if s.name.endswith("_total") for k in s.labels} == labels
    text = generate_latest(harness.registry).decode()
    assert "_seconds_s_" not in text and "_s_bucket" not in text and "seconds_seconds" not in text


def test_histograms_have_buckets_for_their_quantity(harness: Any) -> None:
    families = exposition(harness)
    bounds = {float(s.labels["le"]) for s in families["llm_time_to_first_token_seconds"].samples
              if s.name.endswith("_bucket")}
    assert {0.01, 0.1, 0.5, 1.0, 2.0, 60.0} <= bounds and len([b for b in bounds if b < 5]) >= 8
    rate_bounds = {float(s.labels["le"]) for s in families["llm_token_generation_rate"].samples
                   if s.name.endswith("_bucket")}
    assert min(rate_bounds) <= 1.0 and max(b for b in rate_bounds if b != float("inf")) >= 1000


def test_the_readme_dashboard_and_alerts_use_the_exposed_names(harness: Any) -> None:
    families = exposition(harness)
    exposed = {f for f in families if f.startswith("llm_") and not f.endswith("_created")}
    assert exposed == {m.name for m in conventions.METRICS} | {conventions.SERVICE_INFO}
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(llm_[a-z_]+?)(?:_total)?` \|", readme, re.MULTILINE))
    assert documented == exposed  # the README's metrics table
    samples = {s.name for f in families.values() for s in f.samples}
    for path in (ROOT / "docker" / "grafana" / "dashboards" / "llm-performance.json",
                 ROOT / "docker" / "prometheus" / "alerts.yml"):
        used = set(re.findall(r"\bllm_[a-z_]+", path.read_text()))
        assert used and used <= samples | set(families), (path.name, used - samples)


def test_tracker_rate_is_decode_rate_not_whole_call(harness: Any, monkeypatch: Any) -> None:
    from nexent_autoinstrument import tracker as tracker_module

    clock = iter([10.0, 12.0, 12.5, 13.0, 13.5, 14.0, 20.0])  # start, 5 tokens 0.5 s apart, end
    monkeypatch.setattr(tracker_module, "clock", lambda: next(clock))
    call = lifecycle.begin(harness.telemetry, "chat", "m", stream=True)
    for _ in range(5):
        call.content()
    call.finish()
    attrs = harness.llm_span().attributes
    assert attrs["llm.time_to_first_token"] == 2.0
    assert attrs["llm.token_generation_rate"] == 2.0  # 4 tokens after the first, over 2 s
    assert attrs["llm.token.offsets"] == "2000000,500000,500000,500000,500000"  # µs: the first, then gaps
    assert attrs["llm.inter_token_latency.p50"] == 0.5
    assert harness.value("llm_request_duration_seconds_sum", model="m", operation="chat",
                         outcome="completed") == 10.0


def test_single_content_chunk_records_no_rate(harness: Any) -> None:
    call = lifecycle.begin(harness.telemetry, "chat", "m", stream=True)
    call.content()
    call.finish()
    assert "llm.token_generation_rate" not in harness.llm_span().attributes
    assert harness.value("llm_token_generation_rate_count", model="m", operation="chat") == 0


def test_finish_is_idempotent(harness: Any) -> None:
    call = lifecycle.begin(harness.telemetry, "chat", "m")
    assert call.finish() is not None
    assert call.finish("abandoned") is None
    lifecycle.end(call, RuntimeError("late"))
    assert len(harness.spans()) == 1
    assert harness.llm_span().attributes["llm.stream.outcome"] == "completed"
    assert harness.value("llm_request_duration_seconds_count", model="m", operation="chat",
                         outcome="completed") == 1


def test_genai_names_are_the_semantic_conventions_own() -> None:
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as attrs
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as metrics

    assert conventions.GENAI_DURATION == metrics.GEN_AI_CLIENT_OPERATION_DURATION
    assert conventions.GENAI_TOKEN_USAGE == metrics.GEN_AI_CLIENT_TOKEN_USAGE
    assert conventions.GENAI_TIME_TO_FIRST_CHUNK == metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK
    assert conventions.GENAI_TIME_PER_OUTPUT_CHUNK == metrics.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK
    assert conventions.GEN_AI_PROVIDER == attrs.GEN_AI_PROVIDER_NAME
    assert conventions.GEN_AI_TOKEN_TYPE == attrs.GEN_AI_TOKEN_TYPE
    assert conventions.GEN_AI_TIME_TO_FIRST_CHUNK == attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK


_values = st.floats(0, 100, allow_nan=False)


@given(st.lists(_values, max_size=50), st.lists(_values, max_size=12, unique=True))
def test_bucket_counts_count_each_value_in_its_bucket(values: list[float], bounds: list[float]) -> None:
    from nexent_autoinstrument.metrics import bucket_counts

    ordered, bounds = sorted(values), sorted(bounds)
    lower = [float("-inf"), *bounds]
    upper = [*bounds, float("inf")]
    expected = [sum(1 for v in values if low < v <= high) for low, high in zip(lower, upper, strict=True)]
    assert bucket_counts(ordered, bounds) == expected


def test_gaps_are_added_in_bulk_exactly_as_one_by_one(harness: Any) -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from nexent_autoinstrument.metrics import add_observations, bucket_counts

    gaps = sorted([0.0005, 0.001, 0.001, 0.004, 0.02, 0.02, 0.5, 3.0, 12.0, 0.0])
    assert bucket_counts(gaps, (0.001, 0.01, 1.0)) == [4, 1, 3, 2]  # (.., 0.001], (.., 0.01], (.., 1], over
    registry = CollectorRegistry()
    bulk = Histogram("bulk", "b", buckets=conventions.GAP_BUCKETS, registry=registry)
    single = Histogram("single", "s", buckets=conventions.GAP_BUCKETS, registry=registry)
    add_observations(bulk, gaps)
    for gap in gaps:
        single.observe(gap)
    exposed = {s.name.replace("bulk", "x").replace("single", "x") + str(sorted(s.labels.items())): []
               for f in registry.collect() for s in f.samples}
    for family in registry.collect():
        for sample in family.samples:
            key = sample.name.replace("bulk", "x").replace("single", "x") + str(sorted(sample.labels.items()))
            exposed[key].append(sample.value)
    assert all(len(set(values)) == 1 for key, values in exposed.items() if "_created" not in key), exposed


@given(st.lists(st.one_of(st.floats(-1, 200, allow_nan=False), st.sampled_from(conventions.SECONDS_BUCKETS),
                          st.just(float("nan"))), max_size=20))
def test_one_observation_written_directly_equals_the_clients_own(values: list[float]) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry, Histogram

    from nexent_autoinstrument.metrics import Exemplar, observe

    registry = CollectorRegistry()
    ours = Histogram("ours", "o", buckets=conventions.SECONDS_BUCKETS, registry=registry)
    theirs = Histogram("theirs", "t", buckets=conventions.SECONDS_BUCKETS, registry=registry)
    exemplar = Exemplar.of(TracerProvider().get_tracer("t").start_span("call"))
    assert exemplar is not None
    for index, value in enumerate(values):
        with_exemplar = exemplar if index % 2 else None
        observe(ours, value, with_exemplar)
        theirs.observe(value, None if with_exemplar is None else with_exemplar.labels)

    def exposed(name: str) -> list[Any]:
        [family] = [f for f in registry.collect() if f.name == name]
        return [(s.name.replace(name, ""), s.labels, repr(s.value),  # (repr: a NaN sum equals itself)
                 None if s.exemplar is None else (s.exemplar.labels, repr(s.exemplar.value)))
                for s in family.samples if not s.name.endswith("_created")]
    assert exposed("ours") == exposed("theirs")


@pytest.mark.parametrize(("limits", "checked"), [
    ({}, False), ({"max_span_attributes": 3}, True), ({"max_span_attribute_length": 2}, True),
    ({"max_span_attribute_length": 8}, True), ({"max_span_attribute_length": 10}, False)])
def test_attributes_set_without_revalidation_equal_the_public_path(limits: dict[str, int], checked: bool) -> None:
    """``checked``: a limit cuts or drops one of them, so the SDK's own path sets them."""
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    from nexent_autoinstrument.report import set_valid_attributes

    provider = TracerProvider(span_limits=SpanLimits(**limits))
    ours, public = provider.get_tracer("t").start_span("a"), provider.get_tracer("t").start_span("b")
    the_end = {"llm.token.offsets": (1, 20, 300), "gen_ai.response.finish_reasons": ("stop", "length"),
               "gen_ai.response.id": "chatcmpl-1", "llm.stream": True, "llm.ttft_seconds": 0.25, "a": 3}
    for span in (ours, public):
        span.set_attributes({"a": 1, "b": 2})
    public_path = ours.set_attributes
    ours.set_attributes = lambda attributes: (checked or pytest.fail("checked again"), public_path(attributes))
    set_valid_attributes(ours, the_end)
    ours.set_attributes = public_path
    public.set_attributes(the_end)
    # also when the attribute count or length limits apply
    assert dict(ours.attributes) == dict(public.attributes)
    assert ours.dropped_attributes == public.dropped_attributes
    ours.end()
    public.end()
    set_valid_attributes(ours, {"late": (1,)})  # an ended span stays as it was
    assert "late" not in ours.attributes


_texts = st.text(max_size=12)
_attribute_values = st.one_of(
    _texts, st.booleans(), st.integers(), st.floats(), st.none(), st.binary(max_size=3),
    st.tuples(_texts, _texts), st.tuples(st.integers(), st.integers()), st.tuples(st.integers(), st.booleans()),
    st.tuples(st.floats(), st.integers()), st.tuples(), st.tuples(st.none()), st.lists(st.integers(), max_size=2),
    st.dictionaries(_texts, st.integers(), max_size=1))


@settings(max_examples=examples(100))
@given(st.dictionaries(st.sampled_from("abcdefgh"), _attribute_values, max_size=8),
       st.dictionaries(st.sampled_from("abcdefgh"), _attribute_values, max_size=8),
       st.one_of(st.none(), st.integers(0, 12)), st.one_of(st.none(), st.integers(1, 10)))
# (always: a name set again, a mixed tuple whose text is over the length limit, a text in a tuple over it)
@example({"a": 1, "b": 2}, {"a": 3}, None, None)
@example({}, {"a": (1, "a text")}, 3, None)
@example({}, {"a": ("a text", "b")}, 3, None)
def test_any_attributes_end_as_the_sdks_own_checks_leave_them(before: dict[str, Any], the_end: dict[str, Any],
                                                             longest: int | None, count: int | None) -> None:
    import logging

    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    from nexent_autoinstrument.report import set_valid_attributes

    logging.getLogger("opentelemetry").setLevel(logging.ERROR)  # (the SDK warns of each value it drops)
    provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=longest, max_span_attributes=count))
    ours, public = provider.get_tracer("t").start_span("a"), provider.get_tracer("t").start_span("b")
    for span in (ours, public):
        span.set_attributes(before)
    set_valid_attributes(ours, the_end)
    public.set_attributes(the_end)
    assert list(ours.attributes.items()) == list(public.attributes.items())  # (in the same order too)
    assert ours.dropped_attributes == public.dropped_attributes


# The agent's own OpenTelemetry aggregation (metrics.OTelPoints), exported, against the SDK's.

_measurements = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.booleans(),
                                   st.one_of(st.floats(0, 100, allow_nan=False),
                                             st.sampled_from(conventions.GENAI_SECONDS_BUCKETS))), max_size=30)


def _sdk_points(measurements: list[tuple[str, bool, float]], delta: bool) -> list[dict[str, Any]]:
    """What the OpenTelemetry SDK exports for ``measurements`` ((attribute value, many values at
    once, value)) on a histogram with the conventions' bounds and on a counter, over two
    collections: the first half, then the rest."""
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

    temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
    reader = InMemoryMetricReader(preferred_temporality={Histogram: temporality, Counter: temporality})
    meter = MeterProvider(metric_readers=[reader]).get_meter("sdk")
    histogram = meter.create_histogram("h", explicit_bucket_boundaries_advisory=list(conventions.GENAI_SECONDS_BUCKETS))
    counter = meter.create_counter("c")
    half = len(measurements) // 2
    exports = []
    for part in (measurements[:half], measurements[half:]):
        for value_of, _, value in part:
            histogram.record(value, {"k": value_of})
            counter.add(value, {"k": value_of})
        exports.append(reader.get_metrics_data())
    return [_points_of(data) for data in exports]


def _points_of(data: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for resource in (data.resource_metrics if data else ()):
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, point.attributes["k"])
                    found[key] = (point.value,) if metric.name == "c" else (
                        point.count, point.sum, point.min, point.max, list(point.bucket_counts))
    return found


@given(_measurements, st.booleans())
@example([("a", False, 0.01), ("a", True, 0.02), ("b", False, 100.0), ("a", False, 0.005)], True)
def test_own_aggregation_exports_what_the_sdk_exports(measurements: list[tuple[str, bool, float]],
                                                      delta: bool) -> None:
    """Histograms (one value at a time, or many at once) and sums, cumulative or delta, exported
    as the OpenTelemetry SDK exports the same measurements (min and max: a delta point's own
    interval's in the SDK, since the start here)."""
    from nexent_autoinstrument.metrics import point_key

    points, export = _exported(delta)
    points.define("h", "s", "h", conventions.GENAI_SECONDS_BUCKETS)
    points.define("c", "1", "c")
    half = len(measurements) // 2
    ours = []
    for part in (measurements[:half], measurements[half:]):
        for value_of, many, value in part:
            key = point_key({"k": value_of})
            if many:
                points.add("h", [value], key)
            else:
                points.observe("h", value, key)
            points.increase("c", value, key)
        ours.append(_points_of(export()))
    theirs = _sdk_points(measurements, delta)
    for mine, sdk in zip(ours, theirs, strict=True):
        assert mine.keys() == sdk.keys()
        for key, point in sdk.items():
            if key[0] == "c":
                assert mine[key][0] == pytest.approx(point[0])
                continue
            count, total, low, high, buckets = mine[key]
            assert (count, buckets) == (point[0], point[4])
            assert total == pytest.approx(point[1])
            assert low <= point[2] and high >= point[3]
            if not delta:
                assert (low, high) == (point[2], point[3])


def test_exemplars_go_to_the_bucket_of_their_value_and_can_be_turned_off() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from nexent_autoinstrument.metric_export import _exemplars
    from nexent_autoinstrument.metrics import Exemplar, OTelPoints, point_key

    exemplar = Exemplar.of(TracerProvider().get_tracer("t").start_span("call"))
    assert exemplar is not None
    key = point_key({"k": "v"})
    for enabled in (True, False):
        points = OTelPoints(exemplars=enabled)
        points.define("h", "s", "h", (1.0, 10.0))
        points.observe("h", 0.5, key, exemplar)
        points.observe("h", 5.0, key, exemplar)
        points.observe("h", 0.7, key, exemplar)
        points.add("h", [0.1, 20.0], key, exemplar)  # (only the largest of many carries one)
        points.observe("h", 3.0, key)
        (metric,) = points.snapshot()
        found = sorted((e.value, e.trace_id, e.span_id) for e in _exemplars(metric.points[key][5], 0))
        ids = exemplar.trace_id, exemplar.span_id
        assert found == ([(0.7, *ids), (5.0, *ids), (20.0, *ids)] if enabled else [])


@pytest.mark.parametrize("delta", [False, True], ids=["cumulative", "delta"])
def test_each_exemplar_is_exported_once(delta: bool) -> None:
    """As the SDK: an exemplar goes out in the export after its measurement, and not again, while
    a cumulative point is sent on at every export."""
    from opentelemetry.sdk.trace import TracerProvider

    from nexent_autoinstrument.metrics import Exemplar, point_key

    exemplar = Exemplar.of(TracerProvider().get_tracer("t").start_span("call"))
    points, export = _exported(delta)
    points.define("h", "s", "h", (1.0, 10.0))
    key = point_key({"k": "v"})

    def exported() -> list[tuple[int, list[float]]]:
        data = export()
        return [(point.count, [e.value for e in point.exemplars])
                for resource in (data.resource_metrics if data else ()) for scope in resource.scope_metrics
                for metric in scope.metrics for point in metric.data.data_points]

    points.observe("h", 5.0, key, exemplar)
    assert exported() == [(1, [5.0])]
    assert exported() == ([] if delta else [(1, [])])
    points.observe("h", 0.5, key)
    assert exported() == [(1 if delta else 2, [])]
    points.observe("h", 7.0, key, exemplar)
    assert exported() == [(1 if delta else 3, [7.0])]


# Budgets: every label and attribute that a caller or a server decides keeps at most its budget
# of distinct values, plus ``other`` (see metrics.BUDGETS).


def _exported(delta: bool = False) -> tuple[Any, Any]:
    """The agent's OpenTelemetry metrics, and a function that exports them (cumulative or delta)
    and returns what the exporter got (None: nothing)."""
    from opentelemetry.sdk.metrics import Counter, Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult
    from opentelemetry.sdk.resources import Resource

    from nexent_autoinstrument.metric_export import WithAgentPoints
    from nexent_autoinstrument.metrics import OTelPoints

    temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE

    class Kept(MetricExporter):
        def __init__(self) -> None:
            super().__init__(preferred_temporality={Histogram: temporality, Counter: temporality})
            self.exports: list[Any] = []

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            self.exports.append(metrics_data)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    points, kept = OTelPoints(), Kept()
    exporter = WithAgentPoints(kept, points, lambda: Resource.create({}))

    def export() -> Any:
        kept.exports.clear()
        exporter.export(None)
        return kept.exports[0] if kept.exports else None
    return points, export


def _otel_sets(read: Any, name: str) -> list[dict[str, Any]]:
    """The attribute sets of OpenTelemetry metric ``name``'s data points, as exported."""
    data = read()
    return [dict(point.attributes) for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics for metric in scope.metrics if metric.name == name
            for point in metric.data.data_points]


def _prom_sets(registry: Any, name: str) -> list[dict[str, str]]:
    """The label sets of Prometheus family ``name``'s series."""
    found = {frozenset((k, v) for k, v in sample.labels.items() if k != "le")
             for family in registry.collect() if family.name == name for sample in family.samples
             if not sample.name.endswith("_created")}
    return [dict(labels) for labels in found]


def _values(sets: list[dict[str, Any]], key: str) -> set[Any]:
    return {labels[key] for labels in sets if key in labels}


def _llm(max_model_labels: int = 100) -> tuple[Any, Any, Any]:
    from prometheus_client import CollectorRegistry

    from nexent_autoinstrument.metrics import LLMMetrics

    registry, (points, reader) = CollectorRegistry(), _exported()
    return LLMMetrics(registry=registry, points=points, max_model_labels=max_model_labels), registry, reader


def _http(**options: Any) -> tuple[Any, Any, Any]:
    from prometheus_client import CollectorRegistry

    from nexent_autoinstrument.metrics import HTTPMetrics

    registry, (points, reader) = CollectorRegistry(), _exported()
    return HTTPMetrics(registry=registry, points=points, **options), registry, reader


def _call(metrics: Any, **overrides: Any) -> None:
    call: dict[str, Any] = {"model": "m", "operation": "chat", "outcome": "completed", "duration": 0.5,
                            "ttft": 0.1, "gaps": [0.01], "input_tokens": 3, "output_tokens": 5, "stream": True,
                            "response_model": "m-1", "server": ("llm.example", 443)}
    metrics.record(**{**call, **overrides})


def _request(metrics: Any, **overrides: Any) -> None:
    attributes = {"http.request.method": "POST", "server.address": "llm.example", "server.port": 443,
                  "http.response.status_code": 200, **overrides}
    metrics.record(0.25, {k: v for k, v in attributes.items() if v is not None})


def test_bounded_label_lets_the_first_values_through_and_folds_the_rest() -> None:
    from nexent_autoinstrument.metrics import OTHER, BoundedLabel

    label = BoundedLabel(3)
    assert [label(v) for v in ("a", "b", "a", None, "c", "b")] == ["a", "b", "a", "unknown", OTHER, "b"]
    assert label("x" * 500) == OTHER and BoundedLabel(1)("x" * 500) == "x" * 128
    numbers = BoundedLabel(2)
    assert [numbers.admits(v) for v in (200, 404, 200, 500, (1, 2))] == [True, True, True, False, False]


def test_bounded_label_never_lets_more_than_its_cap_through_from_racing_threads() -> None:
    import sys
    import threading

    from nexent_autoinstrument.metrics import OTHER, BoundedLabel

    label, results = BoundedLabel(50), []
    barrier = threading.Barrier(8)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # (switch threads as often as possible)
    try:
        def work(n: int) -> None:
            barrier.wait()
            results.extend(label(f"{n}-{i}") for i in range(500))  # distinct values
            results.extend(label(f"shared-{i}") for i in range(500))  # the same values at once
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old)
    assert len(set(results) - {OTHER}) <= 50


def test_request_model_budget() -> None:
    metrics, registry, reader = _llm(max_model_labels=5)
    for i in range(20):
        _call(metrics, model=f"model-{i}")
    assert _values(_prom_sets(registry, "llm_request_duration_seconds"), "model") == {
        *(f"model-{i}" for i in range(5)), "other"}
    assert len(_values(_otel_sets(reader, conventions.GENAI_DURATION), "gen_ai.request.model")) == 6


def test_response_models_have_a_budget_of_their_own() -> None:
    metrics, registry, reader = _llm(max_model_labels=5)
    for i in range(20):
        _call(metrics, model=f"model-{i}", response_model=f"served-{i}")
    assert _values(_prom_sets(registry, "llm_request_duration_seconds"), "model") == {
        *(f"model-{i}" for i in range(5)), "other"}  # (the response models took none of these)
    sets = _otel_sets(reader, conventions.GENAI_DURATION)
    assert _values(sets, "gen_ai.response.model") == {*(f"served-{i}" for i in range(5)), "other"}
    assert len(sets) <= 6 * 6


def test_llm_error_type_budget() -> None:
    from nexent_autoinstrument.metrics import BUDGETS

    metrics, registry, reader = _llm()
    for i in range(BUDGETS["error_type"] + 30):
        _call(metrics, outcome="error", error_type=f"Error{i}")
    assert len(_values(_prom_sets(registry, "llm_error_count"), "error_type")) == BUDGETS["error_type"] + 1
    assert len(_values(_otel_sets(reader, conventions.GENAI_DURATION), "error.type")) == BUDGETS["error_type"] + 1


def test_operation_and_provider_budgets() -> None:
    from nexent_autoinstrument.metrics import BUDGETS

    metrics, registry, reader = _llm()
    for i in range(BUDGETS["operation"] + 30):
        _call(metrics, operation=f"op-{i}", provider=f"provider-{i}")
    assert len(_values(_prom_sets(registry, "llm_request_duration_seconds"), "operation")) == BUDGETS["operation"] + 1
    sets = _otel_sets(reader, conventions.GENAI_DURATION)
    assert len(_values(sets, "gen_ai.operation.name")) == BUDGETS["operation"] + 1
    assert len(_values(sets, "gen_ai.provider.name")) == BUDGETS["provider"] + 1


@pytest.mark.parametrize("dimension", ["host", "port"])
def test_llm_server_address_and_port_budgets(dimension: str) -> None:
    from nexent_autoinstrument.metrics import BUDGETS

    metrics, _, reader = _llm()
    for i in range(BUDGETS["server_address"] + BUDGETS["server_port"]):
        _call(metrics, server=(f"h{i}.example", 443) if dimension == "host" else ("llm.example", 10000 + i))
    for name in (conventions.GENAI_DURATION, conventions.GENAI_TOKEN_USAGE, conventions.GENAI_TIME_TO_FIRST_CHUNK):
        sets = _otel_sets(reader, name)
        ports = _values(sets, "server.port")
        assert len(ports) <= BUDGETS["server_port"] and all(isinstance(p, int) for p in ports)
        if dimension == "host":
            assert len(_values(sets, "server.address")) == BUDGETS["server_address"] + 1
            assert all("server.port" not in s for s in sets if s["server.address"] == "other")
        else:
            assert _values(sets, "server.address") == {"llm.example"}
            assert len(ports) == BUDGETS["server_port"]
            assert any("server.port" not in s for s in sets)  # (beyond its budget: left out, not "other")
        assert len(sets) <= (BUDGETS["server_address"] + BUDGETS["server_port"] + 1) * 2


def test_genai_attribute_sets_are_made_once() -> None:
    metrics, _, _ = _llm()
    for _ in range(3):
        _call(metrics)
        _call(metrics, outcome="error", error_type="RateLimitError")
    assert len(metrics._genai) == 2


def test_http_methods_are_the_known_ones_or_other() -> None:
    metrics, registry, reader = _http()
    for method in ("GET", "POST", "QUERY", "PATCH", "get", "PROPFIND", *(f"M{i}" for i in range(100)), None):
        _request(metrics, **{"http.request.method": method})
    expected = {"GET", "POST", "QUERY", "PATCH", "_OTHER"}
    assert _values(_prom_sets(registry, "http_client_request_duration_seconds"), "http_request_method") == expected
    assert _values(_otel_sets(reader, conventions.HTTP_CLIENT_DURATION), "http.request.method") == expected
    custom, registry, _ = _http(known_methods=["GET", "PROPFIND"])  # (the conventions' override)
    for method in ("GET", "PROPFIND", "POST"):
        _request(custom, **{"http.request.method": method})
    assert _values(_prom_sets(registry, "http_client_request_duration_seconds"), "http_request_method") == {
        "GET", "PROPFIND", "_OTHER"}


def test_the_known_http_methods_are_the_semantic_conventions() -> None:
    from opentelemetry.semconv.attributes.http_attributes import HttpRequestMethodValues

    listed = {m.value for m in HttpRequestMethodValues} - {"_OTHER"}
    assert listed <= conventions.HTTP_METHODS <= listed | {"QUERY"}  # (QUERY: listed by newer conventions)
    assert HttpRequestMethodValues.OTHER.value == conventions.HTTP_METHOD_OTHER


def test_http_status_code_budget() -> None:
    from nexent_autoinstrument.metrics import BUDGETS

    metrics, registry, reader = _http()
    for status in range(200, 200 + BUDGETS["http_status_code"] + 50):
        _request(metrics, **{"http.response.status_code": status})
    _request(metrics, **{"http.response.status_code": None})  # no response
    labels = _values(_prom_sets(registry, "http_client_request_duration_seconds"), "http_response_status_code")
    assert len(labels) == BUDGETS["http_status_code"] + 2 and {"other", "", "200"} <= labels
    sets = _otel_sets(reader, conventions.HTTP_CLIENT_DURATION)
    codes = _values(sets, "http.response.status_code")
    assert len(codes) == BUDGETS["http_status_code"] and all(isinstance(c, int) for c in codes)
    assert len(sets) == BUDGETS["http_status_code"] + 1  # (beyond the budget, and no response: left out)


@pytest.mark.parametrize("dimension", ["host", "port"])
def test_http_server_address_and_port_budgets(dimension: str) -> None:
    from nexent_autoinstrument.metrics import BUDGETS

    metrics, registry, reader = _http()
    for i in range(BUDGETS["server_address"] + BUDGETS["server_port"]):
        if dimension == "host":
            _request(metrics, **{"server.address": f"h{i}.example"})
        else:
            _request(metrics, **{"server.port": 10000 + i})
    prometheus = _values(_prom_sets(registry, "http_client_request_duration_seconds"), "server_address")
    sets = _otel_sets(reader, conventions.HTTP_CLIENT_DURATION)
    ports = _values(sets, "server.port")
    assert all(isinstance(p, int) for p in ports)
    if dimension == "host":
        assert len(prometheus) == len(_values(sets, "server.address")) == BUDGETS["server_address"] + 1
        assert all("server.port" not in s for s in sets if s["server.address"] == "other")
    else:
        assert prometheus == _values(sets, "server.address") == {"llm.example"}
        assert len(ports) == BUDGETS["server_port"] and len(sets) == BUDGETS["server_port"] + 1


def test_http_error_type_budget() -> None:
    from nexent_autoinstrument.metrics import BUDGETS

    metrics, _, reader = _http()
    for i in range(BUDGETS["http_error_type"] + 30):
        _request(metrics, **{"http.response.status_code": None, "error.type": f"TransportError{i}"})
    assert len(_values(_otel_sets(reader, conventions.HTTP_CLIENT_DURATION), "error.type")) == (
        BUDGETS["http_error_type"] + 1)


def test_each_bounded_label_has_its_own_budget() -> None:
    from nexent_autoinstrument.metrics import BUDGETS

    llm, _, _ = _llm(max_model_labels=7)
    http, _, _ = _http()
    assert llm.model_label.cap == llm.response_model_label.cap == 7
    assert llm.model_label is not llm.response_model_label
    assert (llm.error_label.cap, llm.operation_label.cap, llm.provider_label.cap) == (
        BUDGETS["error_type"], BUDGETS["operation"], BUDGETS["provider"])
    assert (http.status_codes.cap, http.error_label.cap) == (BUDGETS["http_status_code"], BUDGETS["http_error_type"])
    for servers in (llm.servers, http.servers):
        assert (servers.addresses.cap, servers.ports.cap) == (BUDGETS["server_address"], BUDGETS["server_port"])
    assert llm.servers.addresses is not http.servers.addresses

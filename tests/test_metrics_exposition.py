"""The Prometheus exposition names are exactly the contract's, with useful buckets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT
from nexent_autoinstrument import conventions, lifecycle


def exposition(harness: Any) -> dict[str, Any]:
    harness.telemetry.metrics.record(model="m", operation="chat", outcome="completed", duration=0.4, ttft=0.1,
                                     rate=50.0, gaps=[0.01, 0.02], input_tokens=3, output_tokens=7,
                                     error_type="RateLimitError", slow_reasons=["duration"],
                                     time_to_request_sent=0.03)
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
    assert exposed == {m.name for m in conventions.METRICS}
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
    assert list(attrs["llm.token.offsets"]) == [2_000_000, 2_500_000, 3_000_000, 3_500_000, 4_000_000]  # µs
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
    assert call.finish() is True
    assert call.finish("abandoned") is False
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


@pytest.mark.parametrize("limits", [{}, {"max_span_attributes": 3}, {"max_span_attribute_length": 2}])
def test_attributes_set_without_revalidation_equal_the_public_path(limits: dict[str, int]) -> None:
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    from nexent_autoinstrument.tracker import set_valid_attributes

    provider = TracerProvider(span_limits=SpanLimits(**limits))
    ours, public = provider.get_tracer("t").start_span("a"), provider.get_tracer("t").start_span("b")
    the_end = {"llm.token.offsets": (1, 20, 300), "gen_ai.response.finish_reasons": ("stop", "length"),
               "gen_ai.response.id": "chatcmpl-1", "llm.stream": True, "llm.ttft_seconds": 0.25, "a": 3}
    for span in (ours, public):
        span.set_attributes({"a": 1, "b": 2})
    set_valid_attributes(ours, the_end)
    public.set_attributes(the_end)
    # also when the attribute count or length limits apply
    assert dict(ours.attributes) == dict(public.attributes)
    assert ours.dropped_attributes == public.dropped_attributes
    ours.end()
    public.end()
    set_valid_attributes(ours, {"late": (1,)})  # an ended span stays as it was
    assert "late" not in ours.attributes

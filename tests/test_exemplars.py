"""From a latency bucket to the call's trace: exemplars on /metrics (OpenMetrics, to scrapers
that ask for it) and on the OTLP histograms, each naming the span of the call that was measured.
The real Prometheus side (exemplar storage, query_exemplars) is in test_monitoring_stack.py."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from conftest import Harness, clean_env, run_python
from nexent_autoinstrument.conventions import decode_offsets
from receivers import OTLPHTTPReceiver, attributes

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: The latency histograms that carry the call's exemplar, and the span attribute each value is.
LATENCIES = {"llm_time_to_first_token_seconds": "llm.time_to_first_token",
             "llm_time_to_request_sent_seconds": "llm.time_to_request_sent",
             "llm_inter_token_latency_seconds": "llm.inter_token_latency.max",
             "llm_request_duration_seconds": None}


@pytest.fixture
def instrumented(agent: Harness) -> Harness:
    return agent


def stream(mock_llm: Any, model: str = "mock-gpt") -> None:
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
    list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
                                        extra_body={"mock_tokens": 8, "mock_itl": 0.004}))


def timed_latencies(latencies: dict[str, str | None], span_attributes: Any) -> dict[str, str | None]:
    """The histograms a call reaches: all, but the gaps' when it was reader-bound (a loaded
    machine's reader fell behind the stream), whose gaps stay out of the histograms."""
    if not span_attributes.get("llm.stream.reader_bound"):
        return latencies
    return {name: attribute for name, attribute in latencies.items() if attribute != "llm.inter_token_latency.max"}


def check_value(name: str, value: float, span_attributes: Any, attribute: str | None, duration: float) -> None:
    """The exemplar's value is the span's: its attribute, or its duration. The gaps' is the largest
    gap that reached the histogram: one of the gaps between the span's token offsets, at most
    ``llm.inter_token_latency.max`` (which also counts a gap ending at a chunk that waited)."""
    if attribute == "llm.inter_token_latency.max":
        offsets = decode_offsets(span_attributes["llm.token.offsets"])
        gaps = [(later - earlier) / 1e6 for earlier, later in itertools.pairwise(offsets)]
        assert value <= span_attributes[attribute] + 1e-6, name
        assert any(abs(value - gap) <= 2e-6 for gap in gaps), (name, value, gaps)
        return
    assert value == pytest.approx(span_attributes[attribute] if attribute else duration, abs=1e-6), name


def exemplars(text: str) -> dict[str, list[Any]]:
    """Every exemplar of an OpenMetrics exposition, by histogram."""
    found: dict[str, list[Any]] = {}
    for family in openmetrics_families(text):
        for sample in family.samples:
            if sample.exemplar is not None:
                found.setdefault(family.name, []).append(sample.exemplar)
    return found


def test_each_latency_histogram_points_to_the_calls_span(instrumented: Harness, mock_llm: Any) -> None:
    stream(mock_llm)
    span = instrumented.llm_span()
    ids = {"trace_id": format(span.context.trace_id, "032x"), "span_id": format(span.context.span_id, "016x")}
    encoder, content_type = choose_encoder(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    found = exemplars(encoder(instrumented.registry).decode())
    expected = timed_latencies(LATENCIES, span.attributes)
    assert set(found) == set(expected), found  # (the rate is not a latency: no exemplar)
    duration = (span.end_time - span.start_time) / 1e9
    for name, attribute in expected.items():
        (exemplar,) = found[name]
        assert exemplar.labels == ids
        check_value(name, exemplar.value, span.attributes, attribute, duration)


def test_the_classic_text_format_is_unchanged(instrumented: Harness, mock_llm: Any) -> None:
    stream(mock_llm)
    encoder, content_type = choose_encoder("text/plain")
    text = encoder(instrumented.registry).decode()
    assert content_type.startswith("text/plain") and "trace_id" not in text
    assert any(f.name == "llm_time_to_first_token_seconds" for f in text_string_to_metric_families(text))


def test_a_call_whose_span_is_not_sampled_carries_no_exemplar(instrumented: Harness, mock_llm: Any) -> None:
    unsampled = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0)))
    with trace.use_span(unsampled):
        stream(mock_llm)
    encoder, _ = choose_encoder(OPENMETRICS)
    text = encoder(instrumented.registry).decode()
    assert "llm_time_to_first_token_seconds_bucket" in text and not exemplars(text)


def test_the_latest_sampled_call_is_the_buckets_exemplar(instrumented: Harness, mock_llm: Any) -> None:
    for _ in range(3):
        stream(mock_llm)
    last = max(instrumented.llm_spans(), key=lambda s: s.end_time)
    encoder, _ = choose_encoder(OPENMETRICS)
    ttft = exemplars(encoder(instrumented.registry).decode())["llm_time_to_first_token_seconds"]
    assert format(last.context.span_id, "016x") in {e.labels["span_id"] for e in ttft}


APP = """
import openai, os
client = openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-test", max_retries=0)
list(client.chat.completions.create(model="mock-gpt", stream=True, messages=[{"role": "user", "content": "hi"}],
                                    extra_body={"mock_tokens": 8, "mock_itl": 0.004}))
"""

#: The OTLP histograms with an exemplar: ours, and the GenAI conventions' (span attribute of the value).
OTLP_LATENCIES = {**LATENCIES, "gen_ai.client.operation.duration": None,
                  "gen_ai.client.operation.time_to_first_chunk": "llm.time_to_first_token",
                  "gen_ai.client.operation.time_per_output_chunk": "llm.inter_token_latency.max"}


def test_otlp_histograms_carry_the_same_exemplars(mock_llm: Any, tmp_path: Path) -> None:
    """What a Collector's Prometheus exporter passes on: each OTLP latency point's exemplar is the
    exported span of the call, with the value the span has."""
    receiver = OTLPHTTPReceiver()
    try:
        env = clean_env(ENABLE_TELEMETRY="true", MOCK_URL=mock_llm.base_url, OTEL_METRICS_EXPORTER="otlp",
                        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        result = run_python(APP, env=env, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        (span,) = [span for _, span in receiver.spans() if span.name == "chat mock-gpt"]
        span_attributes = attributes(span.attributes)
        expected = timed_latencies(OTLP_LATENCIES, span_attributes)
        for name in set(OTLP_LATENCIES) - set(expected):
            assert receiver.metric_last(name) is None, name  # (reader-bound: no gaps, hence no exemplar)
        for name, attribute in expected.items():
            metric = receiver.metric_last(name)
            assert metric is not None, name
            (point,) = [p for p in metric.histogram.data_points if p.exemplars]
            (exemplar,) = point.exemplars
            assert (exemplar.trace_id, exemplar.span_id) == (span.trace_id, span.span_id), name
            check_value(name, exemplar.as_double, span_attributes, attribute,
                        (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9)
    finally:
        receiver.stop()


def test_a_calls_gaps_put_its_exemplar_on_the_largest() -> None:
    """Many gaps are added at once; the exemplar goes on the largest, the gap a person looks into."""
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry, Histogram

    from nexent_autoinstrument.conventions import GAP_BUCKETS
    from nexent_autoinstrument.metrics import Exemplar, add_observations

    registry = CollectorRegistry()
    histogram = Histogram("gaps", "g", buckets=GAP_BUCKETS, registry=registry)
    span = TracerProvider().get_tracer("t").start_span("call")
    exemplar = Exemplar.of(span)
    assert exemplar is not None
    add_observations(histogram, [0.001, 0.004, 0.02, 0.6], exemplar)
    encoder, _ = choose_encoder(OPENMETRICS)
    [(value, labels)] = [(e.value, e.labels) for e in exemplars(encoder(registry).decode())["gaps"]]
    assert value == 0.6 and labels == exemplar.labels

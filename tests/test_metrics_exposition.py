"""The Prometheus exposition names are exactly the contract's, with useful buckets."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT
from nexent_autoinstrument import conventions, lifecycle


def exposition(harness: Any) -> dict[str, Any]:
    harness.telemetry.metrics.record(model="m", operation="chat", outcome="completed", duration=0.4, ttft=0.1,
                                     rate=50.0, gaps=[0.01, 0.02], input_tokens=3, output_tokens=7,
                                     error_type="RateLimitError", slow_reasons=["duration"])
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
        assert used and used <= samples, (path.name, used - samples)


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
    assert list(attrs["llm.token.offsets"]) == [2.0, 2.5, 3.0, 3.5, 4.0]
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

"""The example service and the CLI, as users run them: real subprocesses, real HTTP."""

from __future__ import annotations

import bisect
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, clean_env, post_chat, start_example
from nexent_autoinstrument.conventions import SECONDS_BUCKETS
from nexent_autoinstrument.tools import demo as demo_module
from nexent_autoinstrument.tools.net import free_port
from receivers import OTLPHTTPReceiver, attributes


@pytest.fixture
def service(mock_llm: Any) -> Iterator[tuple[str, OTLPHTTPReceiver]]:
    receiver = OTLPHTTPReceiver()
    base, process = start_example(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                                  OTEL_BSP_SCHEDULE_DELAY="100")
    yield base, receiver
    process.terminate()
    _, stderr = process.communicate(timeout=20)
    receiver.stop()
    assert b"Traceback" not in stderr, stderr.decode()


def wait_for(predicate: Any, seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def test_one_trace_from_the_http_request_to_the_llm_call(service: tuple[str, OTLPHTTPReceiver]) -> None:
    base, receiver = service
    status, text = post_chat(base)
    assert status == 200 and text.startswith("the model")

    def trace() -> Any:
        spans = [span for _, span in receiver.spans()]
        names = {s.name: s for s in spans}
        return names if "POST /chat" in names and "chat mock-gpt" in names else None

    names = wait_for(trace)
    assert names, [s.name for _, s in receiver.spans()]
    server, llm = names["POST /chat"], names["chat mock-gpt"]
    assert server.kind == server.SPAN_KIND_SERVER and llm.kind == llm.SPAN_KIND_CLIENT
    assert llm.trace_id == server.trace_id
    by_id = {s.span_id: s for _, s in receiver.spans()}
    parent = by_id.get(llm.parent_span_id)
    while parent is not None and parent.span_id != server.span_id:
        parent = by_id.get(parent.parent_span_id)
    assert parent is not None  # an unbroken chain of parents up to the server span
    assert not any(s.name.endswith("http send") for s in by_id.values())  # no span per streamed token
    assert attributes(llm.attributes)["llm.stream.outcome"] == "completed"


def test_metrics_on_the_apps_own_port(service: tuple[str, OTLPHTTPReceiver]) -> None:
    base, _ = service
    assert post_chat(base, model="mock-gpt-mini")[0] == 200
    assert post_chat(base, model="mock-gpt-mini", mock={"error": 500})[0] == 502
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    ttft = samples[("llm_time_to_first_token_seconds_count", (("model", "mock-gpt-mini"), ("operation", "chat")))]
    assert ttft == 1
    errors = samples[("llm_error_count_total", (("error_type", "InternalServerError"), ("model", "mock-gpt-mini"),
                                                ("operation", "chat")))]
    assert errors == 1


def test_doctor_tells_the_truth_with_nothing_running() -> None:
    env = clean_env(ENABLE_TELEMETRY="true", TELEMETRY_SAMPLE_RATE="7",
                    OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    result = subprocess.run([str(BIN / "nexent-autoinstrument"), "doctor"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    out = result.stdout
    assert "[OK  ] telemetry is enabled" in out and "MONITORING_AVAILABLE=True" in out
    assert "[FAIL] ignoring TELEMETRY_SAMPLE_RATE='7'" in out
    assert "[FAIL] nothing listens at the OTLP endpoint" in out and "fix:" in out
    assert "not running: Prometheus (http://localhost:9090), Grafana (http://localhost:3005)" in out
    assert "openai" in out and "auto-load hook installed" in out


def test_demo_prints_the_per_model_table(tmp_path: Path) -> None:
    env = clean_env()
    result = subprocess.run([str(BIN / "nexent-autoinstrument"), "demo", "--requests", "12"], env=env,
                            capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Not a terminal: plain progress lines, no carriage returns.
    assert "\r" not in result.stdout
    assert "requests      10/12 done" in result.stdout and "requests      12/12 done" in result.stdout
    # JSON Lines: one span per line, every line parses.
    lines = (tmp_path / ".demo" / "traces.jsonl").read_text().splitlines()
    spans = [json.loads(line) for line in lines]
    llm = [s for s in spans if "gen_ai.operation.name" in s["attributes"]]
    assert len(llm) == 12 and len(spans) > 12  # the service's own spans too
    assert {s["attributes"]["gen_ai.request.model"] for s in llm} == {"gpt-4o-mini", "mock-gpt"}
    # The table is computed exactly from those spans.
    out = result.stdout.splitlines()
    header = next(i for i, line in enumerate(out) if line.startswith("model"))
    assert "tok/s p50" in out[header] and "from the spans in" in out[header - 2]
    rows = {line.split()[0]: line.split() for line in out[header + 2:header + 4]}
    assert set(rows) == {"gpt-4o-mini", "mock-gpt"}
    expected = demo_module.format_table(demo_module.rows_from_spans(spans)).splitlines()[2:4]
    assert [line.split() for line in expected] == [rows["gpt-4o-mini"], rows["mock-gpt"]]
    assert sum(int(row[1]) for row in rows.values()) == 12
    for row in rows.values():
        assert row[4].endswith("ms") and not row[4].startswith(("-", "~"))  # TTFT p50, exact
        assert 100 <= float(row[4][:-2]) <= 1000  # the mock's TTFT is 120 ms
    # The exemplar of the slowest TTFT bucket names a call whose span has that TTFT.
    [line] = [line for line in out if line.startswith("Exemplar:")]
    ttft_ms, trace_id = line.rsplit("TTFT ", 1)[1].split("ms")[0], line.split("trace ")[1].strip()
    [call] = [s for s in llm if s["context"]["trace_id"] == f"0x{trace_id}"]
    assert round(call["attributes"]["llm.time_to_first_token"] * 1000) == int(ttft_ms)
    ttfts = [s["attributes"]["llm.time_to_first_token"] for s in llm if "llm.time_to_first_token" in s["attributes"]]
    bucket = bisect.bisect_left(SECONDS_BUCKETS, call["attributes"]["llm.time_to_first_token"])
    assert bucket == bisect.bisect_left(SECONDS_BUCKETS, max(ttfts))  # (a bucket keeps its latest call's exemplar)
    # The cost column: one model priced by genai-prices, the other by the demo's own price file.
    assert "genai-prices' table" in result.stdout and "LLM_PRICES_FILE" in result.stdout
    sources = {s["attributes"]["gen_ai.request.model"]: s["attributes"].get("llm.cost.source") for s in llm
               if "llm.cost.usd" in s["attributes"]}
    assert sources == {"gpt-4o-mini": "genai-prices", "mock-gpt": "LLM_PRICES_FILE"}
    for model, row in rows.items():
        priced = [s["attributes"]["llm.cost.usd"] for s in llm
                  if s["attributes"]["gen_ai.request.model"] == model and "llm.cost.usd" in s["attributes"]]
        assert row[-1] == f"${sum(priced):.6f}" and sum(priced) > 0

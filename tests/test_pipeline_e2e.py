"""The real thing: child processes under opentelemetry-instrument or auto-load, exporting to real receivers."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import clean_env, run_python
from nexent_autoinstrument.conventions import decode_offsets
from receivers import JaegerThriftReceiver, OTLPGrpcReceiver, OTLPHTTPReceiver, attributes

APP = """
import os, sys
import openai
from nexent_autoinstrument import monitoring_manager
from nexent_autoinstrument import bootstrap

@monitoring_manager.monitor_endpoint("handle_request")
def handle_request():
    client = openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-e2e-secret-key-1234", max_retries=0)
    stream = client.chat.completions.create(model="mock-gpt", stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
    return sum(1 for _ in stream)

print("chunks", handle_request())
from nexent_autoinstrument.guard import internal_errors
print("started_by", bootstrap.started_by, "internal_errors", dict(internal_errors))
"""


RAW_APP = """
import json, os, sys
import {library}

with {library}.Client() as client:
    body = {{"model": "mock-gpt", "stream": True, "messages": [{{"role": "user", "content": "hi"}}]}}
    with client.stream("POST", os.environ["MOCK_URL"] + "/chat/completions", json=body,
                       headers={{"Authorization": "Bearer sk-e2e-secret-key-1234"}}) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {{")]
print("events", len(lines))
"""


@pytest.fixture
def otlp() -> Iterator[OTLPHTTPReceiver]:
    receiver = OTLPHTTPReceiver()
    yield receiver
    receiver.stop()


def app_env(mock_llm: Any, **extra: str) -> dict[str, str]:
    return clean_env(ENABLE_TELEMETRY="true", MOCK_URL=mock_llm.base_url, SERVICE_NAME="e2e-service", **extra)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def llm_and_parent(spans: list[tuple[dict[str, Any], Any]]) -> tuple[Any, Any, dict[str, Any]]:
    by_name = {span.name: (resource, span) for resource, span in spans}
    resource, llm = by_name["chat mock-gpt"]
    _, parent = by_name["handle_request"]
    return llm, parent, resource


@pytest.mark.parametrize("door", ["opentelemetry-instrument", "auto-load"])
def test_a_signal_path_in_the_base_endpoint_is_named_and_corrected(door: str, otlp: OTLPHTTPReceiver,
                                                                    mock_llm: Any, tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT=http://host:4318/v1/traces, the common mistake: said once, and the
    spans still reach the collector's /v1/traces (the exporter alone would post to /v1/traces/v1/traces)."""
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=f"{otlp.endpoint}/v1/traces")
    result = run_python(APP, env=env, instrument=door == "opentelemetry-instrument", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "OTEL_EXPORTER_OTLP_ENDPOINT" in line]
    assert len(warnings) == 1 and "/v1/traces" in warnings[0] and f"using {otlp.endpoint}" in warnings[0], \
        result.stderr
    assert "chat mock-gpt" in {span.name for _, span in otlp.spans()}


def test_a_rejected_endpoint_is_never_used(mock_llm: Any, tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT=localhost:4318 (no scheme) is rejected: the exporters then send to
    the default they were told, not to the rejected value (which they would read themselves)."""
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT="localhost:4318",
                  OTEL_EXPORTER_OTLP_TIMEOUT="1")
    result = run_python(APP, env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "OTEL_EXPORTER_OTLP_ENDPOINT" in line]
    assert len(warnings) == 1 and "using the default: http://localhost:4318" in warnings[0], result.stderr
    assert "No connection adapters" not in result.stderr  # (what posting to 'localhost:4318/v1/traces' says)


@pytest.mark.parametrize("door", ["opentelemetry-instrument", "auto-load"])
def test_otlp_http_export_through_both_doors(door: str, otlp: OTLPHTTPReceiver, mock_llm: Any,
                                             tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_METRICS_EXPORTER="otlp")
    result = run_python(APP, env=env, instrument=door == "opentelemetry-instrument", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "chunks 12" in result.stdout
    assert f"started_by {door}" in result.stdout and "internal_errors {}" in result.stdout
    llm, parent, resource = llm_and_parent(list(otlp.spans()))
    assert llm.trace_id == parent.trace_id and llm.parent_span_id == parent.span_id
    # One attempt that succeeded: no HTTP span under the call, ours (LLM_HTTP_ATTEMPT_SPANS=retries)
    # nor the official instrumentation's, which our httpx layer replaces.
    assert not [span for _, span in otlp.spans() if span.parent_span_id == llm.span_id]
    attrs = attributes(llm.attributes)
    assert attrs["llm.stream.outcome"] == "completed" and attrs["llm.time_to_first_token"] > 0
    assert len(decode_offsets(attrs["llm.token.offsets"])) == 10
    assert resource["service.name"] == "e2e-service"
    assert resource["service.instance.id"] and resource["host.name"] and resource["process.pid"]
    assert resource["service.version"]
    exported = otlp.metric_names()
    assert {"llm_request_duration_seconds", "llm_time_to_first_token_seconds", "llm_total_tokens"} <= exported
    # The rate goes to its histogram unless the stream was reader-bound: a cold process on a busy
    # machine can parse the first chunks slower than the mock's 2 ms gaps (seen once on CI).
    assert ("llm_token_generation_rate" in exported) == (not attrs["llm.stream.reader_bound"])
    ttft = otlp.metric("llm_time_to_first_token_seconds")
    assert list(ttft.histogram.data_points[0].explicit_bounds)[:3] == [0.01, 0.025, 0.05]
    assert b"sk-e2e-secret" not in b"".join(r.SerializeToString() for r in otlp.traces)


@pytest.mark.parametrize("bypassed", [False, True], ids=["proxied", "no_proxy"])
def test_the_export_takes_the_proxy_the_environment_names(bypassed: bool, otlp: OTLPHTTPReceiver, mock_llm: Any,
                                                          tmp_path: Path) -> None:
    """HTTP_PROXY and NO_PROXY apply to the OTLP/HTTP export as requests applies them, export
    after export (the agent reads them once, not for each export)."""
    proxy = OTLPHTTPReceiver()
    try:
        collector = otlp.endpoint.replace("127.0.0.1", "localhost")
        env = {k: v for k, v in app_env(mock_llm).items() if not k.lower().endswith("_proxy")}  # (the runner's own)
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=collector, OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1",  # (a POST per span)
                   HTTP_PROXY=proxy.endpoint, NO_PROXY="127.0.0.1" + (",localhost" if bypassed else ""))
        result = run_python(APP, env=env, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "chunks 12" in result.stdout and "internal_errors {}" in result.stdout
        went, skipped = (otlp, proxy) if bypassed else (proxy, otlp)
        assert {span.name for _, span in went.spans()} == {"chat mock-gpt", "handle_request"}
        assert len(went.posts) == 2 and not skipped.posts
        assert {target for target, _ in went.posts} == {"/v1/traces" if bypassed else f"{collector}/v1/traces"}
    finally:
        proxy.stop()


def test_a_named_credential_provider_makes_the_export_session(otlp: OTLPHTTPReceiver, mock_llm: Any,
                                                              tmp_path: Path) -> None:
    """OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER: the exporter sends through the session
    the named provider (an entry point of an installed package) makes, not the agent's."""
    common = pytest.importorskip("opentelemetry.exporter.otlp.proto.http._common")
    if not hasattr(common, "_load_session_from_envvar"):
        pytest.skip("this OTLP exporter has no credential providers")
    package = tmp_path / "site"
    (package / "otlp_credentials-1.0.dist-info").mkdir(parents=True)
    (package / "otlp_credentials-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: otlp-credentials\nVersion: 1.0\n")
    (package / "otlp_credentials-1.0.dist-info" / "entry_points.txt").write_text(
        "[opentelemetry_otlp_credential_provider]\ntest_provider = otlp_credentials:session\n")
    (package / "otlp_credentials.py").write_text(
        "import requests\n\ndef session():\n    made = requests.Session()\n"
        "    made.headers['x-credential'] = 'from-the-provider'\n    return made\n")
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
                  OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER="test_provider")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package), env.get("PYTHONPATH")]))
    result = run_python(APP, env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "chunks 12" in result.stdout and "internal_errors {}" in result.stdout
    assert otlp.posts and all(headers.get("x-credential") == "from-the-provider" for _, headers in otlp.posts)


def test_each_process_has_its_own_instance_id(otlp: OTLPHTTPReceiver, mock_llm: Any, tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, SERVICE_VERSION="1.2.3",
                  OTEL_RESOURCE_ATTRIBUTES="deployment.environment=staging,service.name=from-resource")
    for _ in range(2):
        assert run_python(APP, env=env, tmp_path=tmp_path).returncode == 0
    resources = [resource for resource, _ in otlp.spans()]
    assert len({resource["service.instance.id"] for resource in resources}) == 2
    for resource in resources:
        assert resource["service.version"] == "1.2.3" and resource["deployment.environment"] == "staging"
        assert resource["service.name"] == "from-resource"  # standard OTEL_* settings win over SERVICE_NAME


def test_hook_and_opentelemetry_instrument_initialize_exactly_once(otlp: OTLPHTTPReceiver, mock_llm: Any,
                                                                   tmp_path: Path) -> None:
    code = APP + "\nprint('pipelines', bootstrap.pipelines_built)\n"
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint)
    result = run_python(code, env=env, instrument=True, tmp_path=tmp_path)
    assert "pipelines 1" in result.stdout, result.stderr
    spans = [span.name for _, span in otlp.spans()]
    assert spans.count("chat mock-gpt") == 1  # one openai patch, one span


def test_otlp_grpc_export(mock_llm: Any, tmp_path: Path) -> None:
    receiver = OTLPGrpcReceiver()
    try:
        env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
        result = run_python(APP, env=env, instrument=True, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        llm, parent, _ = llm_and_parent(list(receiver.spans()))
        assert llm.parent_span_id == parent.span_id
    finally:
        receiver.stop()


def test_jaeger_thrift_round_trip(mock_llm: Any, tmp_path: Path) -> None:
    receiver = JaegerThriftReceiver()
    try:
        env = app_env(mock_llm, JAEGER_ENDPOINT=receiver.endpoint)
        result = run_python(APP, env=env, instrument=True, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert receiver.batches, result.stderr
        content_type, batch = receiver.batches[0]
        assert "thrift" in content_type
        spans = {s.operationName: s for _, b in receiver.batches for s in b.spans}
        assert batch.process.serviceName == "e2e-service"
        llm = spans["chat mock-gpt"]
        tags = {t.key: t for t in llm.tags}
        assert tags["gen_ai.request.model"].vStr == "mock-gpt"
        assert tags["llm.stream.outcome"].vStr == "completed"
        assert llm.parentSpanId == spans["handle_request"].spanId
    finally:
        receiver.stop()


def test_console_exporter_writes_spans_to_stdout(mock_llm: Any, tmp_path: Path) -> None:
    result = run_python(APP, env=app_env(mock_llm, OTEL_TRACES_EXPORTER="console"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"name": "chat mock-gpt"' in result.stdout
    assert '"llm.stream.outcome": "completed"' in result.stdout


def test_none_exports_nothing_and_still_runs(otlp: OTLPHTTPReceiver, mock_llm: Any, tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint)
    result = run_python(APP, env=env, instrument=True, tmp_path=tmp_path)
    assert result.returncode == 0 and "chunks 12" in result.stdout, result.stderr
    assert not list(otlp.spans())


def test_unreachable_collector_means_one_warning_and_a_bounded_exit(mock_llm: Any, tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
                  OTEL_METRICS_EXPORTER="otlp", OTEL_METRIC_EXPORT_INTERVAL="200")
    code = APP + ("\nimport time; time.sleep(1.5)\n"  # several metric export intervals fail meanwhile
                  "from nexent_autoinstrument.guard import export_warnings\n"
                  "print('EXPORT_WARNINGS', export_warnings['total'])\n")
    started = time.monotonic()
    result = run_python(code, env=env, instrument=True, tmp_path=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0 and "chunks 12" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr
    complaints = [line for line in result.stderr.splitlines() if "export" in line.lower()]
    assert len(complaints) == 1, result.stderr  # one warning, naming where the data was going ...
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] in complaints[0] and "retrying" not in result.stderr.replace(
        complaints[0], "")
    counted = int(re.search(r"EXPORT_WARNINGS (\d+)", result.stdout).group(1))
    assert counted > 1  # ... and the repeats counted (nexent_autoinstrument_export_warnings_total)
    assert elapsed < 1.5 + 5.0 + 10.0  # sleep + shutdown bound + interpreter start, generously


@pytest.mark.parametrize("door", ["opentelemetry-instrument", "auto-load"])
def test_no_collector_is_said_once_with_its_address_and_no_retries_hold_up_the_exit(
        door: str, mock_llm: Any, tmp_path: Path) -> None:
    """The headline instruction with no collector running: a short app's spans are still queued at
    exit; one line says how many were not exported and where nothing listened, instead of the
    exporter's retries (each a warning, together seconds before the exit)."""
    url = f"http://127.0.0.1:{closed_port()}"
    result = run_python(APP, env=app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=url),
                        instrument=door == "opentelemetry-instrument", tmp_path=tmp_path)
    assert result.returncode == 0 and "chunks 12" in result.stdout, result.stderr
    said = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and "span(s) not exported: nothing accepts connections at " + url in said[0], said
    assert "Transient error" not in result.stderr and "retrying" not in result.stderr


def test_sample_rate_zero_drops_spans_but_keeps_metrics(otlp: OTLPHTTPReceiver, mock_llm: Any,
                                                        tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_METRICS_EXPORTER="otlp",
                  TELEMETRY_SAMPLE_RATE="0")
    result = run_python(APP, env=env, instrument=True, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not list(otlp.spans())
    assert "llm_request_duration_seconds" in otlp.metric_names()


def test_disabled_instrumentation_is_respected_by_auto_load(otlp: OTLPHTTPReceiver, mock_llm: Any,
                                                            tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
                  OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="openai,httpx,httpx2")
    result = run_python(APP, env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [span.name for _, span in otlp.spans()]
    assert "handle_request" in names and "chat mock-gpt" not in names and "POST" not in names


def test_without_the_openai_layer_the_http_layer_still_measures_the_call(otlp: OTLPHTTPReceiver, mock_llm: Any,
                                                                         tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="openai")
    result = run_python(APP, env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    spans = {span.name: span for _, span in otlp.spans()}
    llm = spans["chat mock-gpt"]
    assert attributes(llm.attributes)["llm.stream.outcome"] == "completed"
    assert attributes(llm.attributes)["http.response.status_code"] == 200


def test_prometheus_port_serves_metrics_for_non_web_apps(mock_llm: Any, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    port = closed_port()
    scrape = f"urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode()"
    code = ("import time\n_started = time.perf_counter()\n" + APP
            + f"\nimport urllib.request\nprint({scrape})\nprint('APP_SECONDS', time.perf_counter() - _started)\n")
    result = run_python(code, env=app_env(mock_llm, OTEL_TRACES_EXPORTER="none", PROMETHEUS_PORT=str(port)),
                        tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    text, app_seconds = result.stdout.split("internal_errors {}", 1)[1].split("APP_SECONDS")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ttft = families["llm_time_to_first_token_seconds"]
    assert ttft.type == "histogram"
    values = {s.name: s.value for s in ttft.samples if s.labels.get("model") == "mock-gpt"}
    assert values["llm_time_to_first_token_seconds_count"] == 1  # the app makes one call
    # The mock sends the first token ttft (20 ms) after it began to read the request; the call
    # came within the app's run (a cold process on a busy machine may take seconds over it).
    assert mock_llm.config.ttft <= values["llm_time_to_first_token_seconds_sum"] < float(app_seconds)


def test_bad_configuration_warns_once_and_the_app_runs(mock_llm: Any, tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_TRACES_EXPORTER="none", TELEMETRY_SAMPLE_RATE="abc", PROMETHEUS_PORT="http",
                  LLM_SLOW_REQUEST_THRESHOLD_SECONDS="-1")
    result = run_python(APP, env=env, instrument=True, tmp_path=tmp_path)
    assert result.returncode == 0 and "chunks 12" in result.stdout, result.stderr
    for name in ("TELEMETRY_SAMPLE_RATE", "PROMETHEUS_PORT", "LLM_SLOW_REQUEST_THRESHOLD_SECONDS"):
        assert result.stderr.count(name) == 1, result.stderr


def test_secret_never_appears_in_console_output(mock_llm: Any, tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_TRACES_EXPORTER="console",
                  OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    result = run_python(APP, env=env, tmp_path=tmp_path)
    assert result.returncode == 0
    assert "sk-e2e-secret" not in result.stdout + result.stderr
    assert json.dumps("hi") in result.stdout or '\\"hi\\"' in result.stdout  # content capture did work


@pytest.mark.parametrize("library", ["httpx", "httpx2"])
def test_raw_httpx_stream_under_opentelemetry_instrument_matches_the_openai_layer(
        library: str, otlp: OTLPHTTPReceiver, mock_llm: Any, tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_METRICS_EXPORTER="otlp")
    result = run_python(RAW_APP.format(library=library), env=env, instrument=True, tmp_path=tmp_path)
    assert result.returncode == 0 and "events 12" in result.stdout, result.stderr
    raw = {span.name: span for _, span in otlp.spans()}
    llm = raw["chat mock-gpt"]
    assert "POST" not in raw  # (no HTTP span for a single successful attempt)
    raw_attrs = attributes(llm.attributes)
    assert raw_attrs["llm.stream.outcome"] == "completed" and len(decode_offsets(raw_attrs["llm.token.offsets"])) == 10
    assert {"llm_request_duration_seconds", "llm_time_to_first_token_seconds"} <= otlp.metric_names()
    assert b"sk-e2e-secret" not in b"".join(r.SerializeToString() for r in otlp.traces)

    sdk_receiver = OTLPHTTPReceiver()
    try:
        env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=sdk_receiver.endpoint)
        assert run_python(APP, env=env, instrument=True, tmp_path=tmp_path).returncode == 0
        sdk_llm = {span.name: span for _, span in sdk_receiver.spans()}["chat mock-gpt"]
    finally:
        sdk_receiver.stop()
    sdk_attrs = attributes(sdk_llm.attributes)
    sdk_attrs.pop("openai.request.id"), sdk_attrs.pop("openai.processing_ms")
    for name in [k for k in sdk_attrs if k.startswith("openai.ratelimit")]:
        sdk_attrs.pop(name)
    # (present only when the first content chunk's arrival, or some gap, was timed: a busy machine
    # may delay a read)
    timing_dependent = {"llm.server_time_to_first_token", "llm.token_generation_rate", "llm.inter_token_latency.p50",
                        "llm.inter_token_latency.p99", "llm.inter_token_latency.max"}
    assert set(raw_attrs) - timing_dependent == set(sdk_attrs) - timing_dependent


FASTAPI_APP = """
import threading, time, urllib.request
import uvicorn
from fastapi import FastAPI

app = FastAPI()  # no monitoring call at all


@app.get("/ping")
def ping():
    return {"pong": True}


server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port={port}, log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
print(urllib.request.urlopen("http://127.0.0.1:{port}/ping").read().decode())
server.should_exit = True
time.sleep(0.3)
"""


def test_auto_load_traces_a_fastapi_app_with_no_call(otlp: OTLPHTTPReceiver, tmp_path: Path) -> None:
    from nexent_autoinstrument.tools.net import free_port

    code = FASTAPI_APP.replace("{port}", str(free_port()))
    env = clean_env(ENABLE_TELEMETRY="true", OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint)
    result = run_python(code, env=env, tmp_path=tmp_path)
    assert result.returncode == 0 and '"pong":true' in result.stdout, result.stderr
    servers = [span for _, span in otlp.spans() if span.kind == span.SPAN_KIND_SERVER]
    assert [span.name for span in servers] == ["GET /ping"]


def test_mock_llm_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time
    import urllib.request

    from nexent_autoinstrument.tools.net import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "nexent_autoinstrument", "mock-llm", "--port", str(port),
                               "--ttft", "0.01", "--tokens-per-second", "500", "--tokens", "5", "--error-rate", "0"],
                              env=clean_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert "mock LLM listening on" in server.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                models = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models").read())
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert "mock-gpt" in [m["id"] for m in models["data"]]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(
            {"model": "mock-gpt", "messages": []}).encode(), headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request).read())
        assert answer["usage"]["completion_tokens"] == 5
    finally:
        server.terminate()
        server.wait(10)


GENAI_APP = """
import os
import openai

client = openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-test", max_retries=0)
chunks = list(client.chat.completions.create(model="mock-gpt", stream=True, stream_options={"include_usage": True},
                                             messages=[{"role": "user", "content": "hi"}],
                                             extra_body={"mock_tokens": 12, "mock_itl": 0.02}))
client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}],
                               extra_body={"mock_tokens": 5})
try:
    client.chat.completions.create(model="mock-gpt", messages=[], extra_body={"mock_error": 503})
except openai.APIStatusError as exc:
    print("failed", exc.status_code)
print("usage", chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)
"""


def points(receiver: OTLPHTTPReceiver, name: str) -> list[tuple[dict[str, Any], Any]]:
    """(attributes, data point) of the last export of histogram ``name``."""
    metric = receiver.metric_last(name)
    assert metric is not None, (name, sorted(receiver.metric_names()))
    return [(attributes(p.attributes), p) for p in metric.histogram.data_points]


def test_genai_convention_metrics_over_otlp(otlp: OTLPHTTPReceiver, mock_llm: Any, tmp_path: Path) -> None:
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_METRICS_EXPORTER="otlp")
    result = run_python(GENAI_APP, env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "failed 503" in result.stdout
    (streamed,) = [attributes(s.attributes) for _, s in otlp.spans() if attributes(s.attributes).get("llm.stream")]
    # (A machine loaded far past its cores may read some chunks late, together: their gaps are not
    # timed, and with most of them late none reaches the histograms. Exact counts need every gap.)
    every_gap_timed = streamed["llm.stream.waiting_chunks"] == 0
    prompt_tokens, completion_tokens = map(int, result.stdout.split("usage")[1].split())
    port = int(mock_llm.base_url.split(":")[2].split("/")[0])
    required = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai_compatible",
                "gen_ai.request.model": "mock-gpt", "server.address": "127.0.0.1", "server.port": port}
    units = {m.name: m.unit for r in otlp.metrics for rm in r.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert units["gen_ai.client.operation.duration"] == "s" and units["gen_ai.client.token.usage"] == "{token}"
    assert units["gen_ai.client.operation.time_to_first_chunk"] == "s"
    assert units.get("gen_ai.client.operation.time_per_output_chunk", "s") == "s"

    durations = points(otlp, "gen_ai.client.operation.duration")
    ok = [p for a, p in durations if "error.type" not in a]
    failed = [(a, p) for a, p in durations if a.get("error.type") == "InternalServerError"]  # the SDK's class
    assert sum(p.count for p in ok) == 2 and len(failed) == 1 and failed[0][1].count == 1
    for attrs, _ in durations:
        assert {k: attrs[k] for k in required} == required
    assert all(a["gen_ai.response.model"] == "mock-gpt" for a, _ in durations if "error.type" not in a)
    assert list(durations[0][1].explicit_bounds)[:3] == [0.01, 0.02, 0.04]  # the conventions' buckets

    usage = {a["gen_ai.token.type"]: p for a, p in points(otlp, "gen_ai.client.token.usage")}
    assert usage["output"].sum == completion_tokens + 5 and usage["output"].count == 2
    assert usage["input"].count == 2 and usage["input"].sum >= prompt_tokens

    (ttfc,) = points(otlp, "gen_ai.client.operation.time_to_first_chunk")  # streamed calls only
    assert ttfc[1].count == 1 and 0.9 * 0.02 <= ttfc[1].sum < 2.0  # the mock's first token after 20 ms
    if not every_gap_timed:
        return
    (per_chunk,) = points(otlp, "gen_ai.client.operation.time_per_output_chunk")
    assert per_chunk[1].count == 11  # each content chunk after the first
    assert 11 * 0.02 * 0.9 <= per_chunk[1].sum < 11 * 0.02 + 1.0  # the mock's 20 ms gaps (read as they came)
    assert sum(per_chunk[1].bucket_counts) == 11 and per_chunk[1].explicit_bounds[0] == 0.001
    assert sum(per_chunk[1].bucket_counts[:3]) == 0  # none below 5 ms
    assert per_chunk[1].min <= per_chunk[1].max
    (itl,) = points(otlp, "llm_inter_token_latency_seconds")  # the contract name, fed the same way
    assert itl[1].count == 11 and itl[0] == {"model": "mock-gpt", "operation": "chat"}


FORKING_APP = """
import os, sys

def call():
    import openai
    client = openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-test", max_retries=0)
    client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}])

early = sys.argv[1] == "before"  # (fork before the library is imported: the child makes its metrics itself)
if not early:
    call(); call()
pid = os.fork()
if pid == 0:
    call()
    sys.exit(0)  # (atexit: the child's last export)
if early:
    call(); call()
print("child exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.parametrize("fork", ["after", "before"])
def test_a_fork_childs_otlp_metrics_count_only_its_own_calls(fork: str, otlp: OTLPHTTPReceiver, mock_llm: Any,
                                                              tmp_path: Path) -> None:
    """A fork child exports its metrics under its own identity, and they count its calls alone:
    the parent's two calls are counted once, by the parent, whether the child was forked after
    them or before the library was even imported."""
    env = app_env(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_METRICS_EXPORTER="otlp",
                  OTEL_TRACES_EXPORTER="none")
    result = run_python(FORKING_APP, env=env, tmp_path=tmp_path, script_args=(fork,))
    assert (result.returncode, result.stdout.strip()) == (0, "child exit 0"), result.stderr
    calls: dict[int, dict[str, int]] = {}
    with otlp.lock:
        for request in otlp.metrics:
            for resource_metrics in request.resource_metrics:
                pid = attributes(resource_metrics.resource.attributes)["process.pid"]
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name in ("llm_request_duration_seconds", "gen_ai.client.operation.duration",
                                           "http.client.request.duration"):
                            # (cumulative points: the last export of each process has them all)
                            calls.setdefault(pid, {})[metric.name] = sum(p.count for p in metric.histogram.data_points)
    assert sorted(calls.values(), key=lambda counts: sum(counts.values())) == [
        dict.fromkeys(("llm_request_duration_seconds", "gen_ai.client.operation.duration",
                       "http.client.request.duration"), n) for n in (1, 2)], calls


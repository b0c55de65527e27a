"""The cardinality suite: whatever an outsider controls, the agent's metrics stay bounded.

For each dimension that a caller's input or a server's answer decides (host, port, path, HTTP
method, request model, response model, error type, finish reason, and through boto3 a Bedrock
model id and the error code of a stream's exception frame), an app in a fresh interpreter sends
2,000 requests that differ only in it, through httpx, the openai SDK (over httpx2) or boto3, with
an in-process transport (botocore's: a ``before-send`` handler): no sockets, so every value is
free. It runs bare and under the agent (metrics over OTLP to a real receiver, and ``/metrics``).
Then:

- every label of every Prometheus family on ``/metrics``, and every attribute of every OTLP
  metric, takes at most its cap (``CAPS``, from the code) plus ``other`` distinct values, and the
  series (attribute sets) of a family at most (cap + 1) x the combinations of its other labels;
- the agent's resident memory grows by less than 5 MB more than the bare app's over the 2,000.

And the model cap is the request model's: response models must not use it up.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import clean_env, run_python
from nexent_autoinstrument.tools.net import free_port
from receivers import OTLPHTTPReceiver, attributes

#: The most distinct values each label (Prometheus) or attribute (OTLP) may take before the
#: rest fold into one more value (``other``, or ``_OTHER`` for methods). From the code:
#: metrics.py's BoundedLabel usages, and the HTTP semantic conventions for methods.
CAPS = {
    "model": 100,  # LLMMetrics.model_label = BoundedLabel(max_model_labels): LLM_MAX_MODEL_LABELS, default 100
    "gen_ai.request.model": 100,
    "gen_ai.response.model": 100,
    "error_type": 64,  # LLMMetrics.error_label = BoundedLabel(64)
    "error.type": 64,
    "server_address": 100,  # HTTPMetrics.server_label = BoundedLabel(100)
    "server.address": 100,
    "server.port": 100,  # (no cap of its own in the code: bounded with the address it belongs to)
    "http_request_method": 9,  # GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH; others are _OTHER
    "http.request.method": 9,
}
#: Any other label: a few fixed values (operation, outcome, token type, slow reason, status code...).
DEFAULT_CAP = 20
#: Requests per dimension, all different in it.
DISTINCT = 2000
#: What the agent may add to the bare app's resident memory growth over those requests.
RSS_BUDGET_MB = 5.0

#: Dimension -> the labels and attributes that carry it (none: it must not reach any metric).
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "host": ("server_address", "server.address"),
    "port": ("server.port",),
    "path": (),
    "method": ("http_request_method", "http.request.method"),
    "request_model": ("model", "gen_ai.request.model"),
    "response_model": ("gen_ai.response.model",),
    "error_type": ("error_type", "error.type"),
    "finish_reason": (),
    "bedrock_model": ("model", "gen_ai.request.model"),
    "bedrock_error_code": (),  # (a span attribute, llm.error.code; on metrics only botocore's error class)
}

APP = r'''
import gc, json, os, resource, sys, time, urllib.request

dimension, n = os.environ["CARD_DIMENSION"], int(os.environ["CARD_N"])
MESSAGES = [{"role": "user", "content": "hi"}]

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def chat_answer(model="served-model", finish="stop"):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}

def anthropic_stream_ending_in(kind):
    def event(name, data):
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
               "usage": {"input_tokens": 3, "output_tokens": 0}}
    return (event("message_start", {"type": "message_start", "message": message})
            + event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": "hi"}})
            + event("error", {"type": "error", "error": {"type": kind, "message": "overloaded"}}))

def answer(request, library):
    # (content from an iterator: bytes given whole would be read before any wrapper could see them)
    case = int(request.headers.get("x-case", "0"))
    if dimension == "error_type":
        return library.Response(200, headers={"content-type": "text/event-stream"},
                                content=iter([anthropic_stream_ending_in(f"error-kind-{case}")]))
    if dimension in ("response_model", "request_and_response_model"):
        body = chat_answer(model=f"served-{case}")
    elif dimension == "finish_reason":
        body = chat_answer(finish=f"reason-{case}")
    else:
        body = chat_answer()
    return library.Response(200, headers={"content-type": "application/json"},
                            content=iter([json.dumps(body).encode()]))

if dimension.startswith("bedrock"):
    import boto3
    from botocore.awsrequest import AWSResponse
    from botocore.exceptions import ClientError
    from nexent_autoinstrument.tools.mock.bedrock import frame

    class Body:  # (what botocore reads an answer from: urllib3's response, here in memory)
        def __init__(self, data):
            self.data = data
        def stream(self, *args, **kwargs):
            yield self.data
        def close(self):
            pass

    def event(kind, payload):
        return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                     json.dumps(payload).encode())

    case = [0]
    def send(request, **kwargs):
        if dimension == "bedrock_model":
            answer = {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                      "stopReason": "end_turn", "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4},
                      "metrics": {"latencyMs": 5}}
            body = Body(json.dumps(answer).encode())
            return AWSResponse(request.url, 200, {"content-type": "application/json"}, body)
        frames = (event("messageStart", {"role": "assistant"})
                  + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}})
                  + frame({":exception-type": f"kind{case[0]}Exception", ":content-type": "application/json",
                           ":message-type": "exception"}, b'{"message": "overloaded"}'))
        return AWSResponse(request.url, 200, {"content-type": "application/vnd.amazon.eventstream"}, Body(frames))

    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDCARD",
                          aws_secret_access_key="card")
    client.meta.events.register("before-send.bedrock-runtime", send)
    converse = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}

    def call(i):
        case[0] = i
        if dimension == "bedrock_model":
            client.converse(modelId=f"vendor.model-{i}-v1:0", **converse)
            return
        try:
            list(client.converse_stream(modelId="vendor.model-v1:0", **converse)["stream"])
        except ClientError:
            pass
elif dimension in ("request_model", "response_model", "finish_reason", "request_and_response_model"):
    import httpx2, openai
    client = openai.OpenAI(base_url="http://llm.example/v1", api_key="sk-test", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(lambda r: answer(r, httpx2))))

    def call(i):
        model = f"model-{i}" if dimension in ("request_model", "request_and_response_model") else "m"
        client.chat.completions.create(model=model, messages=MESSAGES, extra_headers={"x-case": str(i)})
else:
    import httpx
    client = httpx.Client(transport=httpx.MockTransport(lambda r: answer(r, httpx)))
    chat = {"model": "m", "messages": MESSAGES}

    def call(i):
        headers = {"x-case": str(i)}
        if dimension == "host":
            client.post(f"http://h{i}.example/v1/chat/completions", json=chat, headers=headers)
        elif dimension == "port":
            client.post(f"http://llm.example:{10000 + i}/v1/chat/completions", json=chat, headers=headers)
        elif dimension == "path":
            client.post(f"http://llm.example/tenant-{i}/v1/chat/completions", json=chat, headers=headers)
        elif dimension == "method":
            client.request(f"M{i}", "http://llm.example/v1/chat/completions", json=chat, headers=headers)
        elif dimension == "error_type":
            client.post("http://llm.example/v1/messages", headers=headers,
                        json={"model": "claude", "max_tokens": 8, "messages": MESSAGES, "stream": True})
        else:
            raise SystemExit(f"unknown dimension {dimension}")

for _ in range(50):  # warm up: imports, instruments, first-use caches (the same value as request 0)
    call(0)
gc.collect()
before, max_before, started = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
for i in range(n):
    call(i)
seconds = time.perf_counter() - started
gc.collect()
report = {"rss_growth": rss() - before, "max_rss_growth": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                          - max_before) * 1024, "seconds": seconds}
if os.environ.get("PROMETHEUS_PORT"):
    report["metrics"] = urllib.request.urlopen(
        f"http://127.0.0.1:{os.environ['PROMETHEUS_PORT']}/metrics", timeout=30).read().decode()
with open(os.environ["CARD_REPORT"], "w") as out:
    json.dump(report, out)
'''


def run_app(dimension: str, tmp_path: Path, *, agent: bool, n: int = DISTINCT,
            receiver: OTLPHTTPReceiver | None = None) -> dict[str, Any]:
    """Run the app for ``dimension`` in a fresh interpreter, bare or under the agent; its report."""
    where = tmp_path / ("agent" if agent else "bare")
    where.mkdir()
    report = where / "report.json"
    env = {"CARD_DIMENSION": dimension, "CARD_N": str(n), "CARD_REPORT": str(report)}
    if agent:
        assert receiver is not None
        env.update(ENABLE_TELEMETRY="true", SERVICE_NAME="cardinality", OTEL_TRACES_EXPORTER="none",
                   OTEL_METRICS_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                   OTEL_METRIC_EXPORT_INTERVAL="600000",  # (one export, at exit: cumulative, so it has every set)
                   PROMETHEUS_PORT=str(free_port()))
    result = run_python(APP, env=clean_env(**env), tmp_path=where, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(report.read_text())


def prometheus_series(text: str) -> dict[str, list[dict[str, str]]]:
    """Family -> the label sets of its series (histogram buckets, sum and count are one series)."""
    families: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue  # (the creation times of a family's series, one for one: not series of their own)
        seen = {frozenset((k, v) for k, v in sample.labels.items() if k != "le") for sample in family.samples}
        if seen:
            families[family.name] = [dict(labels) for labels in seen]
    return families


def otlp_attribute_sets(receiver: OTLPHTTPReceiver) -> dict[str, list[dict[str, Any]]]:
    """Metric -> the distinct attribute sets of its data points, over every export."""
    found: dict[str, set[frozenset[tuple[str, Any]]]] = defaultdict(set)
    with receiver.lock:
        requests = list(receiver.metrics)
    for request in requests:
        for resource_metrics in request.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        found[metric.name].add(frozenset((k, str(v)) for k, v in attributes(point.attributes).items()))
    return {name: [dict(s) for s in sets] for name, sets in found.items()}


def bound_violations(where: str, series: dict[str, list[dict[str, Any]]], keys: Iterable[str]) -> list[str]:
    """What exceeds its bound: a label with more distinct values than its cap + 1, a family with
    more series than (cap + 1) x the combinations of its labels other than the dimension's."""
    keys = set(keys)
    problems = []
    for name, label_sets in sorted(series.items()):
        values: dict[str, set[Any]] = defaultdict(set)
        for labels in label_sets:
            for key, value in labels.items():
                values[key].add(value)
        over = [f"{len(seen)} distinct {key} (bound {CAPS.get(key, DEFAULT_CAP)} + 1)"
                for key, seen in sorted(values.items()) if len(seen) > CAPS.get(key, DEFAULT_CAP) + 1]
        if over:
            problems.append(f"{where} {name}: {len(label_sets)} series, {', '.join(over)}")
            continue
        dimension_cap = max((CAPS.get(key, DEFAULT_CAP) for key in keys & set(values)), default=0)
        others = {frozenset((k, v) for k, v in labels.items() if k not in keys) for labels in label_sets}
        if len(label_sets) > (dimension_cap + 1) * len(others):
            problems.append(f"{where} {name}: {len(label_sets)} series (bound ({dimension_cap} + 1) x {len(others)})")
    return problems


def summary(series: dict[str, list[dict[str, Any]]], keys: Iterable[str]) -> str:
    keys = set(keys)
    parts = []
    for name, label_sets in sorted(series.items()):
        distinct = {k: len({labels.get(k) for labels in label_sets if k in labels}) for k in keys}
        distinct = {k: v for k, v in distinct.items() if v}
        if distinct or len(label_sets) > 10:
            parts.append(f"{name}={len(label_sets)}" + (f" {distinct}" if distinct else ""))
    return ", ".join(parts)


def _measure(dimension: str, tmp_root: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
    receiver = OTLPHTTPReceiver()
    try:
        with ThreadPoolExecutor(2) as pool:  # bare and agent side by side (their memory is their own)
            bare = pool.submit(run_app, dimension, Path(tmp_root), agent=False)
            agent = pool.submit(run_app, dimension, Path(tmp_root), agent=True, receiver=receiver)
            return bare.result(), agent.result(), otlp_attribute_sets(receiver)
    finally:
        receiver.stop()


@pytest.mark.parametrize("dimension", list(DIMENSIONS))
def test_each_dimension_an_outsider_controls_is_bounded(dimension: str, tmp_path: Path) -> None:
    bare, agent, otlp = _measure(dimension, str(tmp_path))
    keys = DIMENSIONS[dimension]
    prometheus = prometheus_series(agent["metrics"])
    grown_mb, bare_mb = agent["rss_growth"] / 2**20, bare["rss_growth"] / 2**20
    facts = (f"{DISTINCT} distinct {dimension}: RSS +{grown_mb:.1f} MB under the agent, +{bare_mb:.1f} MB bare "
             f"({agent['seconds']:.1f} s vs {bare['seconds']:.1f} s); /metrics: {summary(prometheus, keys)}; "
             f"OTLP: {summary(otlp, keys)}")
    print(facts)  # (shown with -rP, -s)
    # The run measured something: the agent's metrics are there, with the calls in them.
    if not dimension.startswith("bedrock"):  # (botocore's requests get no HTTP metrics of the agent's)
        assert "http_client_request_duration_seconds" in prometheus, facts
        assert otlp.get("http.client.request.duration"), facts
    if dimension != "method":  # (only POSTs to an LLM path are LLM calls)
        assert "llm_request_duration_seconds" in prometheus and otlp.get("gen_ai.client.operation.duration"), facts
    problems = bound_violations("/metrics", prometheus, keys) + bound_violations("OTLP", otlp, keys)
    if grown_mb - bare_mb >= RSS_BUDGET_MB:
        problems.append(f"RSS grew {grown_mb - bare_mb:.1f} MB more under the agent than bare "
                        f"(budget {RSS_BUDGET_MB} MB)")
    if problems:
        pytest.fail("\n".join([facts, *problems]), pytrace=False)


def test_response_models_do_not_use_up_the_request_model_cap(tmp_path: Path) -> None:
    """LLM_MAX_MODEL_LABELS caps the ``model`` label, which is the request model: a server that
    answers each call with a new response model must leave the first 100 request models their
    own label."""
    receiver = OTLPHTTPReceiver()
    try:
        report = run_app("request_and_response_model", tmp_path, agent=True, n=300, receiver=receiver)
    finally:
        receiver.stop()
    models = {labels["model"] for labels in prometheus_series(report["metrics"])["llm_request_duration_seconds"]}
    own = sorted((m for m in models if m != "other"), key=lambda m: int(m.rsplit("-", 1)[1]))
    assert "other" in models
    assert own == [f"model-{i}" for i in range(CAPS["model"])], (
        f"{len(own)} request models got their own label before `other` (expected {CAPS['model']}): "
        f"{own[:3]}...{own[-3:]}")

"""Do no harm: the agent never breaks, slows, leaks from or bloats the application it runs in."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import re
import signal
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from conftest import clean_env, post_chat, run_python, start_example
from nexent_autoinstrument import guest, lifecycle
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.instrumentors import stainless as openai_layer
from nexent_autoinstrument.instrumentors.otel import OpenAIInstrumentor
from nexent_autoinstrument.pipeline import SHUTDOWN_BOUND_SECONDS
from nexent_autoinstrument.streams import ItemStream
from nexent_autoinstrument.tools.net import free_port
from receivers import OTLPHTTPReceiver
from test_settings import BAD


class BlackHole:
    """Accepts TCP connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.running = False
        self.sock.close()
        for connection in self.held:
            connection.close()


LOAD = """
import os, resource, time
from nexent_autoinstrument import monitoring_manager

def burst(n):
    for i in range(n):
        with monitoring_manager.trace_llm_request("chat", "m") as llm:
            llm.record_token(); llm.record_token()
            llm.record_usage(3, 2)

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

started = time.perf_counter()
burst(2000)
first = rss_mb()
burst(10000)
print("RSS", first, rss_mb())
print("ELAPSED", time.perf_counter() - started)
"""


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.mark.parametrize("collector", ["closed-port", "black-hole"])
def test_collector_down_costs_no_errors_no_memory_and_a_bounded_exit(collector: str, black_hole: BlackHole,
                                                                     tmp_path: Path) -> None:
    port = free_port() if collector == "closed-port" else black_hole.port
    env = clean_env(ENABLE_TELEMETRY="true", SERVICE_NAME="reliability", OTEL_METRICS_EXPORTER="otlp",
                    OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}", OTEL_BSP_SCHEDULE_DELAY="100",
                    OTEL_METRIC_EXPORT_INTERVAL="500")
    started = time.monotonic()
    result = run_python(LOAD, env=env, tmp_path=tmp_path, timeout=120)
    total = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    first, last = map(float, re.search(r"RSS ([\d.]+) ([\d.]+)", result.stdout).groups())
    assert last - first < 25, (first, last)  # 10,000 more spans with a bounded queue of 2048
    elapsed = float(re.search(r"ELAPSED ([\d.]+)", result.stdout).group(1))
    # What the collector adds to exit: at most the documented flush bound (plus interpreter teardown).
    assert total - elapsed < SHUTDOWN_BOUND_SECONDS + 5, (total, elapsed)


@pytest.mark.parametrize(("name", "raw"), BAD, ids=[f"{n}={r}" for n, r in BAD])
def test_each_bad_value_warns_once_and_the_app_runs(name: str, raw: str, tmp_path: Path) -> None:
    code = ("from nexent_autoinstrument import monitoring_manager\n"
            "with monitoring_manager.trace_llm_request('chat', 'm') as llm:\n    llm.record_token()\nprint('RAN')\n")
    env = clean_env(**{"ENABLE_TELEMETRY": "true", "OTEL_TRACES_EXPORTER": "none", name: raw})
    result = run_python(code, env=env, tmp_path=tmp_path)
    assert result.returncode == 0 and "RAN" in result.stdout, result.stderr
    warnings = [line for line in result.stderr.splitlines() if f"{name}={raw!r}" in line]
    assert len(warnings) == 1 and "default" in warnings[0], result.stderr


def test_cardinality_stays_bounded(harness_factory: Any) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from nexent_autoinstrument import bootstrap, settings
    from nexent_autoinstrument.manual import monitoring_manager

    harness = harness_factory()
    saved = (settings._cached, bootstrap._telemetry)
    settings._cached, bootstrap._telemetry = harness.telemetry.settings, harness.telemetry
    try:
        for index in range(10_000):
            with pytest.raises(ValueError), monitoring_manager.trace_llm_request("chat", f"model-{index}-" + "x" * 300):
                raise ValueError(f"failure number {index}")
    finally:
        settings._cached, bootstrap._telemetry = saved
    text = generate_latest(harness.registry).decode()
    models = {s.labels["model"] for f in text_string_to_metric_families(text) for s in f.samples if "model" in s.labels}
    error_types = {s.labels["error_type"] for f in text_string_to_metric_families(text) for s in f.samples
                   if "error_type" in s.labels}
    assert len(models) == 101 and "other" in models  # the cap (100) and the fold
    assert all(len(model) <= 128 for model in models)
    assert error_types == {"ValueError"}  # exception classes, never messages
    assert len(text) < 2_000_000


def test_span_attribute_values_are_bounded_by_the_pipeline(tmp_path: Path) -> None:
    code = ("from nexent_autoinstrument import monitoring_manager\n"
            "with monitoring_manager.trace_llm_request('chat', 'm' * 100000):\n    pass\n")
    env = clean_env(ENABLE_TELEMETRY="true", OTEL_TRACES_EXPORTER="console")
    result = run_python(code, env=env, tmp_path=tmp_path)
    model = json.loads(result.stdout)["attributes"]["gen_ai.request.model"]
    assert len(model) == 8192


class CountingExporter(SpanExporter):
    """Keeps counts, not spans, so that memory measures the agent, not the test."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}

    def export(self, spans: Any) -> SpanExportResult:
        for span in spans:
            outcome = span.attributes.get("llm.stream.outcome", "?")
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return SpanExportResult.SUCCESS


def test_abandoned_streams_leak_nothing() -> None:
    import httpx2

    from nexent_autoinstrument.metrics import LLMMetrics
    from nexent_autoinstrument.settings import Settings
    from nexent_autoinstrument.tracker import Telemetry

    body = [b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
            b'"delta":{"content":"x"},"finish_reason":null}]}\n\n'] * 5 + [b"data: [DONE]\n\n"]
    transport = httpx2.MockTransport(lambda request: httpx2.Response(
        200, headers={"content-type": "text/event-stream"}, content=iter(body)))
    client = openai.OpenAI(base_url="http://leak.invalid/v1", api_key="sk-test",
                           http_client=httpx2.Client(transport=transport))
    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    from prometheus_client import CollectorRegistry

    telemetry = Telemetry(Settings(enabled=True), provider.get_tracer("leak"), LLMMetrics(CollectorRegistry()))
    open_before = set(lifecycle._live)  # (calls other tests left open)
    OpenAIInstrumentor().instrument(telemetry=telemetry)
    try:
        def abandon(count: int) -> None:
            for _ in range(count):
                stream = client.chat.completions.create(model="m", messages=[], stream=True)
                next(stream)  # one chunk read, then dropped: never closed

        def one_more_call() -> None:  # and the agent thread's work: what the collector posted, then its tick
            list(client.chat.completions.create(model="m", messages=[], stream=True))
            for _ in range(2):  # (an end posted from a finalizer keeps its cycle for one more collection)
                assert guest.run_and_wait(lambda: None, 10)
                gc.collect()
            lifecycle.end_suspended()

        abandon(200)
        gc.collect()
        one_more_call()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        abandon(600)
        gc.collect()
        one_more_call()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    finally:
        OpenAIInstrumentor().uninstrument()
    assert exporter.outcomes == {"abandoned": 800, "completed": 2}  # every span ended, exactly once
    assert not [o for o in gc.get_objects() if type(o) is ItemStream]
    assert not set(lifecycle._live) - open_before and not openai_layer._streams
    assert grown < 60_000, grown  # bytes, over 600 abandoned streams: under 100 bytes each


def test_concurrent_streams_each_measure_their_own_timing(harness_factory: Any, mock_llm: Any) -> None:
    harness = harness_factory(max_model_labels=1000)
    OpenAIInstrumentor().instrument(telemetry=harness.telemetry)
    rng = random.Random(5)
    plan = {f"stream-{i}": (rng.randint(3, 25), rng.choice([0.02, 0.1, 0.3])) for i in range(216)}
    names = list(plan)

    run = uuid.uuid4().hex  # (the mock's timelines outlive this test)
    seen: dict[str, tuple[float, list[float]]] = {}  # name -> (before the call, when each content chunk came)

    def extra(name: str) -> dict[str, Any]:
        tokens, ttft = plan[name]
        return {"mock_tokens": tokens, "mock_ttft": ttft, "mock_itl": 0.01, "mock_label": f"{run}-{name}"}

    def content(chunk: Any) -> bool:
        return bool(chunk.choices and chunk.choices[0].delta.content)

    async def async_streams() -> None:
        client = openai.AsyncOpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)

        async def one(name: str) -> None:
            called, had = time.perf_counter(), []
            async for chunk in await client.chat.completions.create(model=name, messages=[], stream=True,
                                                                    extra_body=extra(name)):
                if content(chunk):
                    had.append(time.perf_counter())
            seen[name] = (called, had)

        await asyncio.gather(*(one(name) for name in names[:200]))

    def sync_stream(name: str) -> None:
        client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
        called, had = time.perf_counter(), []
        for chunk in client.chat.completions.create(model=name, messages=[], stream=True, extra_body=extra(name)):
            if content(chunk):
                had.append(time.perf_counter())
        seen[name] = (called, had)

    try:
        threads = [threading.Thread(target=sync_stream, args=(name,)) for name in names[200:]]
        for thread in threads:
            thread.start()
        asyncio.run(async_streams())
        for thread in threads:
            thread.join(60)
    finally:
        OpenAIInstrumentor().uninstrument()
    spans = {span.attributes["gen_ai.request.model"]: span for span in harness.llm_spans()}
    assert len(harness.llm_spans()) == len(spans) == 216  # none lost, none doubled
    slack = 2e-6  # (offsets are whole microseconds)
    for name, (tokens, ttft) in plan.items():
        attrs = spans[name].attributes
        offsets = [offset / 1e6 for offset in decode_offsets(attrs["llm.token.offsets"])]
        timeline = mock_llm.timelines[f"{run}-{name}"]
        called, had = seen[name]
        assert len(offsets) == len(had) == len(timeline["tokens"]) == tokens == attrs["gen_ai.usage.output_tokens"]
        # A stream never sees a token before its own server sent it, nor times it after its own
        # caller had it (cross-talk would break this): bounds of its own, whatever the load (under
        # 216 concurrent streams on 2 cores a chunk can wait seconds for the CPU).
        for index, (sent, at, got) in enumerate(zip(timeline["tokens"], offsets, had, strict=True)):
            assert sent - timeline["arrived"] - slack <= at <= got - called + slack, (name, index)
        assert attrs["llm.time_to_first_token"] >= ttft  # (the server waited that long after it began to read)


def test_sigterm_during_active_streams_loses_nothing(mock_llm: Any) -> None:
    receiver = OTLPHTTPReceiver()
    try:
        base, process = start_example(mock_llm, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                                      OTEL_BSP_SCHEDULE_DELAY="60000")
        for _ in range(3):
            assert post_chat(base)[0] == 200
        active = [threading.Thread(target=post_chat, args=(base,), kwargs={"mock": {"tokens": 40, "itl": 0.05}})
                  for _ in range(3)]
        for thread in active:
            thread.start()
        time.sleep(0.8)  # the three long streams are now mid-way
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        for thread in active:
            thread.join(10)
        assert time.monotonic() - started < 2.0 + SHUTDOWN_BOUND_SECONDS + 5
        outcomes = [dict((kv.key, kv.value.string_value) for kv in span.attributes).get("llm.stream.outcome")
                    for _, span in receiver.spans() if span.name == "chat mock-gpt"]
        assert len(outcomes) == 6, outcomes  # three completed before, three active at SIGTERM
        assert outcomes.count("completed") >= 3
    finally:
        receiver.stop()


SECRET_APP = """
import os, urllib.request
import openai
from nexent_autoinstrument import monitoring_manager

client = openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-DISTINCTIVE-SECRET-KEY-0042",
                       default_headers={"Authorization": "Bearer sk-DISTINCTIVE-SECRET-KEY-0042",
                                        "X-Api-Key": "sk-DISTINCTIVE-SECRET-KEY-0042"},
                       default_query={"api-key": "sk-DISTINCTIVE-SECRET-KEY-0042"}, max_retries=1)
for stream in (False, True):
    result = client.chat.completions.create(model="mock-gpt", stream=stream,
                                            messages=[{"role": "user", "content": "hello there"}])
    if stream:
        list(result)
try:
    client.chat.completions.create(model="mock-gpt", messages=[], extra_body={"mock_error": 401})
except openai.AuthenticationError as exc:
    print("auth error seen")
print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % os.environ["PROMETHEUS_PORT"]).read().decode())
"""


@pytest.mark.parametrize("capture", ["false", "true"])
def test_secrets_never_leave_the_process(capture: str, mock_llm: Any, tmp_path: Path) -> None:
    receiver = OTLPHTTPReceiver()
    try:
        env = clean_env(ENABLE_TELEMETRY="true", MOCK_URL=mock_llm.base_url, OTEL_METRICS_EXPORTER="otlp",
                        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, PROMETHEUS_PORT=str(free_port()),
                        OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=capture,
                        LLM_SLOW_REQUEST_THRESHOLD_SECONDS="0.001")  # the slow-call warning is logged too
        result = run_python(SECRET_APP, env=env, instrument=True, tmp_path=tmp_path)
        assert result.returncode == 0 and "auth error seen" in result.stdout, result.stderr
        exported = b"".join(r.SerializeToString() for r in receiver.traces + receiver.metrics)
        assert b"chat mock-gpt" in exported and b"llm_request_duration_seconds" in result.stdout.encode()
        assert (b"hello there" in exported) is (capture == "true")  # content capture did what it says
        assert "slow LLM call" in result.stderr
        for place in (exported, result.stdout.encode(), result.stderr.encode()):
            at = place.find(b"DISTINCTIVE-SECRET")
            assert at == -1, place[max(0, at - 300):at + 50]
        url_full = [kv.value.string_value for _, span in receiver.spans() for kv in span.attributes
                    if kv.key == "url.full"]
        assert url_full and all("api-key=REDACTED" in url for url in url_full)
    finally:
        receiver.stop()

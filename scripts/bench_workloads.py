#!/usr/bin/env python3
"""One measurement of scripts/bench_overhead.py, run in a fresh interpreter of any venv (ours or a peer's).

    python scripts/bench_workloads.py '{"kind": "sync", "agent": "openllmetry", "instrumented": true, ...}'

prints one JSON line: what was run, the LLM spans the agent emitted, its internal errors and
warnings, and the figures the kind measures itself (CPU time, memory). Instruction counts are
read by the caller from callgrind's dump of the ``region()`` below.

Every kind serves an OpenAI chat completion from memory (``MockTransport`` of the httpx the
installed openai uses), except ``concurrency``, which talks to a real server on loopback. A
warm-up call runs before the measured region, bare and instrumented alike, so lazy imports and
first-call work stay out of it. Only standard-library, openai and OpenTelemetry imports: the
peers' venvs have nothing else, and ours is imported only when it is the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

OURS = "nexent-autoinstrument"
#: peer agent -> (module, instrumentor class)
PEERS: dict[str, tuple[str, str]] = {
    "openllmetry": ("opentelemetry.instrumentation.openai", "OpenAIInstrumentor"),
    "otel-genai-openai": ("opentelemetry.instrumentation.genai.openai", "OpenAIInstrumentor"),
}
#: Chunks of the warm-up stream (enough to run every per-chunk and end-of-call path once).
WARMUP_CHUNKS = 100
#: How long each read of a measured in-memory stream waits for its chunk, as a read from a
#: server does: the HTTP layer then sees every content chunk arrive (the timed path, with gaps
#: computed at the end), not data that was waiting for the reader. A sleep costs the same few
#: instructions in every run. The agent takes a read as waiting when the reader was away more
#: than 8 times as long as the read took: under callgrind the SDK takes about 8 ms per chunk,
#: and several times that on a busy machine, so 5 ms leaves a margin.
READ_PACE_SECONDS = 0.005
BASE_URL = "http://bench.invalid/v1"
REQUEST: dict[str, Any] = {"model": "bench", "messages": [{"role": "user", "content": "x"}]}

_CHUNK = ('data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"bench",'
          '"choices":[{"index":0,"delta":%s,"finish_reason":%s}]}\n\n')
ROLE = (_CHUNK % ('{"role":"assistant","content":""}', "null")).encode()
CONTENT = (_CHUNK % ('{"content":"tok "}', "null")).encode()
STOP = (_CHUNK % ("{}", '"stop"')).encode()
DONE = b"data: [DONE]\n\n"
COMPLETION = json.dumps({
    "id": "c1", "object": "chat.completion", "created": 1, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * 20}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 20, "total_tokens": 21},
}).encode()


def sse_events(chunks: int) -> list[bytes]:
    """A streamed chat completion of ``chunks`` content chunks, one SSE event per network read."""
    return [ROLE, *[CONTENT] * chunks, STOP, DONE]


# -- callgrind region ---------------------------------------------------------------------------------

class Region:
    """Callgrind counts only inside ``with region():`` (the process runs with --instr-atstart=no).

    The garbage collector is paused inside, for bare and instrumented runs alike: where its
    collections fell in the two streams of a slope made runs of the same code differ by up to
    8k instructions per chunk; paused, they agree within about 1k. (An agent that kept objects
    alive per chunk would hide GC work here; the memory row is where that shows.)

    The markers are callgrind client requests in a tiny C library (``BENCH_CALLGRIND_MARKERS``);
    outside valgrind they do nothing, and without the variable this is a plain context manager."""

    def __init__(self) -> None:
        path = os.environ.get("BENCH_CALLGRIND_MARKERS")
        markers = ctypes.CDLL(path) if path else None
        self._start: Callable[[], Any] = markers.bench_start if markers else lambda: None
        self._dump: Callable[[bytes], Any] = markers.bench_dump if markers else lambda label: None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        start, dump = self._start, self._dump
        gc.disable()
        start()
        yield
        dump(b"region")
        gc.enable()


region = Region()


# -- the agents ---------------------------------------------------------------------------------------

class Spans:
    """The spans an agent exported to memory (nothing for bare runs), and our Telemetry."""

    def __init__(self, exporter: Any = None, telemetry: Any = None) -> None:
        self.exporter = exporter
        self.telemetry = telemetry

    def llm_spans(self) -> list[Any]:
        if self.exporter is None:
            return []
        return [s for s in self.exporter.get_finished_spans()
                if s.kind.name == "CLIENT" and any(k.startswith("gen_ai.") for k in s.attributes or {})]

    def clear(self) -> None:
        if self.exporter is not None:
            self.exporter.clear()


def _memory_tracer() -> tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def instrument_ours() -> Spans:
    """Our layers as an application runs them: every instrumentor the agent registers (its
    ``opentelemetry_instrumentor`` entry points: openai, anthropic, httpx, httpx2) whose library
    is installed, all recording into one Telemetry made as the test harness makes it (SDK tracer provider to
    memory, Prometheus instruments in a private registry). Content capture off (the default); no
    slow-call warnings (the concurrency row's streams last seconds)."""
    from importlib.metadata import entry_points
    from importlib.util import find_spec

    from prometheus_client import CollectorRegistry

    from nexent_autoinstrument.metrics import HTTPMetrics, LLMMetrics
    from nexent_autoinstrument.settings import Settings
    from nexent_autoinstrument.tracker import Telemetry

    provider, exporter = _memory_tracer()
    settings = Settings(enabled=True, service_name="bench", slow_request_threshold_seconds=1e9,
                        slow_token_rate_threshold=0.0)
    registry = CollectorRegistry()
    telemetry = Telemetry(settings, provider.get_tracer("bench"),
                          LLMMetrics(registry=registry, max_model_labels=settings.max_model_labels),
                          HTTPMetrics(registry=registry))
    for entry in entry_points(group="opentelemetry_instrumentor"):
        if entry.value.startswith("nexent_autoinstrument.") and find_spec(entry.name) is not None:
            entry.load()().instrument(telemetry=telemetry, skip_dep_check=True)
    return Spans(exporter, telemetry)


def instrument_peer(agent: str) -> Spans:
    """A peer with its default settings (content capture off), an SDK tracer provider exporting
    to memory and an SDK meter provider."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider, exporter = _memory_tracer()
    module, name = PEERS[agent]
    instrumentor = getattr(importlib.import_module(module), name)()
    instrumentor.instrument(tracer_provider=provider,
                            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return Spans(exporter)


def instrument(agent: str, instrumented: bool) -> Spans:
    if not instrumented:
        return Spans()
    return instrument_ours() if agent == OURS else instrument_peer(agent)


# -- clients over an in-memory transport ----------------------------------------------------------------

def httpx_module(library: str | None = None) -> Any:
    """The httpx the installed openai sends through (httpx2 for openai 3.x), or ``library``."""
    if library is None:
        import openai

        library = "httpx2" if openai.__version__.startswith("3.") else "httpx"
    return importlib.import_module(library)


class Answers:
    """What the in-memory server answers: a stream of ``chunks`` content chunks, each read
    waiting ``pace`` seconds, or (None) a whole chat completion."""

    def __init__(self, chunks: int | None = WARMUP_CHUNKS, pace: float = 0.0) -> None:
        self.pace = pace
        self.serve(chunks)

    def serve(self, chunks: int | None) -> None:
        self.events = None if chunks is None else sse_events(chunks)

    def sync_handler(self, httpx: Any) -> Callable[[Any], Any]:
        def body(events: list[bytes]) -> Iterator[bytes]:
            for event in events:
                if self.pace:
                    time.sleep(self.pace)
                yield event

        def handler(request: Any) -> Any:
            if self.events is None:
                return httpx.Response(200, headers={"content-type": "application/json"}, content=COMPLETION)
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body(self.events))
        return handler

    def async_handler(self, httpx: Any) -> Callable[[Any], Any]:
        async def body(events: list[bytes]) -> AsyncIterator[bytes]:
            for event in events:
                if self.pace:
                    await asyncio.sleep(self.pace)
                yield event

        def handler(request: Any) -> Any:
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=body(self.events or []))
        return handler


def sync_client(answers: Answers) -> Any:
    import openai

    httpx = httpx_module()
    http_client = httpx.Client(transport=httpx.MockTransport(answers.sync_handler(httpx)))
    return openai.OpenAI(base_url=BASE_URL, api_key="sk-bench", http_client=http_client)


def async_client(answers: Answers) -> Any:
    import openai

    httpx = httpx_module()
    http_client = httpx.AsyncClient(transport=httpx.MockTransport(answers.async_handler(httpx)))
    return openai.AsyncOpenAI(base_url=BASE_URL, api_key="sk-bench", http_client=http_client)


def stream_sync(client: Any) -> int:
    count = 0
    for _ in client.chat.completions.create(**REQUEST, stream=True):
        count += 1
    return count


async def stream_async(client: Any) -> int:
    count = 0
    async for _ in await client.chat.completions.create(**REQUEST, stream=True):
        count += 1
    return count


def raw_lines(client: Any) -> int:
    """A chat stream read with httpx directly, line by line, as code without the SDK does."""
    count = 0
    with client.stream("POST", f"{BASE_URL}/chat/completions", json={**REQUEST, "stream": True},
                       headers={"authorization": "Bearer sk-bench"}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                count += 1
    return count


# -- the kinds of measurement ---------------------------------------------------------------------------

def run_streams(job: dict[str, Any], spans: Spans) -> dict[str, Any]:
    """``calls`` streamed calls of ``chunks`` chunks each, inside the region (sync, async or raw),
    their chunks paced as a server sends them."""
    kind, chunks, calls = job["kind"], job["chunks"], job["calls"]
    answers = Answers(pace=READ_PACE_SECONDS)
    if kind == "async":
        client = async_client(answers)
        loop = asyncio.new_event_loop()

        def call() -> int:
            return loop.run_until_complete(stream_async(client))
    elif kind == "raw":
        httpx = httpx_module(job["library"])
        client = httpx.Client(transport=httpx.MockTransport(answers.sync_handler(httpx)))

        def call() -> int:
            return raw_lines(client)
    else:
        client = sync_client(answers)

        def call() -> int:
            return stream_sync(client)
    for _ in range(calls):  # (as many calls as measured: CPython specialises the code as it runs)
        call()
    answers.serve(chunks)
    spans.clear()
    gc.collect()
    with region():
        for _ in range(calls):
            call()
    if kind == "async":
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return {"expected_spans": calls}


def run_creates(job: dict[str, Any], spans: Spans) -> dict[str, Any]:
    """``calls`` non-streamed ``create`` calls inside the region."""
    client = sync_client(Answers(None))
    for _ in range(job["calls"]):  # (warm-up, as in run_streams)
        client.chat.completions.create(**REQUEST)
    spans.clear()
    gc.collect()
    with region():
        for _ in range(job["calls"]):
            client.chat.completions.create(**REQUEST)
    return {"expected_spans": job["calls"]}


def run_finish(job: dict[str, Any], spans: Spans) -> dict[str, Any]:
    """Ours only: the end of ``calls`` streamed calls of ``chunks`` content chunks each, inside
    the region. Each call's tracker is fed its chunks beforehand, as a stream whose every chunk
    arrived (the timed path); the region holds only ``lifecycle.end``: span attributes, offsets,
    gaps and their percentiles, span end and export, metrics."""
    from nexent_autoinstrument import lifecycle

    def fed(chunks: int) -> Any:
        tracker = lifecycle.begin(spans.telemetry, "chat", "bench", stream=True,
                                  attributes={"server.address": "bench.invalid", "server.port": 80})
        for _ in range(chunks):
            tracker.chunk()
            tracker.content("tok ")
        return tracker

    lifecycle.end(fed(job["chunks"]))  # warm-up
    trackers = [fed(job["chunks"]) for _ in range(job["calls"])]
    spans.clear()
    gc.collect()
    with region():
        for tracker in trackers:
            lifecycle.end(tracker)
    return {"expected_spans": job["calls"]}


def run_memory(job: dict[str, Any], spans: Spans) -> dict[str, Any]:
    """Traced memory (tracemalloc) while one stream of ``chunks`` chunks is consumed: the peak,
    and what stays allocated after it (including the span held by the in-memory exporter)."""
    answers = Answers()
    client = sync_client(answers)
    stream_sync(client)
    answers.serve(job["chunks"])
    spans.clear()
    gc.collect()
    tracemalloc.start()
    stream_sync(client)
    _, peak = tracemalloc.get_traced_memory()
    gc.collect()
    retained, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"expected_spans": 1, "peak_bytes": peak, "retained_bytes": retained}


def run_concurrency(job: dict[str, Any], spans: Spans) -> dict[str, Any]:
    """``streams`` concurrent async streams from the loopback server at ``url``: this process's
    CPU time (user + system, all threads) while they run, and the chunks received."""
    import openai

    async def one(client: Any, **extra: Any) -> int:
        count = 0
        async for _ in await client.chat.completions.create(**REQUEST, stream=True, extra_body=extra or None):
            count += 1
        return count

    async def main() -> dict[str, Any]:
        client = openai.AsyncOpenAI(base_url=job["url"], api_key="sk-bench", max_retries=0, timeout=120)
        await asyncio.gather(*(one(client, bench_chunks=5) for _ in range(5)))  # warm-up, short streams
        spans.clear()
        gc.collect()
        before, started = os.times(), time.perf_counter()
        counts = await asyncio.gather(*(one(client) for _ in range(job["streams"])))
        after, wall = os.times(), time.perf_counter() - started
        await client.close()
        cpu = (after.user - before.user) + (after.system - before.system)
        return {"expected_spans": job["streams"], "cpu_s": cpu, "wall_s": wall, "chunks": sum(counts)}

    return asyncio.run(main())


def versions(job: dict[str, Any], spans: Spans) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("openai", "opentelemetry-sdk", "pydantic", "opentelemetry-instrumentation-openai",
                    "opentelemetry-instrumentation-genai-openai", "nexent-autoinstrument", "httpx", "httpx2"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return {"versions": found, "python": sys.version.split()[0], "expected_spans": 0}


KINDS: dict[str, Callable[[dict[str, Any], Spans], dict[str, Any]]] = {
    "sync": run_streams, "async": run_streams, "raw": run_streams, "create": run_creates, "finish": run_finish,
    "memory": run_memory, "concurrency": run_concurrency, "versions": versions,
}


#: Attributes of the last LLM span that the result shows (ours: how the call was measured).
SHOWN_ATTRIBUTES = ("llm.stream.outcome", "llm.stream.chunks", "llm.stream.waiting_chunks", "llm.stream.reader_bound")


class Warnings(logging.Handler):
    """Warnings and errors logged in this process (the agent's own, or the SDK's)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{record.name}: {record.getMessage()}"[:300]


def main() -> None:
    job = json.loads(sys.argv[1])
    warnings = Warnings()
    logging.getLogger().addHandler(warnings)
    spans = instrument(job["agent"], job["instrumented"])
    result = KINDS[job["kind"]](job, spans)
    llm_spans = spans.llm_spans()
    result.update(job=job, spans=len(llm_spans), warnings=warnings.count, first_warning=warnings.first)
    if llm_spans:
        attributes = llm_spans[-1].attributes or {}
        result["last_span"] = {"name": llm_spans[-1].name, "status": llm_spans[-1].status.status_code.name,
                               **{k: attributes[k] for k in SHOWN_ATTRIBUTES if k in attributes}}
    guard = sys.modules.get("nexent_autoinstrument.guard")
    if guard is not None:
        result["internal_errors"] = dict(guard.internal_errors)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""One measurement of scripts/bench_overhead.py, run in a fresh interpreter of any venv (ours or a peer's).

    python scripts/bench_workloads.py '{"kind": "sync", "agent": "openllmetry", "instrumented": true, ...}'

prints one JSON line: what was run, how many LLM calls it made (the caller counts their spans
at its OTLP receiver), the agent's internal errors and warnings, and the figures the kind
measures itself (CPU time, memory). Instruction counts are read by the caller from callgrind's
dump of the ``region()`` below.

Every agent runs as users run it: ours loaded by ``ENABLE_TELEMETRY=true`` (the caller sets the
environment), a peer instrumenting an SDK tracer provider, both exporting spans over OTLP/HTTP
to the caller's receiver (``BENCH_OTLP_ENDPOINT``) from their export thread, and the garbage
collector running. Every kind serves an OpenAI chat completion from memory (``MockTransport``
of the httpx the installed openai uses), its body arriving in one of the ``ARRIVALS``, except
``concurrency``, which talks to a real server on loopback, ``raw_aiohttp``, which has no
in-memory transport: its server runs on the same event loop, over loopback TCP, and ``bedrock``:
boto3's ``converse_stream``, answered in memory by a ``before-send`` handler (botocore's own hook
for that) with AWS event-stream frames arriving as the ``ARRIVALS`` say. Warm-up calls run before the measured
region, bare and instrumented alike, so lazy imports and first-call work stay out of it, and
their spans are exported before it starts. Only standard-library, openai and OpenTelemetry
imports: the peers' venvs have nothing else, and ours is imported only when it is the agent.
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
import zlib
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
#: How long a paced read waits for its data, as a read from a server at network speed does: the
#: HTTP layer then sees each chunk arrive (the timed path). A sleep costs the same few
#: instructions in every run.
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
    """The SSE events of a streamed chat completion of ``chunks`` content chunks."""
    return [ROLE, *[CONTENT] * chunks, STOP, DONE]


#: A read of the response body: how long it waits, and the bytes it returns.
Read = tuple[float, bytes]


def gzip_reads(events: list[bytes]) -> list[Read]:
    """One gzip member, flushed after each event: each paced read decodes to one whole event."""
    packer = zlib.compressobj(wbits=31)
    reads = [(READ_PACE_SECONDS, packer.compress(event) + packer.flush(zlib.Z_SYNC_FLUSH)) for event in events]
    return [*reads, (0.0, packer.flush())]


#: How a stream's bytes reach the reader, each a row of the benchmark: (reads, content encoding).
ARRIVALS: dict[str, tuple[Callable[[list[bytes]], list[Read]], str | None]] = {
    # a server at network speed: each read waits for its one event
    "paced": (lambda events: [(READ_PACE_SECONDS, e) for e in events], None),
    # everything already waiting (a fast local server, a buffering proxy, a lagging reader): one read
    "burst": (lambda events: [(0.0, b"".join(events))], None),
    # one event per read, each already waiting
    "event": (lambda events: [(0.0, e) for e in events], None),
    # four events per read, each read waiting for them (a proxy that flushes in batches)
    "events": (lambda events: [(READ_PACE_SECONDS, b"".join(events[i:i + 4])) for i in range(0, len(events), 4)],
               None),
    # reads of 16 bytes, already waiting: every event split over several reads
    "tiny": (lambda events: [(0.0, body[i:i + 16]) for body in [b"".join(events)] for i in range(0, len(body), 16)],
             None),
    # gzip-encoded, one event per paced read
    "gzip": (gzip_reads, "gzip"),
}


# -- callgrind region ---------------------------------------------------------------------------------

def flush_spans() -> None:
    """Export every span ended so far (the agent's export thread does the work; nothing for bare runs)."""
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush()


class Region:
    """Callgrind counts only inside ``with region():`` (the process runs with --instr-atstart=no),
    in every thread of the process: the region ends once the spans of its calls are exported, so
    the export thread's encoding and sending are counted too.

    The garbage collector runs as in an application, unless ``BENCH_GC_PAUSED`` is set (a
    diagnostic: where collections fall then no longer varies between runs).

    The markers are callgrind client requests in a tiny C library (``BENCH_CALLGRIND_MARKERS``);
    outside valgrind they do nothing, and without the variable this is a plain context manager."""

    def __init__(self) -> None:
        path = os.environ.get("BENCH_CALLGRIND_MARKERS")
        markers = ctypes.CDLL(path) if path else None
        self._start: Callable[[], Any] = markers.bench_start if markers else lambda: None
        self._dump: Callable[[bytes], Any] = markers.bench_dump if markers else lambda label: None
        self.gc_paused = bool(os.environ.get("BENCH_GC_PAUSED"))
        #: Collections per generation inside the last region, and the objects tracked at its start.
        self.collections: list[int] = [0, 0, 0]
        self.tracked = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        start, dump = self._start, self._dump
        flush_spans()  # (the warm-up's spans stay out of the region)
        gc.collect()
        if self.gc_paused:
            gc.disable()
        self.tracked = len(gc.get_objects())
        before = [generation["collections"] for generation in gc.get_stats()]
        start()
        yield
        flush_spans()
        dump(b"region")
        gc.enable()
        after = [generation["collections"] for generation in gc.get_stats()]
        self.collections = [now - was for now, was in zip(after, before, strict=True)]


region = Region()


# -- the agents ---------------------------------------------------------------------------------------

def otlp_tracer_provider(session: Any = None) -> Any:
    """An SDK tracer provider exporting over OTLP/HTTP in batches to the caller's receiver (through
    ``session``, if given: a ``requests`` session), made global."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())  # (service.name from OTEL_SERVICE_NAME)
    endpoint = os.environ["BENCH_OTLP_ENDPOINT"]
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces",
                                                                         session=session)))
    trace.set_tracer_provider(provider)
    return provider


def instrument_peer(agent: str) -> None:
    """A peer with its default settings (content capture off), set up as its users do: an SDK
    tracer provider exporting over OTLP/HTTP in batches, and an SDK meter provider exporting
    over OTLP/HTTP every minute."""
    from opentelemetry import metrics
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    endpoint = os.environ["BENCH_OTLP_ENDPOINT"]
    provider = otlp_tracer_provider()
    resource = provider.resource
    meter_provider = MeterProvider(resource=resource, metric_readers=[
        PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"))])
    metrics.set_meter_provider(meter_provider)
    module, name = PEERS[agent]
    getattr(importlib.import_module(module), name)().instrument(tracer_provider=provider,
                                                                 meter_provider=meter_provider)


def instrument(agent: str, instrumented: bool) -> None:
    """Ours is loaded at start-up by ENABLE_TELEMETRY=true, as users load it; a peer here."""
    if instrumented and agent != OURS:
        instrument_peer(agent)


# -- clients over an in-memory transport ----------------------------------------------------------------

def httpx_module(library: str | None = None) -> Any:
    """The httpx the installed openai sends through (httpx2 for openai 3.x), or ``library``."""
    if library is None:
        import openai

        library = "httpx2" if openai.__version__.startswith("3.") else "httpx"
    return importlib.import_module(library)


class Answers:
    """What the in-memory server answers: a stream of ``chunks`` content chunks whose bytes come
    as ``arrival`` says (one of ``ARRIVALS``), or (None) a whole chat completion."""

    def __init__(self, chunks: int | None = WARMUP_CHUNKS, arrival: str = "paced",
                 events: Callable[[int], list[bytes]] = sse_events) -> None:
        self.split, encoding = ARRIVALS[arrival]
        self.events = events
        self.headers = {"content-type": "text/event-stream", **({"content-encoding": encoding} if encoding else {})}
        self.serve(chunks)

    def serve(self, chunks: int | None) -> None:
        self.reads = None if chunks is None else self.split(self.events(chunks))

    def sync_handler(self, httpx: Any) -> Callable[[Any], Any]:
        def body(reads: list[Read]) -> Iterator[bytes]:
            for pause, data in reads:
                if pause:
                    time.sleep(pause)
                yield data

        def handler(request: Any) -> Any:
            if self.reads is None:  # (a body the client reads, as from the network: not one read already)
                return httpx.Response(200, headers={"content-type": "application/json"},
                                      content=body([(0.0, COMPLETION)]))
            return httpx.Response(200, headers=self.headers, content=body(self.reads))
        return handler

    def async_handler(self, httpx: Any) -> Callable[[Any], Any]:
        async def body(reads: list[Read]) -> AsyncIterator[bytes]:
            for pause, data in reads:
                if pause:
                    await asyncio.sleep(pause)
                yield data

        def handler(request: Any) -> Any:
            return httpx.Response(200, headers=self.headers, content=body(self.reads or []))
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


class LoopbackServer:
    """An HTTP/1.1 server on the measured process's own event loop, serving ``answers`` over
    loopback TCP: for aiohttp, which has no in-memory transport. Its writes are the ``ARRIVALS``'
    reads (TCP may join those that come without a pause); its work is in the region, with or
    without an agent alike."""

    def __init__(self, answers: Answers, loop: asyncio.AbstractEventLoop) -> None:
        self.answers = answers
        self.server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):  # (the client closed its connection)
                break
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            encoding = self.answers.headers.get("content-encoding")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                         + (b"content-encoding: %s\r\n" % encoding.encode() if encoding else b"") + b"\r\n")
            for pause, data in self.answers.reads or []:
                if pause:
                    await asyncio.sleep(pause)
                if data:
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                    await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()


async def raw_aiohttp_lines(session: Any, url: str) -> int:
    """A chat stream read with aiohttp, line by line (no SDK)."""
    count = 0
    async with session.post(url, json={**REQUEST, "stream": True},
                            headers={"authorization": "Bearer sk-bench"}) as response:
        async for line in response.content:
            if line.startswith(b"data: "):
                count += 1
    return count


class EventStreamBody:
    """The raw body botocore reads a Bedrock stream from (what urllib3's response gives it):
    ``stream()`` yields the ``ARRIVALS``' reads, each after its pause."""

    def __init__(self, reads: list[Read]) -> None:
        self.reads = reads

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for pause, data in self.reads:
            if pause:
                time.sleep(pause)
            yield data

    def close(self) -> None:
        pass


def bedrock_events(chunks: int) -> list[bytes]:
    """The frames of a ``converse_stream`` answer of ``chunks`` content events. (The mock LLM's
    encoder, imported from our package in every venv that runs this kind: only ours has boto3.)"""
    from nexent_autoinstrument.tools.mock.bedrock import frame

    def event(kind: str, payload: dict[str, Any]) -> bytes:
        return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                     json.dumps(payload, separators=(",", ":")).encode())

    return [event("messageStart", {"role": "assistant"}),
            *[event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "tok "}})] * chunks,
            event("contentBlockStop", {"contentBlockIndex": 0}), event("messageStop", {"stopReason": "end_turn"}),
            event("metadata", {"usage": {"inputTokens": 1, "outputTokens": chunks, "totalTokens": chunks + 1},
                               "metrics": {"latencyMs": 5}})]


def bedrock_client(answers: Answers) -> Any:
    """A Bedrock runtime client whose requests are signed as usual and answered from memory."""
    import boto3
    from botocore.awsrequest import AWSResponse

    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDBENCH",
                          aws_secret_access_key="bench")

    def answer(request: Any, **kwargs: Any) -> Any:
        return AWSResponse(request.url, 200, {"content-type": "application/vnd.amazon.eventstream"},
                           EventStreamBody(answers.reads or []))
    client.meta.events.register("before-send.bedrock-runtime.ConverseStream", answer)
    return client


def bedrock_stream(client: Any) -> int:
    count = 0
    for _ in client.converse_stream(modelId="bench", messages=[{"role": "user", "content": [{"text": "x"}]}])["stream"]:
        count += 1
    return count


async def raw_lines_async(client: Any) -> int:
    count = 0
    async with client.stream("POST", f"{BASE_URL}/chat/completions", json={**REQUEST, "stream": True},
                             headers={"authorization": "Bearer sk-bench"}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                count += 1
    return count


# -- the kinds of measurement ---------------------------------------------------------------------------

async def make_session(aiohttp: Any) -> Any:
    return aiohttp.ClientSession()  # (made on the loop that runs it)


def run_streams(job: dict[str, Any]) -> dict[str, Any]:
    """``calls`` streamed calls of ``chunks`` chunks each, inside the region: through the SDK
    (``sync``, ``async``), httpx directly (``raw``, ``raw_async``), aiohttp (``raw_aiohttp``) or boto3
    (``bedrock``),
    their bytes arriving as ``arrival`` says."""
    kind, chunks, calls = job["kind"], job["chunks"], job["calls"]
    answers = Answers(arrival=job["arrival"], events=bedrock_events if kind == "bedrock" else sse_events)
    loop = asyncio.new_event_loop()
    call: Callable[[], int]
    closing: list[Any] = []  # (what to await once the region has ended)
    if kind == "async":
        client = async_client(answers)
        call = lambda: loop.run_until_complete(stream_async(client))  # noqa: E731
    elif kind == "raw_async":
        httpx = httpx_module(job["library"])
        client = httpx.AsyncClient(transport=httpx.MockTransport(answers.async_handler(httpx)))
        call = lambda: loop.run_until_complete(raw_lines_async(client))  # noqa: E731
    elif kind == "raw_aiohttp":
        import aiohttp

        server = LoopbackServer(answers, loop)
        session = loop.run_until_complete(make_session(aiohttp))
        call = lambda: loop.run_until_complete(raw_aiohttp_lines(session, server.url))  # noqa: E731
        closing.append(session.close())
    elif kind == "bedrock":
        bedrock = bedrock_client(answers)
        call = lambda: bedrock_stream(bedrock)  # noqa: E731
    elif kind == "raw":
        httpx = httpx_module(job["library"])
        client = httpx.Client(transport=httpx.MockTransport(answers.sync_handler(httpx)))
        call = lambda: raw_lines(client)  # noqa: E731
    else:
        client = sync_client(answers)
        call = lambda: stream_sync(client)  # noqa: E731
    for _ in range(calls):  # (as many calls as measured: CPython specialises the code as it runs)
        call()
    answers.serve(chunks)
    with region():
        for _ in range(calls):
            call()
    for awaitable in closing:
        loop.run_until_complete(awaitable)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    return {"calls": 2 * calls}


def run_creates(job: dict[str, Any]) -> dict[str, Any]:
    """``calls`` non-streamed ``create`` calls inside the region."""
    client = sync_client(Answers(None))
    for _ in range(job["calls"]):  # (warm-up, as in run_streams)
        client.chat.completions.create(**REQUEST)
    with region():
        for _ in range(job["calls"]):
            client.chat.completions.create(**REQUEST)
    return {"calls": 2 * job["calls"]}


def run_creates_with_spans(job: dict[str, Any]) -> dict[str, Any]:
    """The OpenTelemetry SDK's part of an instrumented ``create``, without any agent: each of
    ``calls`` bare ``create`` calls inside a span made as ours makes its span (``span_name`` and
    ``span_attributes``, read from one of ours by the caller), current while the call runs, its
    context injected into the request's headers, and exported over OTLP/HTTP through the session
    ours exports through (so that the export's HTTP work is the same on both sides)."""
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind

    from nexent_autoinstrument.exporting import otlp_http_session

    tracer = otlp_tracer_provider(otlp_http_session()).get_tracer("bench")
    name, attributes = job["span_name"], job["span_attributes"]
    client = sync_client(Answers(None))

    def call() -> None:
        span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        propagate.inject({}, context=trace.set_span_in_context(span))
        try:
            client.chat.completions.create(**REQUEST)
        finally:
            context.detach(token)
            span.end()

    for _ in range(job["calls"]):
        call()
    with region():
        for _ in range(job["calls"]):
            call()
    return {"calls": 0}


def run_finish(job: dict[str, Any]) -> dict[str, Any]:
    """Ours only: the end of ``calls`` streamed calls of ``chunks`` content chunks each, inside
    the region. Each call's tracker is fed its chunks beforehand, as a stream whose every chunk
    arrived (the timed path); the region holds only ``lifecycle.end``: span attributes, offsets,
    gaps and their percentiles, span end and export, metrics."""
    from nexent_autoinstrument import bootstrap, lifecycle

    telemetry = bootstrap.current_telemetry()

    def fed(chunks: int) -> Any:
        tracker = lifecycle.begin(telemetry, "chat", "bench", stream=True,
                                  attributes={"server.address": "bench.invalid", "server.port": 80})
        for _ in range(chunks):
            tracker.chunk()
            tracker.content("tok ")
        return tracker

    lifecycle.end(fed(job["chunks"]))  # warm-up
    trackers = [fed(job["chunks"]) for _ in range(job["calls"])]
    with region():
        for tracker in trackers:
            lifecycle.end(tracker)
    return {"calls": job["calls"] + 1}


def run_memory(job: dict[str, Any]) -> dict[str, Any]:
    """Traced memory (tracemalloc) while one stream of ``chunks`` chunks is consumed: the peak,
    and what stays allocated after it."""
    answers = Answers(arrival="event")
    client = sync_client(answers)
    stream_sync(client)
    answers.serve(job["chunks"])
    flush_spans()
    gc.collect()
    tracemalloc.start()
    stream_sync(client)
    _, peak = tracemalloc.get_traced_memory()
    gc.collect()
    retained, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"calls": 2, "peak_bytes": peak, "retained_bytes": retained}


def run_concurrency(job: dict[str, Any]) -> dict[str, Any]:
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
        flush_spans()
        gc.collect()
        before, started = os.times(), time.perf_counter()
        counts = await asyncio.gather(*(one(client) for _ in range(job["streams"])))
        after, wall = os.times(), time.perf_counter() - started
        await client.close()
        cpu = (after.user - before.user) + (after.system - before.system)
        return {"calls": 5 + job["streams"], "cpu_s": cpu, "wall_s": wall, "chunks": sum(counts)}

    return asyncio.run(main())


def versions(job: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("openai", "opentelemetry-sdk", "pydantic", "opentelemetry-instrumentation-openai",
                    "opentelemetry-instrumentation-genai-openai", "nexent-autoinstrument", "httpx", "httpx2"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return {"versions": found, "python": sys.version.split()[0], "calls": 0}


KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "sync": run_streams, "async": run_streams, "raw": run_streams, "raw_async": run_streams, "raw_aiohttp": run_streams,
    "bedrock": run_streams,
    "create": run_creates, "create_otel": run_creates_with_spans, "finish": run_finish, "memory": run_memory,
    "concurrency": run_concurrency, "versions": versions,
}


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
    instrument(job["agent"], job["instrumented"])
    result = KINDS[job["kind"]](job)
    flush_spans()
    result.update(job=job, warnings=warnings.count, first_warning=warnings.first,
                  gc_collections=region.collections, gc_tracked=region.tracked)
    guard = sys.modules.get("nexent_autoinstrument.guard")
    if guard is not None:
        result["internal_errors"] = dict(guard.internal_errors)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Per-chunk overhead of the agent on a streamed chat completion, through the real openai SDK.

A 100,000-chunk SSE stream is served from memory (``httpx.MockTransport`` or
``httpx2.MockTransport``, whichever the installed openai uses), so only client-side work is
measured. Bare and instrumented runs are interleaved in one process by toggling
``instrument()``/``uninstrument()``; the minimum CPU time of each is kept, since noise only
ever adds time. Instrumented means the real engine with a real SDK TracerProvider and
Prometheus instruments (span exported to memory).

    python scripts/bench_overhead.py [--chunks 100000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import sys
import time
import tracemalloc
from typing import Any


def sse_body(chunks: int) -> list[bytes]:
    head = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"bench",'
            b'"choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n')
    role = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"bench",'
            b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n')
    return [role] + [head] * chunks + [b"data: [DONE]\n\n"]


def make_client(body: list[bytes]) -> Any:
    import openai

    httpx_name = "httpx2" if openai.__version__.startswith("3.") else "httpx"
    httpx = importlib.import_module(httpx_name)

    def handler(request: Any) -> Any:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(body))

    http_client = httpx.Client(transport=httpx.MockTransport(handler))
    return openai.OpenAI(base_url="http://bench.invalid/v1", api_key="sk-bench", http_client=http_client)


def consume(client: Any) -> int:
    count = 0
    for _ in client.chat.completions.create(model="bench", messages=[{"role": "user", "content": "x"}],
                                            stream=True):
        count += 1
    return count


def cpu_seconds(client: Any) -> float:
    gc.collect()
    started = time.process_time()
    consume(client)
    return time.process_time() - started


def make_telemetry() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from nexent_autoinstrument.metrics import LLMMetrics
    from nexent_autoinstrument.settings import Settings
    from nexent_autoinstrument.tracker import Telemetry

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(enabled=True, slow_request_threshold_seconds=1e9)
    telemetry = Telemetry(settings, provider.get_tracer("bench"), LLMMetrics(CollectorRegistry()))
    return telemetry, exporter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by the peer runner)")
    args = parser.parse_args()

    import openai

    from nexent_autoinstrument.instrumentors.openai import OpenAIInstrumentor

    body = sse_body(args.chunks)
    client = make_client(body)
    telemetry, exporter = make_telemetry()
    instrumentor = OpenAIInstrumentor()
    consume(client)  # warm up imports and caches
    bare, instrumented = [], []
    for _ in range(args.rounds):
        bare.append(cpu_seconds(client))
        instrumentor.instrument(telemetry=telemetry)
        instrumented.append(cpu_seconds(client))
        instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    assert len(spans) == args.rounds and spans[-1].attributes["llm.stream.chunks"] == args.chunks + 1, "no spans"

    instrumentor.instrument(telemetry=telemetry)
    tracemalloc.start()
    consume(client)
    gc.collect()
    _, peak_instrumented = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    instrumentor.uninstrument()
    tracemalloc.start()
    consume(client)
    _, peak_bare = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    best_bare, best_inst = min(bare), min(instrumented)
    result = {
        "agent": "nexent-autoinstrument", "openai": openai.__version__, "chunks": args.chunks,
        "bare_s": round(best_bare, 4), "instrumented_s": round(best_inst, 4),
        "overhead_us_per_chunk": round((best_inst - best_bare) / args.chunks * 1e6, 3),
        "ratio": round(best_inst / best_bare, 4),
        "peak_memory_extra_mb": round((peak_instrumented - peak_bare) / 2**20, 3),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"openai {openai.__version__}, python {sys.version.split()[0]}, {args.chunks:,} chunks, "
          f"min of {args.rounds} interleaved rounds (CPU time)")
    print(f"  bare          {best_bare:8.3f} s   ({best_bare / args.chunks * 1e6:.2f} us/chunk)")
    print(f"  instrumented  {best_inst:8.3f} s   ({best_inst / args.chunks * 1e6:.2f} us/chunk)")
    print(f"  overhead      {result['overhead_us_per_chunk']:8.3f} us/chunk, ratio {result['ratio']:.3f}")
    print(f"  peak memory   +{result['peak_memory_extra_mb']:.3f} MB over bare for one stream")


if __name__ == "__main__":
    main()

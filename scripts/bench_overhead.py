#!/usr/bin/env python3
"""Per-chunk overhead of the agent on a streamed chat completion, through the real openai SDK.

A 100,000-chunk SSE stream is served from memory (``httpx.MockTransport`` or
``httpx2.MockTransport``, whichever the installed openai uses), so only client-side work is
measured. Bare and instrumented runs are interleaved in one process by toggling
``instrument()``/``uninstrument()``; the minimum CPU time of each is kept, since noise only
ever adds time. Instrumented means our openai, httpx and httpx2 layers together, as an
application runs them, with a real SDK TracerProvider (spans exported to memory) and the
Prometheus instruments.

With ``--peers``, the same workload also runs under OpenLLMetry
(opentelemetry-instrumentation-openai) and the official OpenTelemetry instrumentation
(opentelemetry-instrumentation-genai-openai), each in a side venv under ``.bench/`` that the
script makes, with their default settings, an SDK tracer provider exporting to memory and an
SDK meter provider. A peer's figure is printed only if it really emitted a span per stream.

With ``--callgrind``, the same comparison is made in instructions instead of seconds, which
is deterministic: each agent consumes one stream of N1 and one of N2 chunks under
``valgrind --tool=callgrind``, bare and instrumented, and the slope (I(N2) - I(N1)) / (N2 - N1)
gives the instructions per chunk with start-up cancelled out.

    python scripts/bench_overhead.py [--chunks 100000] [--rounds 5] [--peers] [--json] [--callgrind]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import subprocess
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


#: agent -> (module, instrumentor class, pip packages for its side venv; empty for ours)
AGENTS: dict[str, tuple[str, str, list[str]]] = {
    "nexent-autoinstrument": ("nexent_autoinstrument.instrumentors.openai", "OpenAIInstrumentor", []),
    "openllmetry": ("opentelemetry.instrumentation.openai", "OpenAIInstrumentor",
                    ["opentelemetry-instrumentation-openai"]),
    "otel-genai-openai": ("opentelemetry.instrumentation.genai.openai", "OpenAIInstrumentor",
                          ["opentelemetry-instrumentation-genai-openai"]),
}


def make_peer(agent: str) -> tuple[Any, dict[str, Any], Any]:
    """A peer's instrumentor, its instrument() arguments, and its span exporter."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    module, name, _ = AGENTS[agent]
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrumentor = getattr(importlib.import_module(module), name)()
    return instrumentor, {"tracer_provider": provider, "meter_provider": meters}, exporter


def run_peers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each peer in its own venv (made on first use), on the same workload, as JSON lines."""
    results = []
    for agent, (_, _, packages) in AGENTS.items():
        if not packages:
            continue
        venv = os.path.join(".bench", agent)
        python = os.path.join(venv, "bin", "python")
        if not os.path.exists(python):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run([python, "-m", "pip", "install", "-q", "openai", "opentelemetry-sdk", *packages],
                           check=True)
        run = subprocess.run([python, __file__, "--agent", agent, "--json", "--chunks", str(args.chunks),
                              "--rounds", str(args.rounds)], capture_output=True, text=True)
        if run.returncode != 0:
            results.append({"agent": agent, "error": (run.stderr.strip().splitlines() or ["failed"])[-1]})
        else:
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    return results


class NexentLayers:
    """Our openai, httpx and httpx2 layers together, as an application runs them."""

    def __init__(self) -> None:
        from nexent_autoinstrument.instrumentors.httpx import HTTPX2Instrumentor, HTTPXInstrumentor
        from nexent_autoinstrument.instrumentors.openai import OpenAIInstrumentor

        self.layers = [OpenAIInstrumentor(), HTTPXInstrumentor(), HTTPX2Instrumentor()]

    def instrument(self, **kwargs: Any) -> None:
        for layer in self.layers:
            layer.instrument(**kwargs)

    def uninstrument(self) -> None:
        for layer in self.layers:
            layer.uninstrument()


def make_telemetry() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from nexent_autoinstrument.metrics import HTTPMetrics, LLMMetrics
    from nexent_autoinstrument.settings import Settings
    from nexent_autoinstrument.tracker import Telemetry

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(enabled=True, slow_request_threshold_seconds=1e9)
    registry = CollectorRegistry()
    telemetry = Telemetry(settings, provider.get_tracer("bench"), LLMMetrics(registry), HTTPMetrics(registry))
    return telemetry, exporter


def measure(agent: str, chunks: int, rounds: int) -> dict[str, Any]:
    """Interleaved bare/instrumented rounds for one agent, in this interpreter."""
    import openai

    body = sse_body(chunks)
    client = make_client(body)
    if agent == "nexent-autoinstrument":
        telemetry, exporter = make_telemetry()
        instrumentor, kwargs = NexentLayers(), {"telemetry": telemetry}
    else:
        instrumentor, kwargs, exporter = make_peer(agent)
    consume(client)  # warm up imports and caches
    bare, instrumented = [], []
    for _ in range(rounds):
        bare.append(cpu_seconds(client))
        instrumentor.instrument(**kwargs)
        instrumented.append(cpu_seconds(client))
        instrumentor.uninstrument()
    spans = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT" and s.name != "POST"]
    if len(spans) < rounds:
        raise SystemExit(f"{agent} emitted {len(spans)} spans for {rounds} streams: its figure would mean nothing")

    instrumentor.instrument(**kwargs)
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
    return {
        "agent": agent, "openai": openai.__version__, "chunks": chunks,
        "bare_s": round(best_bare, 4), "instrumented_s": round(best_inst, 4),
        "overhead_us_per_chunk": round((best_inst - best_bare) / chunks * 1e6, 3),
        "ratio": round(best_inst / best_bare, 4),
        "peak_memory_extra_mb": round((peak_instrumented - peak_bare) / 2**20, 3),
    }


def run_once(agent: str, chunks: int, instrumented: bool) -> None:
    """Consume one stream (under callgrind): warm up, then the measured stream."""
    client = make_client(sse_body(chunks))
    if instrumented:
        if agent == "nexent-autoinstrument":
            telemetry, _ = make_telemetry()
            instrumentor, kwargs = NexentLayers(), {"telemetry": telemetry}
        else:
            instrumentor, kwargs, _ = make_peer(agent)
        instrumentor.instrument(**kwargs)
    consume(client)


def instructions(python: str, agent: str, chunks: int, instrumented: bool) -> int:
    """Instructions executed by one ``run_once`` process, counted by callgrind."""
    import re
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={scratch}/out", python, __file__,
             "--run-once", agent, "--chunks", str(chunks), *(["--instrumented"] if instrumented else [])],
            capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", run.stderr).group(1))


def callgrind_table(args: argparse.Namespace) -> None:
    small, large = args.chunks // 4, args.chunks
    print(f"instructions per chunk, slope between streams of {small:,} and {large:,} chunks (callgrind)")
    print(f"{'agent':<24}{'bare':>10}{'instrumented':>14}{'added':>9}{'ratio':>8}")
    for agent, (_, _, packages) in AGENTS.items():
        if packages and not args.peers:
            continue
        python = sys.executable if not packages else os.path.join(".bench", agent, "bin", "python")
        slopes = []
        for instrumented in (False, True):
            counts = [instructions(python, agent, n, instrumented) for n in (small, large)]
            slopes.append((counts[1] - counts[0]) / (large - small))
        print(f"{agent:<24}{slopes[0]:>10,.0f}{slopes[1]:>14,.0f}{slopes[1] - slopes[0]:>9,.0f}"
              f"{slopes[1] / slopes[0]:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--agent", choices=sorted(AGENTS), default="nexent-autoinstrument")
    parser.add_argument("--peers", action="store_true", help="also run the peers, each in its side venv")
    parser.add_argument("--json", action="store_true", help="print one JSON line (used for the peers)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions instead of seconds")
    parser.add_argument("--run-once", choices=sorted(AGENTS), help=argparse.SUPPRESS)
    parser.add_argument("--instrumented", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_once:
        run_once(args.run_once, args.chunks, args.instrumented)
        return
    if args.callgrind:
        callgrind_table(args)
        return

    result = measure(args.agent, args.chunks, args.rounds)
    if args.json:
        print(json.dumps(result))
        return
    results = [result, *(run_peers(args) if args.peers else [])]
    print(f"python {sys.version.split()[0]}, {args.chunks:,} chunks per stream, "
          f"min CPU time of {args.rounds} interleaved bare/instrumented rounds")
    print(f"{'agent':<24}{'openai':>9}{'bare us/chunk':>15}{'added us/chunk':>16}{'ratio':>8}{'memory MB':>11}")
    for r in results:
        if "error" in r:
            print(f"{r['agent']:<24}  did not run: {r['error']}")
            continue
        print(f"{r['agent']:<24}{r['openai']:>9}{r['bare_s'] / r['chunks'] * 1e6:>15.2f}"
              f"{r['overhead_us_per_chunk']:>16.2f}{r['ratio']:>8.3f}{r['peak_memory_extra_mb']:>+11.2f}")


if __name__ == "__main__":
    main()

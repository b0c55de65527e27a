"""``nexent-autoinstrument demo``: the example service under the agent, on the bundled mock LLM.

Starts the mock LLM, runs ``examples/backend/main_service.py`` under
``opentelemetry-instrument`` with ``ENABLE_TELEMETRY=true``, drives requests through it (some
slow, some failing), then prints what the agent measured: exact per-call values from the spans
in ``.demo/traces.jsonl``, or, when the spans went to the monitoring stack instead, estimates from
the histogram buckets of the service's /metrics.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import conventions as names
from ..cli import COMMANDS
from .mock import MockConfig, start_in_thread
from .net import container_reachable_hosts, free_port, reachable

#: Served by the mock: the first priced by genai-prices' table, the second by the demo's own price file.
MODELS = ("gpt-4o-mini", "mock-gpt")
#: The demo's LLM_PRICES_FILE, USD per million tokens.
DEMO_PRICES = {"mock-gpt": {"input": 1.0, "output": 4.0}}
STACK_SCRAPE_PORT = 8000
EXAMPLE = Path("examples") / "backend" / "main_service.py"
DEMO_REQUIREMENTS = ("opentelemetry.sdk", "prometheus_client", "openai", "fastapi", "uvicorn")


def find_example() -> Path | None:
    """The example service of a source checkout: the one this package was installed from in
    editable mode, or the current directory. None when neither is a checkout."""
    for parent in [*Path(__file__).resolve().parents, Path.cwd()]:
        if (parent / EXAMPLE).is_file():
            return parent / EXAMPLE
    return None


def missing_requirements() -> list[str]:
    """The modules of the ``demo`` extra that are not installed."""
    from importlib.util import find_spec

    missing = []
    for module in DEMO_REQUIREMENTS:
        try:
            found = find_spec(module) is not None
        except ImportError:  # the parent package is missing
            found = False
        if not found:
            missing.append(module.split(".")[0])
    return missing


def _post(url: str, payload: dict[str, object], timeout: float = 60) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the example service exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the example service did not answer on {url} within {seconds:.0f} s")


def _plan(requests: int) -> list[dict[str, object]]:
    """A mix of normal, slow and failing chats, spread over the models."""
    plan: list[dict[str, object]] = []
    for index in range(requests):
        mock: dict[str, float] = {}
        if index % 10 == 7:
            mock = {"error": 500}
        elif index % 10 == 3:
            mock = {"itl": 0.15, "tokens": 12}  # a slow stream: about 7 tokens/s
        model = MODELS[(index // 2) % len(MODELS)]
        plan.append({"message": f"question {index}", "model": model, "mock": mock})
    return plan


def print_progress(done: int, total: int, failed: int, tty: bool) -> None:
    """A bar redrawn in place on a terminal; elsewhere (a pipe, a log file) a plain line every
    ten requests and at the end."""
    if tty:
        bar = "#" * (30 * done // total)
        print(f"\rrequests      [{bar:<30}] {done}/{total} ({failed} failed on purpose)",
              end="\n" if done == total else "", flush=True)
    elif done % 10 == 0 or done == total:
        print(f"requests      {done}/{total} done ({failed} failed on purpose)", flush=True)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile of exact values, interpolated between the two nearest ranks."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Row:
    """One model's line of the table."""

    calls: float
    errors: float
    slow: float
    ttft_p50: float | None
    ttft_p95: float | None
    rate_p50: float | None
    itl_p50: float | None
    duration_p50: float | None
    duration_p95: float | None
    output_tokens: float
    #: USD over the calls with a price; None when none had one.
    cost: float | None = None


def _duration(span: dict[str, Any]) -> float:
    """A span's duration from its ISO start and end times (microseconds)."""
    start, end = (datetime.strptime(span[key], "%Y-%m-%dT%H:%M:%S.%fZ") for key in ("start_time", "end_time"))
    return (end - start).total_seconds()


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The spans of a JSON Lines file written by the console exporter: complete lines only, and
    anything else the service may print to stdout is skipped."""
    text = path.read_text(errors="replace") if path.exists() else ""
    spans = []
    for line in text.splitlines(keepends=True):
        try:
            span = json.loads(line) if line.endswith("\n") else None
        except ValueError:
            continue
        if isinstance(span, dict) and "name" in span:
            spans.append(span)
    return spans


def llm_spans(spans: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spans of LLM calls (the others are the service's HTTP and server spans)."""
    return [s for s in spans if names.GEN_AI_OPERATION in (s.get("attributes") or {})]


def rows_from_spans(spans: Iterable[dict[str, Any]]) -> dict[str, Row]:
    """Exact per-model figures over the LLM spans: quantiles over calls of each call's own values."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for span in llm_spans(spans):
        by_model.setdefault(str(span["attributes"].get(names.GEN_AI_REQUEST_MODEL, "?")), []).append(span)
    rows = {}
    slow_events = {names.EVENT_SLOW_REQUEST, names.EVENT_SLOW_TOKEN_RATE}
    for model, calls in by_model.items():
        def values(attribute: str, calls: list[dict[str, Any]] = calls) -> list[float]:
            return [float(c["attributes"][attribute]) for c in calls if attribute in c["attributes"]]

        durations = [_duration(c) for c in calls]
        rows[model] = Row(
            calls=len(calls),
            errors=sum(c["status"]["status_code"] == "ERROR" for c in calls),
            slow=sum(any(e["name"] in slow_events for e in c.get("events", ())) for c in calls),
            ttft_p50=percentile(values(names.LLM_TTFT), 0.5),
            ttft_p95=percentile(values(names.LLM_TTFT), 0.95),
            rate_p50=percentile(values(names.LLM_RATE), 0.5),
            itl_p50=percentile(values(names.LLM_ITL_P50), 0.5),
            duration_p50=percentile(durations, 0.5),
            duration_p95=percentile(durations, 0.95),
            output_tokens=sum(values(names.GEN_AI_OUTPUT_TOKENS)),
            cost=sum(values(names.LLM_COST_USD)) if values(names.LLM_COST_USD) else None)
    return rows


def rows_from_metrics(metrics_text: str) -> dict[str, Row]:
    """Per-model figures from a /metrics page: counts are exact, quantiles are interpolated inside
    histogram buckets (as Prometheus does), so they are estimates."""
    from .promtext import summarize

    return {model: Row(
        calls=s.requests, errors=s.errors, slow=s.slow,
        ttft_p50=s.quantile(names.TTFT, 0.5), ttft_p95=s.quantile(names.TTFT, 0.95),
        rate_p50=s.quantile(names.TOKEN_RATE, 0.5), itl_p50=s.quantile(names.INTER_TOKEN_LATENCY, 0.5),
        duration_p50=s.quantile(names.REQUEST_DURATION, 0.5), duration_p95=s.quantile(names.REQUEST_DURATION, 0.95),
        output_tokens=s.tokens.get("output", 0), cost=s.cost) for model, s in summarize(metrics_text).items()}


def _fmt(value: float | None, unit: str, scale: float, digits: int, estimated: bool) -> str:
    if value is None:
        return "-"
    return ("~" if estimated else "") + f"{value * scale:.{digits}f}{unit}"


def format_table(rows: dict[str, Row], estimated: bool = False) -> str:
    """The per-model table; with ``estimated``, quantiles are marked ``~`` (bucket estimates)."""
    header = (f"{'model':<14}{'calls':>6}{'errors':>7}{'slow':>6}{'TTFT p50':>10}{'TTFT p95':>10}"
              f"{'tok/s p50':>11}{'ITL p50':>10}{'dur p50':>9}{'dur p95':>9}{'out tok':>9}{'cost':>11}")
    lines = [header, "-" * len(header)]
    for model, r in sorted(rows.items()):
        lines.append(
            f"{model:<14}{r.calls:>6.0f}{r.errors:>7.0f}{r.slow:>6.0f}"
            f"{_fmt(r.ttft_p50, 'ms', 1000, 0, estimated):>10}{_fmt(r.ttft_p95, 'ms', 1000, 0, estimated):>10}"
            f"{_fmt(r.rate_p50, '', 1, 1, estimated):>11}{_fmt(r.itl_p50, 'ms', 1000, 1, estimated):>10}"
            f"{_fmt(r.duration_p50, 's', 1, 2, estimated):>9}{_fmt(r.duration_p95, 's', 1, 2, estimated):>9}"
            f"{r.output_tokens:>9.0f}{'-' if r.cost is None else f'${r.cost:.6f}':>11}")
    if estimated:
        lines.append("~ estimated inside histogram buckets of /metrics; the exact per-call values are on the spans")
    else:
        lines.append("p50/p95 over calls; tok/s = decode rate after the first token; ITL p50 = median of each "
                     "call's median gap; cost = sum of the calls' llm.cost.usd (- : no price known)")
    return "\n".join(lines)


def slowest_ttft_exemplar(metrics_url: str) -> tuple[float, str] | None:
    """(TTFT, trace id) of the exemplar in the highest TTFT bucket that has one, from /metrics
    asked for OpenMetrics (the format that carries exemplars); None if there is none."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    request = urllib.request.Request(metrics_url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    found = [(s.exemplar.value, s.exemplar.labels["trace_id"]) for family in text_string_to_metric_families(text)
             if family.name == names.TTFT for s in family.samples
             if s.exemplar is not None and "trace_id" in s.exemplar.labels]
    return max(found) if found else None


def wait_for_spans(path: Path, count: int, seconds: float = 15) -> list[dict[str, Any]] | None:
    """The spans in ``path`` once it holds ``count`` LLM spans; None if they do not all come in time."""
    deadline = time.monotonic() + seconds
    while True:
        spans = read_spans(path)
        if len(llm_spans(spans)) >= count:
            return spans
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def _steady_load(url: str, concurrency: int, service: subprocess.Popen[bytes]) -> None:
    """Requests of the demo's mix, ``concurrency`` at a time, until Ctrl-C (or the service stops):
    the dashboard's panels fill and stay filled."""
    print("\nsending a steady load for the dashboard (Grafana: http://localhost:3005); Ctrl-C to stop")
    sent = failed = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            while service.poll() is None:
                for status, _ in pool.map(lambda p: _post(url, p), _plan(concurrency * 5)):
                    sent += 1
                    failed += status != 200
                print(f"  {sent} requests sent, {failed} failed (as planned: the mix has errors)", flush=True)
    except KeyboardInterrupt:
        print(f"\nstopped after {sent} requests")


def main(argv: list[str] | None = None) -> None:
    """Run the demo."""
    parser = argparse.ArgumentParser(prog="nexent-autoinstrument demo", description=COMMANDS["demo"][1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="chat requests to send")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--keep-running", action="store_true", help="leave the service up until Ctrl-C")
    parser.add_argument("--stack", action="store_true",
                        help="fill the running monitoring stack's dashboard: serve where its Prometheus scrapes "
                             "and keep sending requests until Ctrl-C")
    args = parser.parse_args(argv)

    # Everything that can be missing is checked before anything starts or any file is written.
    example = find_example()
    if example is None:
        raise SystemExit(
            "nexent-autoinstrument demo: the demo runs the example service of a source checkout\n"
            f"({EXAMPLE}), which is not part of the installed package, and none was found here.\n"
            "From a clone of the repository, run ./scripts/demo.sh (or this command inside the clone).")
    missing = missing_requirements()
    if missing:
        raise SystemExit(f"nexent-autoinstrument demo: {', '.join(missing)} not installed; the example service "
                         f"needs the demo extra: pip install -e '.[demo]' in {example.parents[2]}")
    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable)) \
        or shutil.which("opentelemetry-instrument")
    if instrument is None:
        raise SystemExit(f"nexent-autoinstrument demo: opentelemetry-instrument not found; "
                         f"pip install -e '.[demo]' in {example.parents[2]}")

    otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    stack_up = reachable(otlp) and reachable("http://localhost:3005")
    scrape_port_free = not reachable(f"http://127.0.0.1:{STACK_SCRAPE_PORT}")
    if args.stack and not (stack_up and scrape_port_free):
        from .doctor import start_stack_hint

        raise SystemExit("nexent-autoinstrument demo --stack: " + (
            f"port {STACK_SCRAPE_PORT}, where the stack's Prometheus scrapes, is taken; stop what listens there"
            if stack_up else f"the monitoring stack is not running (nothing at {otlp} and :3005); start it first: "
            f"{start_stack_hint()}"))
    mock = start_in_thread(MockConfig(ttft=0.12, itl=0.015, tokens=40, jitter=0.3), seed=7)
    # With the stack up, serve where its Prometheus scrapes by default (docker/prometheus/targets/):
    # host.docker.internal:8000, which on Linux is the Docker bridge's address, not loopback.
    port = STACK_SCRAPE_PORT if stack_up and scrape_port_free else free_port()
    hosts = container_reachable_hosts() if stack_up else "127.0.0.1"
    traces_file = Path(".demo") / "traces.jsonl"
    prices_file = traces_file.parent / "prices.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(ENABLE_TELEMETRY="true", SERVICE_NAME="nexent-demo-backend", PORT=str(port), HOST=hosts,
               OPENAI_BASE_URL=mock.base_url, OPENAI_API_KEY="sk-demo-not-a-real-key",
               LLM_PRICES_FILE=str(prices_file.resolve()),
               OTEL_TRACES_EXPORTER="otlp" if stack_up else "console",
               OTEL_BSP_SCHEDULE_DELAY="200")  # spans reach the file soon after each call, for the table
    if stack_up:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    traces_file.parent.mkdir(exist_ok=True)
    prices_file.write_text(json.dumps(DEMO_PRICES, indent=2) + "\n")
    print(f"mock LLM      {mock.base_url}")
    print(f"prices        {MODELS[0]}: genai-prices' table; {', '.join(DEMO_PRICES)}: {prices_file} (LLM_PRICES_FILE)")
    print(f"service       http://127.0.0.1:{port}  (opentelemetry-instrument python {example.name})")
    if hosts != "127.0.0.1":
        print(f"              also on {hosts.split(',', 1)[1]}:{port}, where the stack's Prometheus reaches it")
    log_file = traces_file.with_name("service.log")
    tty = sys.stdout.isatty()
    with traces_file.open("wb") as traces, log_file.open("wb") as log:
        service = subprocess.Popen([instrument, sys.executable, str(example)], env=env,
                                   stdout=traces if not stack_up else subprocess.DEVNULL, stderr=log)
        try:
            _wait_ready(f"http://127.0.0.1:{port}/health", service)
            plan = _plan(args.requests)
            done = failed = 0
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                futures = [pool.submit(_post, f"http://127.0.0.1:{port}/chat", p) for p in plan]
                for future in concurrent.futures.as_completed(futures):
                    status, _ = future.result()
                    done += 1
                    failed += status != 200
                    print_progress(done, len(plan), failed, tty)
            spans = None if stack_up else wait_for_spans(traces_file, len(plan))
            if spans is not None:
                print(f"\nMeasured by the agent, per call, from the spans in {traces_file} :\n")
                print(format_table(rows_from_spans(spans)))
            else:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    metrics_text = response.read().decode()
                print(f"\nMeasured by the agent, read from http://127.0.0.1:{port}/metrics :\n")
                print(format_table(rows_from_metrics(metrics_text), estimated=True))
            slowest = slowest_ttft_exemplar(f"http://127.0.0.1:{port}/metrics")
            if slowest is not None:
                value, trace_id = slowest
                where = ("open it in Jaeger, or click its dot on the TTFT panel" if stack_up
                         else f"its span is in {traces_file}")
                print(f"\nExemplar: the slowest TTFT bucket on /metrics points to its call, TTFT {value * 1000:.0f}ms, "
                      f"trace {trace_id}\n          ({where})")
            if args.stack:
                _steady_load(f"http://127.0.0.1:{port}/chat", args.concurrency, service)
            elif args.keep_running:
                print("\nservice left running; Ctrl-C to stop")
                service.wait()
        finally:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=15)
            except subprocess.TimeoutExpired:
                service.kill()
            mock.shutdown()
    if stack_up:
        print("\nTraces went to OTLP at", otlp)
        print("Grafana: http://localhost:3005 (LLM Performance Dashboard), Jaeger: http://localhost:16686")
    else:
        print(f"\nService log (slow-call warnings and errors): {log_file}")
        print(f"Traces: {len(read_spans(traces_file))} spans, one JSON object per line, in {traces_file}")
        from .doctor import start_stack_hint

        print(f"Start the monitoring stack ({start_stack_hint()}) to see them in Jaeger and Grafana.")

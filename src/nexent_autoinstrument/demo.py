"""``nexent-autoinstrument demo``: the example service under the agent, on the bundled mock LLM.

Starts the mock LLM, runs ``examples/backend/main_service.py`` under
``opentelemetry-instrument`` with ``ENABLE_TELEMETRY=true``, drives requests through it (some
slow, some failing), then reads the service's /metrics and prints what was measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .mock_llm import MockConfig, start_in_thread
from .promtext import summarize

MODELS = ("mock-gpt", "mock-gpt-mini")
STACK_SCRAPE_PORT = 8000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(url: str, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at the URL's host and port."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return True
    except OSError:
        return False


def find_example() -> Path:
    """The example service, from a source checkout."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / "backend" / "main_service.py"
        if candidate.exists():
            return candidate
    raise SystemExit("examples/backend/main_service.py not found: run the demo from a source checkout")


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


def _fmt(value: float | None, scale: float = 1.0, digits: int = 0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def print_table(metrics_text: str) -> None:
    """The per-model table of what was measured."""
    header = (f"{'model':<14}{'calls':>6}{'errors':>7}{'slow':>6}{'TTFT p50':>10}{'TTFT p95':>10}"
              f"{'tok/s':>8}{'ITL p50':>9}{'dur p50':>9}{'dur p95':>9}{'out tok':>9}")
    print(header)
    print("-" * len(header))
    for model, s in sorted(summarize(metrics_text).items()):
        print(f"{model:<14}{s.requests:>6.0f}{s.errors:>7.0f}{s.slow:>6.0f}"
              f"{_fmt(s.quantile('llm_time_to_first_token_seconds', 0.5), 1000):>8}ms"
              f"{_fmt(s.quantile('llm_time_to_first_token_seconds', 0.95), 1000):>8}ms"
              f"{_fmt(s.mean('llm_token_generation_rate'), 1, 1):>8}"
              f"{_fmt(s.quantile('llm_inter_token_latency_seconds', 0.5), 1000, 1):>7}ms"
              f"{_fmt(s.quantile('llm_request_duration_seconds', 0.5), 1, 2):>8}s"
              f"{_fmt(s.quantile('llm_request_duration_seconds', 0.95), 1, 2):>8}s"
              f"{s.tokens.get('output', 0):>9.0f}")


def main(argv: list[str] | None = None) -> None:
    """Run the demo."""
    parser = argparse.ArgumentParser(prog="nexent-autoinstrument demo", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--keep-running", action="store_true", help="leave the service up until Ctrl-C")
    args = parser.parse_args(argv)

    mock = start_in_thread(MockConfig(ttft=0.12, itl=0.015, tokens=40, jitter=0.3), seed=7)
    otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    stack_up = reachable(otlp) and reachable("http://localhost:3005")
    # With the stack up, serve where its Prometheus scrapes by default (docker/prometheus/targets).
    port = STACK_SCRAPE_PORT if stack_up and not reachable(f"http://127.0.0.1:{STACK_SCRAPE_PORT}") else free_port()
    traces_file = Path(".demo") / "traces.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(ENABLE_TELEMETRY="true", SERVICE_NAME="nexent-demo-backend", PORT=str(port),
               OPENAI_BASE_URL=mock.base_url, OPENAI_API_KEY="sk-demo-not-a-real-key",
               OTEL_TRACES_EXPORTER="otlp" if stack_up else "console")
    if stack_up:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable)) \
        or shutil.which("opentelemetry-instrument")
    if instrument is None:
        raise SystemExit("opentelemetry-instrument not found: pip install 'nexent-autoinstrument[performance]'")
    traces_file.parent.mkdir(exist_ok=True)
    print(f"mock LLM      {mock.base_url}")
    print(f"service       http://127.0.0.1:{port}  (opentelemetry-instrument python {find_example().name})")
    log_file = traces_file.with_name("service.log")
    with traces_file.open("wb") as traces, log_file.open("wb") as log:
        service = subprocess.Popen([instrument, sys.executable, str(find_example())], env=env,
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
                    bar = "#" * (30 * done // len(plan))
                    print(f"\rrequests      [{bar:<30}] {done}/{len(plan)} ({failed} failed on purpose)",
                          end="", flush=True)
            print()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                metrics_text = response.read().decode()
            print(f"\nMeasured by the agent, read from http://127.0.0.1:{port}/metrics :\n")
            print_table(metrics_text)
            if args.keep_running:
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
        spans = sum(1 for line in traces_file.read_text().splitlines() if line.startswith('    "name"'))
        print(f"\nService log (slow-call warnings and errors): {log_file}")
        print(f"Traces: {spans} spans written by the console exporter to {traces_file}")
        print("Start the monitoring stack (./docker/start-monitoring.sh) to see them in Jaeger and Grafana.")

"""Shared fixtures: a real mock LLM on loopback, an in-memory telemetry harness, subprocess helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from nexent_autoinstrument import bootstrap, settings
from nexent_autoinstrument.cost import PriceBook, load_price_book
from nexent_autoinstrument.metrics import HTTPMetrics, LLMMetrics
from nexent_autoinstrument.settings import Settings
from nexent_autoinstrument.tools.mock import MockConfig, MockLLMServer, start_in_thread
from nexent_autoinstrument.tools.net import free_port
from nexent_autoinstrument.tracker import Telemetry

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Property tests try ``examples(n)`` inputs: n in the test command, more where scripts/stress.sh
#: sets TEST_EXAMPLES_SCALE (it runs them again, deeper).
EXAMPLES_SCALE = float(os.environ.get("TEST_EXAMPLES_SCALE", "1"))


def examples(count: int) -> int:
    """How many examples a property test of ``count`` examples tries in this run."""
    return max(1, round(count * EXAMPLES_SCALE))


# No example has a time limit: on a loaded machine (four workers on two cores, CI) hypothesis's
# 200 ms deadline fails a correct test, as a verdict must not depend on the machine's speed.
hypothesis.settings.register_profile("no-deadline", deadline=None)
hypothesis.settings.load_profile("no-deadline")


@dataclass
class Harness:
    """Telemetry recording into memory: spans in an exporter, metrics in a private registry."""

    telemetry: Telemetry
    exporter: InMemorySpanExporter
    registry: CollectorRegistry
    provider: TracerProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def llm_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.attributes and "gen_ai.operation.name" in s.attributes]

    def llm_span(self) -> ReadableSpan:
        spans = self.llm_spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def record_ending_threads(self) -> list[str]:
        """The names of the threads that end LLM spans from now on (a list that fills up)."""
        threads: list[str] = []

        class Recorder(SpanProcessor):
            def on_end(self, span: ReadableSpan) -> None:
                if span.attributes and "gen_ai.operation.name" in span.attributes:
                    threads.append(threading.current_thread().name)

        self.provider.add_span_processor(Recorder())
        return threads


def wait_for_llm_span(harness: Harness, seconds: float = 15.0) -> ReadableSpan:
    """The one LLM span, once it has ended: calls that stop being read end within about a second
    (``seconds`` only bounds a loaded machine's wait)."""
    deadline = time.monotonic() + seconds
    while not harness.llm_spans() and time.monotonic() < deadline:
        time.sleep(0.02)
    return harness.llm_span()


_prices: list[PriceBook | None] = []


def shared_prices() -> PriceBook | None:
    """genai-prices' table, loaded once for the session's harnesses."""
    if not _prices:
        _prices.append(load_price_book(None))
    return _prices[0]


def make_harness(**overrides: Any) -> Harness:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    config = replace(Settings(enabled=True, service_name="tests"), **overrides)
    metrics = LLMMetrics(registry=registry, max_model_labels=config.max_model_labels,
                         service=(config.service_name, config.service_version))
    prices = load_price_book(config.prices_file) if config.prices_file else shared_prices()
    telemetry = Telemetry(config, provider.get_tracer("tests"), metrics, HTTPMetrics(registry=registry), prices=prices)
    return Harness(telemetry, exporter, registry, provider)


@pytest.fixture
def harness_factory() -> Any:
    return make_harness


@pytest.fixture
def harness() -> Harness:
    return make_harness()


@pytest.fixture
def agent(harness: Harness) -> Iterator[Harness]:
    """The whole agent as users run it (openai, httpx, httpx2, aiohttp and botocore layers), recording
    into ``harness``."""
    from nexent_autoinstrument.instrumentors.otel import (
        AioHTTPInstrumentor,
        BedrockInstrumentor,
        HTTPX2Instrumentor,
        HTTPXInstrumentor,
        OpenAIInstrumentor,
    )

    instrumentors = [OpenAIInstrumentor(), HTTPXInstrumentor(), HTTPX2Instrumentor(), AioHTTPInstrumentor(),
                     BedrockInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(telemetry=harness.telemetry)
    yield harness
    for instrumentor in instrumentors:
        instrumentor.uninstrument()


@pytest.fixture(scope="session")
def mock_llm() -> Iterator[MockLLMServer]:
    server = start_in_thread(MockConfig(ttft=0.02, itl=0.002, tokens=10), seed=1)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def as_manual(monkeypatch: pytest.MonkeyPatch, harness: Harness) -> Harness:
    """Make the manual API record into ``harness`` as if the agent were running."""
    monkeypatch.setattr(settings, "_cached", harness.telemetry.settings)
    monkeypatch.setattr(bootstrap, "_telemetry", harness.telemetry)
    monkeypatch.setattr(bootstrap, "_initialized", True)
    return harness


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: ours, minus anything that configures the agent."""
    prefixes = ("OTEL_", "ENABLE_TELEMETRY", "SERVICE_NAME", "JAEGER_", "TELEMETRY_", "LLM_", "PROMETHEUS_")
    if not os.environ.get("NEXENT_MUTANT"):  # (scripts/mutation_check.py: children import the mutated copy)
        prefixes += ("PYTHONPATH",)
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def start_example(mock_llm: Any, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
    """The example service under opentelemetry-instrument, ready to answer."""
    port = free_port()
    environ = clean_env(ENABLE_TELEMETRY="true", SERVICE_NAME="example-backend", PORT=str(port),
                        OPENAI_BASE_URL=mock_llm.base_url, **env)
    process = subprocess.Popen([str(BIN / "opentelemetry-instrument"), sys.executable,
                                str(ROOT / "examples" / "backend" / "main_service.py")],
                               env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    return base, process


def post_chat(base: str, **body: Any) -> tuple[int, str]:
    request = urllib.request.Request(base + "/chat", data=json.dumps({"message": "hi", **body}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def run_python(code: str, *, env: dict[str, str], instrument: bool = False, timeout: float = 60,
               tmp_path: Path | None = None, args: tuple[str, ...] = (),
               script_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script in a fresh interpreter (optionally under opentelemetry-instrument).
    ``args`` go to the interpreter, ``script_args`` to the script. On a timeout, every process of
    its session is killed, the forks it made included, and ``TimeoutExpired`` raised."""
    script_dir = tmp_path or Path(os.environ.get("TMPDIR", "/tmp"))
    script = script_dir / "app_under_test.py"
    script.write_text(code)
    command = [sys.executable, *args, str(script), *script_args]
    if instrument:
        command = [str(BIN / "opentelemetry-instrument"), *command]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=script_dir, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # (a hung fork would outlive the test, holding its pipes)
            stdout, stderr = process.communicate()
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

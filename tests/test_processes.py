"""Processes: pre-fork servers, Prometheus multiprocess mode, multiprocessing children."""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, ROOT, clean_env, post_chat, run_python
from nexent_autoinstrument.tools.net import free_port
from receivers import OTLPHTTPReceiver

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.mark.parametrize("preload", [False, True], ids=["app-per-worker", "preload"])
def test_gunicorn_workers_each_have_telemetry_and_metrics_sum_over_workers(preload: bool, mock_llm: Any,
                                                                          tmp_path: Path) -> None:
    receiver = OTLPHTTPReceiver()
    port = free_port()
    multiproc = tmp_path / "prometheus-multiproc"
    multiproc.mkdir()
    env = clean_env(ENABLE_TELEMETRY="true", SERVICE_NAME="gunicorn-app", OPENAI_BASE_URL=mock_llm.base_url,
                    OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
                    PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    command = [str(BIN / "gunicorn"), "--workers", "2", "--worker-class", "uvicorn_worker.UvicornWorker",
               "--bind", f"127.0.0.1:{port}", "--chdir", str(ROOT / "examples" / "backend"), "--graceful-timeout", "5",
               *(["--preload"] if preload else []), "main_service:app"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
                time.sleep(0.3)
        sent = 0
        workers: dict[Any, Any] = {}
        deadline = time.monotonic() + 40
        while len(workers) < 2 and time.monotonic() < deadline:  # until both workers have served calls
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda _: post_chat(base, mock={"itl": 0.03})[0], range(8)))
            assert statuses == [200] * 8
            sent += 8
            time.sleep(0.5)
            for resource, span in receiver.spans():
                if span.name == "chat mock-gpt":
                    workers[resource["process.pid"]] = resource["service.instance.id"]
        assert len(workers) == 2, workers  # telemetry from every worker ...
        assert len(set(workers.values())) == 2  # ... each with its own service.instance.id
        for _ in range(4):  # whichever worker answers /metrics, it shows the sum over both
            text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
            total = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                        if s.name == "llm_request_duration_seconds_count")
            assert total == sent
        # A scraper that asks for OpenMetrics gets it, the same sums; prometheus_client keeps no
        # exemplars across processes, so there are none (the OTLP histograms still have theirs).
        request = urllib.request.Request(base + "/metrics", headers={"Accept": OPENMETRICS})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            families = list(openmetrics_families(response.read().decode()))
        samples = [s for f in families for s in f.samples]
        assert sum(s.value for s in samples if s.name == "llm_request_duration_seconds_count") == sent
        assert not [s for s in samples if s.exemplar is not None]
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
        receiver.stop()
    assert b"Traceback" not in stderr, stderr.decode()[-3000:]


CHILDREN = """
import multiprocessing, os
from nexent_autoinstrument import monitoring_manager

def work(label):
    with monitoring_manager.trace_llm_request("chat", label) as llm:
        llm.record_token()

if __name__ == "__main__":
    work("parent")
    for method in ("spawn", "fork", "forkserver"):
        child = multiprocessing.get_context(method).Process(target=work, args=(method,))
        child.start()
        child.join()
        print(method, child.exitcode)
"""


def test_multiprocessing_children_are_instrumented(mock_llm: Any, tmp_path: Path) -> None:
    receiver = OTLPHTTPReceiver()
    try:
        env = clean_env(ENABLE_TELEMETRY="true", SERVICE_NAME="mp-app", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                        OTEL_BSP_SCHEDULE_DELAY="100")
        result = run_python(CHILDREN, env=env, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "spawn 0" in result.stdout and "fork 0" in result.stdout and "forkserver 0" in result.stdout
        spans = {span.name: resource for resource, span in receiver.spans()}
        assert set(spans) == {"chat parent", "chat spawn", "chat fork", "chat forkserver"}
        pids = {name: resource["process.pid"] for name, resource in spans.items()}
        assert len(set(pids.values())) >= 3  # spawn and forkserver children are new interpreters
    finally:
        receiver.stop()

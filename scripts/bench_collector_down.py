#!/usr/bin/env python3
"""Request latency of an application when the collector is down, against telemetry off.

A child process makes N streamed chat completions through the real openai SDK to the bundled
mock LLM on loopback, in three settings run interleaved: telemetry off; on, with the OTLP
collector on a closed port; on, with a collector that accepts connections and never answers.
Prints the median latency of each and its ratio to telemetry off (target: within 5 %).

    python scripts/bench_collector_down.py [--requests 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading

CHILD = """
import json, os, time, openai
client = openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-bench", max_retries=0)
latencies = []
for _ in range(int(os.environ["REQUESTS"])):
    started = time.perf_counter()
    for _ in client.chat.completions.create(model="mock-gpt", stream=True, messages=[{"role": "user", "content": "x"}]):
        pass
    latencies.append(time.perf_counter() - started)
print(json.dumps(latencies))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def black_hole() -> int:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in iter(int, 1)], daemon=True).start()
    return int(server.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from nexent_autoinstrument.tools.mock import MockConfig, start_in_thread

    mock = start_in_thread(MockConfig(ttft=0.005, itl=0.001, tokens=20))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENABLE_TELEMETRY"))}
    base.update(MOCK_URL=mock.base_url, REQUESTS=str(args.requests))
    modes = {
        "telemetry off": {},
        "collector port closed": {"ENABLE_TELEMETRY": "true", "OTEL_METRICS_EXPORTER": "otlp",
                                  "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
        "collector never answers": {"ENABLE_TELEMETRY": "true", "OTEL_METRICS_EXPORTER": "otlp",
                                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{black_hole()}"},
    }
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode, extra in modes.items():
            run = subprocess.run([sys.executable, "-c", CHILD], env={**base, **extra}, capture_output=True,
                                 text=True, check=True)
            samples[mode].extend(json.loads(run.stdout.strip().splitlines()[-1]))
    off = statistics.median(samples["telemetry off"])
    print(f"{args.requests} streamed calls x {args.rounds} interleaved rounds, median latency per call")
    for mode, values in samples.items():
        median = statistics.median(values)
        print(f"  {mode:<26}{median * 1e3:8.2f} ms   ratio {median / off:.3f}")
    mock.shutdown()


if __name__ == "__main__":
    main()

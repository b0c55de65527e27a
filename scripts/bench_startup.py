#!/usr/bin/env python3
"""What the agent adds to interpreter start.

1. The .pth hook with telemetry off: the exact installed line, timed in-process (site has
   already imported ``os`` when it runs), so the figure is the hook's own cost.
2. Whole-interpreter start (``python -c pass``), median of N runs each, interleaved:
   telemetry off, and telemetry on (full pipeline, no exporter).
3. ``import nexent_autoinstrument`` plus the manual API, telemetry off.

    python scripts/bench_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import time
import timeit
from pathlib import Path


def start_time(env: dict[str, str], code: str = "pass") -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    line = (Path(sysconfig.get_paths()["purelib"]) / "nexent_autoinstrument.pth").read_text().strip()
    env_off = {k: v for k, v in os.environ.items() if k != "ENABLE_TELEMETRY"}
    os.environ.pop("ENABLE_TELEMETRY", None)
    hook = min(timeit.repeat(lambda: exec(line, {}), number=10_000, repeat=5)) / 10_000
    print(f".pth hook, telemetry off: {hook * 1e6:.2f} us (the installed line, timed in-process)")

    env_on = {**env_off, "ENABLE_TELEMETRY": "true", "OTEL_TRACES_EXPORTER": "none"}
    manual = "from nexent_autoinstrument import monitoring_manager, MONITORING_AVAILABLE"
    samples: dict[str, list[float]] = {"off": [], "on": [], "manual": []}
    for _ in range(args.runs):
        samples["off"].append(start_time(env_off))
        samples["on"].append(start_time(env_on))
        samples["manual"].append(start_time(env_off, manual))
    off, on, with_manual = (statistics.median(samples[k]) for k in ("off", "on", "manual"))
    print(f"python -c pass, telemetry off: {off * 1e3:.1f} ms (median of {args.runs})")
    print(f"python -c pass, telemetry on:  {on * 1e3:.1f} ms (+{(on - off) * 1e3:.1f} ms: SDK, pipeline, hooks)")
    print(f"manual API import, telemetry off: +{(with_manual - off) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()

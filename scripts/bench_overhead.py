#!/usr/bin/env python3
"""What the agent costs an application, row by row, next to OpenLLMetry and the official genai-openai.

    python scripts/bench_overhead.py --all --peers            # every row, ours and both peers
    python scripts/bench_overhead.py --rows sync,finish       # some rows, bare vs ours only
    python scripts/bench_overhead.py --all --peers --json > bench.json   # JSON on stdout, table on stderr

Every agent runs as its users run it. Ours is loaded at start-up by ``ENABLE_TELEMETRY=true``
(the .pth hook), with its defaults: every layer of its own table, spans exported over OTLP/HTTP
by its export thread, Prometheus instruments. Our venv's processes import the agent from a
snapshot of src/ taken when the run starts. The peers, OpenLLMetry
(opentelemetry-instrumentation-openai) and the official OpenTelemetry instrumentation
(opentelemetry-instrumentation-genai-openai), run in side venvs under ``.bench/`` that this
script makes (same openai and OpenTelemetry SDK as ours), with their default settings, an SDK
tracer provider exporting over OTLP/HTTP in batches and an SDK meter provider exporting over
OTLP/HTTP. Every agent exports to one OTLP/HTTP receiver (the tests' own, which decodes the
protobuf) in this process, and the measured region ends once its calls' spans are exported.
Content capture is off for every agent. Each measurement runs in a fresh interpreter
(``bench_workloads.py``), bare and instrumented alike doing the same work apart from the agent;
a figure counts only if the receiver got one LLM span per call.

Rows (``--rows``):

- ``sync``, ``async``, ``raw``: instructions per chunk, steady state: the slope between one
  stream of ``--slope`` SMALL and one of LARGE chunks (both above the 1,000-offset cap), so
  start and finish cancel out, for every way the bytes arrive (``--arrivals``, see
  ``bench_workloads.ARRIVALS``): paced (each read waits 5 ms for its one event, as from a
  server at network speed), burst (the whole stream in one read), event (one event per read,
  already waiting), events (four per paced read), tiny (16-byte reads) and gzip. ``raw`` reads
  the chat stream with httpx ``iter_lines`` and ``aiter_lines`` directly (no SDK), and with
  aiohttp's lines from a server on the same event loop over loopback TCP (the reads are then
  the server's writes, joined where TCP joins them); and boto3's Bedrock ``converse_stream``,
  its event-stream frames answered from memory (no gzip row: those streams are not compressed).
  Only ours measures those. No run is thrown
  away: a busy machine that makes a paced read find its data waiting is noted under the table.
- ``whole``: instructions per whole streamed call (sync) of 50, 200 and 1,000 chunks, start and
  finish included: the calls in the measured region, divided by their number.
- ``finish``: end-of-call work per content chunk, up to the cap. Ours: ``lifecycle.end`` alone,
  of calls whose tracker was fed 1,000 content chunks (each an arrival) less of calls fed 50,
  per chunk between. A peer's end cannot be run alone, so it is derived: what the peer adds per
  whole call at 1,000 chunks less at 50, per chunk between, less what it adds per chunk in the
  steady state. That is a difference of differences, within about 2,000 instructions of noise
  (see below), and a negative figure means the peer's cost per chunk grows along a stream.
- ``create``: instructions per non-streamed ``create`` call, its answer a body the client reads
  (as from the network; not one that came already read, which the agent takes at once).
- ``startup``: wall time of ``python -c pass`` (and ``-c 'import openai'``), median of
  ``--startup-runs`` interleaved runs, with telemetry on (ours: ENABLE_TELEMETRY=true through
  the installed .pth hook; peers: opentelemetry-instrument's sitecustomize with
  opentelemetry-distro, what ``opentelemetry-instrument python`` runs after its own exec),
  OTEL_TRACES_EXPORTER=none and OTEL_METRICS_EXPORTER=none, minus the same without.
- ``concurrency``: 200 concurrent async streams of 200 chunks from a real SSE server on
  127.0.0.1 (``bench_sse_server.py``, another process; tokens 100 ms apart, the streams evenly
  spread, so that no client is CPU-bound); the client process's CPU time (user + system) per
  chunk, as a ratio to a bare client's in the same round: the median of ``--rounds`` rounds,
  each of one bare client and one per agent, their order reversed every other round. CPU time
  is noisy here: identical clients differ by several percent from one run to the next.
- ``memory``: traced memory (tracemalloc) while one 100,000-chunk stream is consumed: peak
  growth over bare.

The bare runs of the memory and concurrency rows are made once, in our venv (the side venvs
pin the same openai, httpx2 and pydantic); those of the instruction rows in each agent's own
venv, since the counts of identical work differ by a few tenths of a percent between venvs
(about 1,500 instructions per chunk): differences that small are not the agent's.

Instructions are counted by ``valgrind --tool=callgrind --instr-atstart=no`` in every thread,
only between two client requests around the measured calls and the export of their spans (a
tiny C library this script compiles into ``.bench/``; needs gcc and valgrind's headers), after
warm-up calls (as many as are measured: CPython specialises code as it runs it, and the first
calls of a fresh interpreter cost both bare and instrumented code more). The garbage collector
runs, and the hash seed and address-space layout vary from run to run, as in an application:
where collections fall and how dictionaries probe then differ between runs, so every callgrind
measurement is made ``--runs`` times and a cell gives the median and the spread.
``--gc-paused`` adds a diagnostic column beside ours: what ours adds when the collector is
paused in the region, bare and instrumented alike (the difference from ours is what the
collector's work adds, at the thresholds where it fell in those runs). Those runs go ``--jobs`` at
a time (instruction counts do not depend on load); the timed rows run afterwards, one thing at
a time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import itertools
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCH = ROOT / ".bench"
WORKER = HERE / "bench_workloads.py"
#: The agent's sources as they were when the run started: other work may change src/ meanwhile.
SNAPSHOT = BENCH / "snapshot"
SERVER = HERE / "bench_sse_server.py"
sys.path.insert(0, str(ROOT / "tests"))
from receivers import OTLPHTTPReceiver, attributes  # noqa: E402  (the tests' real OTLP/HTTP receiver)

OURS = "nexent-autoinstrument"
#: agent -> pip packages of its side venv (ours runs in the interpreter running this script)
AGENTS: dict[str, list[str]] = {
    OURS: [],
    "openllmetry": ["opentelemetry-instrumentation-openai"],
    "otel-genai-openai": ["opentelemetry-instrumentation-genai-openai"],
}
#: The diagnostic column of ``--gc-paused``: ours, the collector paused in the region (bare and instrumented).
PAUSED = "ours-gc-paused"
COLUMNS = {"bare": "bare", OURS: "ours", PAUSED: "ours, collector paused", "openllmetry": "OpenLLMetry",
           "otel-genai-openai": "genai-openai"}
ROWS = ("sync", "async", "whole", "finish", "create", "raw", "startup", "concurrency", "memory")
#: How a stream's bytes arrive (bench_workloads.ARRIVALS): each a row of sync, async and raw.
ARRIVALS = ("paced", "burst", "event", "events", "tiny", "gzip")
RAW_KINDS = {"raw": "raw httpx iter_lines", "raw_async": "raw httpx aiter_lines",
             "raw_aiohttp": "raw aiohttp lines (loopback TCP)", "bedrock": "boto3 converse_stream events"}
#: Arrivals a kind has no row for: Bedrock's event streams are not compressed.
NO_ROW = {("bedrock", "gzip")}

WHOLE_CALLS = {50: 10, 200: 3, 1000: 1}  # chunks per call -> calls in the measured region
CREATE_CALLS = 20
FINISH_CHUNKS, FINISH_CALLS = (50, 1000), 5
MEMORY_CHUNKS = 100_000
STREAMS, STREAM_CHUNKS, TTFT, ITL = 200, 200, 0.05, 0.1
CLEAN_PREFIXES = ("OTEL_", "ENABLE_TELEMETRY", "TRACELOOP_", "LLM_", "PROMETHEUS_", "SERVICE_", "JAEGER_",
                  "TELEMETRY_", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED")

MARKERS_C = """#include <valgrind/callgrind.h>
void bench_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void bench_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); CALLGRIND_STOP_INSTRUMENTATION; }
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- venvs, environment, markers ------------------------------------------------------------------------

def python_of(agent: str) -> str:
    return sys.executable if agent == OURS else str(BENCH / agent / "bin" / "python")


def ensure_venv(agent: str, pins: dict[str, str]) -> None:
    """A peer's side venv, made on first use, with the openai, httpx2, pydantic and OpenTelemetry
    SDK ours runs with, the OTLP/HTTP exporter and opentelemetry-distro (for the start-up row)."""
    python = python_of(agent)
    if agent == OURS or (os.path.exists(python) and subprocess.run(
            [python, "-c", "import opentelemetry.exporter.otlp.proto.http"], capture_output=True).returncode == 0):
        return
    log(f"making the side venv of {agent} in .bench/ ...")
    subprocess.run([sys.executable, "-m", "venv", str(BENCH / agent)], check=True)
    packages = [f"{name}=={pins[name]}" for name in ("openai", "opentelemetry-sdk", "httpx2", "pydantic")
                if name in pins]
    exporter = "opentelemetry-exporter-otlp-proto-http" + (f"=={pins['opentelemetry-sdk']}"
                                                           if "opentelemetry-sdk" in pins else "")
    subprocess.run([python, "-m", "pip", "install", "-q", *packages, *AGENTS[agent], "opentelemetry-distro", exporter],
                   check=True)


def ensure_markers() -> str:
    """The callgrind client requests as a shared library (compiled once into .bench/)."""
    library = BENCH / "callgrind_markers.so"
    if not library.exists():
        BENCH.mkdir(exist_ok=True)
        source = BENCH / "callgrind_markers.c"
        source.write_text(MARKERS_C)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return str(library)


def take_snapshot() -> str:
    """Copy the agent's sources to .bench/snapshot, which our venv's processes import instead of
    src/ (PYTHONPATH comes before the editable install), so that every measurement of a run is of
    the same code. Returns which code that is: the commit, and whether src/ had changes."""
    shutil.rmtree(SNAPSHOT, ignore_errors=True)
    shutil.copytree(ROOT / "src" / "nexent_autoinstrument", SNAPSHOT / "nexent_autoinstrument",
                    ignore=shutil.ignore_patterns("__pycache__"))

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    changed = git("status", "--porcelain", "--", "src")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in src/" if changed else "")


def clean_env(agent: str, **extra: str) -> dict[str, str]:
    """The environment of a measured process in ``agent``'s venv: nothing that configures an
    agent, a fixed hash seed, bytecode cached under .bench/ (never next to the sources), and in
    our venv the snapshot of the agent first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEAN_PREFIXES)}
    env.update(PYTHONPYCACHEPREFIX=str(BENCH / "pycache"), TRACELOOP_TRACE_CONTENT="false")
    if agent == OURS:
        env["PYTHONPATH"] = str(SNAPSHOT)
        env.update(AGENT_SETTINGS)
    env.update(extra)
    return env


#: Settings given to our agent in every measured process (``--agent-setting``), for a diagnostic.
AGENT_SETTINGS: dict[str, str] = {}


class Receiver:
    """The OTLP/HTTP receiver every agent exports to (a thread of this process, not of the measured
    one), and the LLM spans each measured process sent, told apart by service name."""

    SHOWN = ("llm.stream.outcome", "llm.stream.chunks", "llm.stream.waiting_chunks", "llm.stream.reader_bound")

    def __init__(self) -> None:
        self.otlp = OTLPHTTPReceiver()
        self.endpoint = self.otlp.endpoint
        self._names = itertools.count(1)

    def env(self, agent: str, instrumented: bool) -> tuple[str, dict[str, str]]:
        """A service name of its own, and the environment that makes the agent export to us."""
        service = f"bench-{next(self._names)}"
        env = {"BENCH_OTLP_ENDPOINT": self.endpoint, "OTEL_SERVICE_NAME": service}
        if agent == OURS and instrumented:  # loaded at start-up, as users load it; no slow-call warnings
            env.update(ENABLE_TELEMETRY="true", OTEL_EXPORTER_OTLP_ENDPOINT=self.endpoint,
                       LLM_SLOW_REQUEST_THRESHOLD_SECONDS="1e9", LLM_SLOW_TOKEN_RATE_THRESHOLD="0")
        return service, env

    def llm_spans(self, service: str) -> dict[str, Any]:
        """How many LLM spans ``service`` exported, and what the last one says of its call."""
        found = [span for resource, span in self.otlp.spans() if resource.get("service.name") == service
                 and span.kind == 3 and any(kv.key.startswith("gen_ai.") for kv in span.attributes)]
        if not found:
            return {"spans": 0}
        last = attributes(found[-1].attributes)
        return {"spans": len(found), "last_span": {k: last[k] for k in self.SHOWN if k in last},
                "span_name": found[-1].name, "span_attributes": last}


RECEIVER: Receiver | None = None


# -- jobs: one measurement each, in a fresh interpreter -------------------------------------------------

@dataclass(frozen=True)
class Job:
    kind: str  # a kind of bench_workloads.py
    agent: str  # whose venv it runs in (bare runs too)
    instrumented: bool
    chunks: int = 0
    calls: int = 1
    library: str = ""
    arrival: str = "paced"
    run: int = 0  # which of the repeated runs
    callgrind: bool = True
    gc_paused: bool = False  # the collector paused in the measured region (a diagnostic)

    def spec(self, **extra: Any) -> str:
        fields = {k: v for k, v in asdict(self).items() if k not in ("callgrind", "run", "gc_paused")}
        return json.dumps({**fields, **extra})

    def cost(self) -> float:
        """About how long it runs, in chunks read under callgrind."""
        if not self.callgrind:
            return self.chunks / 40
        return self.calls * (self.chunks or 7) + 700

    def describe(self) -> str:
        what = f"{self.kind}{' ' + self.library if self.library else ''} {self.agent}"
        what += " instrumented" if self.instrumented else " bare"
        if self.kind == "concurrency":
            return what
        what += f", {self.calls} x {self.chunks:,} chunks {self.arrival}" if self.chunks else f", {self.calls} calls"
        return what + (", collector paused" if self.gc_paused else "") + f" (run {self.run + 1})"


def run_worker(python: str, spec: str, env: dict[str, str], prefix: list[str] | None = None) -> dict[str, Any]:
    run = subprocess.run([*(prefix or []), python, str(WORKER), spec], env=env, capture_output=True, text=True)
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        errors = [line for line in run.stderr.strip().splitlines() if not line.startswith("==")]  # (valgrind's)
        return {"error": f"exit {run.returncode}: {(errors or ['no output'])[-1]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_measured(job: Job, prefix: list[str] | None = None, fields: dict[str, Any] | None = None,
                 extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``job`` (with more ``fields`` in its spec) exporting to the receiver, and add the LLM
    spans it exported to its result."""
    assert RECEIVER is not None
    service, env = RECEIVER.env(job.agent, job.instrumented)
    result = run_worker(python_of(job.agent), job.spec(**(fields or {})), clean_env(job.agent, **env, **(extra or {})),
                        prefix)
    if job.instrumented:
        result.update(RECEIVER.llm_spans(service))
    return result


def run_job(job: Job, markers: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one job; a callgrind job's result gets the instructions counted in its region (every thread)."""
    if not job.callgrind:
        return run_measured(job, fields=fields)
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "callgrind.out")
        callgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        result = run_measured(job, callgrind, fields, extra={"BENCH_CALLGRIND_MARKERS": markers,
                                                      **({"BENCH_GC_PAUSED": "1"} if job.gc_paused else {})})
        for name in os.listdir(scratch):
            text = Path(scratch, name).read_text(errors="replace")
            if "Client Request: region" in text:
                result["instructions"] = int(re.search(r"^summary: (\d+)", text, re.M).group(1))  # type: ignore[union-attr]
        if "instructions" not in result:
            result.setdefault("error", "no callgrind dump of the measured region")
    return result


def rerun_reason(job: Job, result: dict[str, Any]) -> str | None:
    """Why a run is made again: it failed (a run that worked always counts)."""
    return str(result["error"]) if "error" in result else None


def run_jobs(jobs: list[Job], markers: str, parallel: int) -> dict[Job, dict[str, Any]]:
    """All jobs, ``parallel`` at a time, longest first; progress on stderr."""
    results: dict[Job, dict[str, Any]] = {}
    done = 0
    lock = threading.Lock()

    def one(job: Job) -> None:
        nonlocal done
        started = time.perf_counter()
        for attempt in range(1, 4):
            result = run_job(job, markers)
            why = rerun_reason(job, result)
            if why is None or attempt == 3:
                break
            log(f"again: {job.describe()}: {why}")
            time.sleep(10)  # a failure may be src/ changing under us (the snapshot is only of our package)
        with lock:
            results[job] = result
            done += 1
            log(f"[{done:>3}/{len(jobs)}] {job.describe()}: {time.perf_counter() - started:.0f} s"
                + (f"  ERROR {result['error']}" if "error" in result else ""))

    ordered = sorted(jobs, key=lambda j: -j.cost())
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, ordered))
    return results


def memory_job(agent: str, instrumented: bool) -> Job:
    """The memory row's measurement (one event per read, as a fast server sends them)."""
    return Job("memory", agent, instrumented, chunks=MEMORY_CHUNKS, arrival="event", callgrind=False)


def raw_library(kind: str) -> str:
    return {"raw_aiohttp": "aiohttp", "bedrock": "botocore"}.get(kind, "httpx")


def variants(kind: str, agent: str, **fields: Any) -> list[Job]:
    return [Job(kind, agent, instrumented, **fields) for instrumented in (False, True)]


#: The kinds of job whose rows get the ``--gc-paused`` column (ours, bare and instrumented).
PAUSABLE = {"sync", "async", "create", *RAW_KINDS}


def plan(rows: Iterable[str], agents: list[str], slope: tuple[int, int], arrivals: list[str], runs: int,
         gc_column: bool = False) -> list[Job]:
    """The pooled jobs (callgrind and memory) the rows need, each callgrind job ``runs`` times;
    with ``gc_column``, ours again with the collector paused."""
    jobs: set[Job] = set()
    rows = set(rows)
    for run in range(runs):
        for agent in agents:
            derive_finish = "finish" in rows and agent != OURS
            for kind in ("sync", "async"):
                for arrival in arrivals if kind in rows else ["paced"] if kind == "sync" and derive_finish else []:
                    for chunks in slope:
                        jobs.update(variants(kind, agent, chunks=chunks, arrival=arrival, run=run))
            for chunks, calls in WHOLE_CALLS.items():
                if "whole" in rows or (derive_finish and chunks in FINISH_CHUNKS):
                    jobs.update(variants("sync", agent, chunks=chunks, calls=calls, run=run))
            if "finish" in rows and agent == OURS:
                jobs.update(Job("finish", OURS, True, chunks=chunks, calls=FINISH_CALLS, run=run)
                            for chunks in FINISH_CHUNKS)
            if "create" in rows:
                jobs.update(variants("create", agent, calls=CREATE_CALLS, run=run))
        if "raw" in rows:
            for kind in RAW_KINDS:
                for arrival in (a for a in arrivals if (kind, a) not in NO_ROW):
                    for chunks in slope:
                        jobs.update(variants(kind, OURS, chunks=chunks, library=raw_library(kind), arrival=arrival,
                                             run=run))
    if "memory" in rows:  # (bare once, in our venv: every venv has the same openai, httpx2 and pydantic)
        for agent in agents:
            for instrumented in (False, True) if agent == OURS else (True,):
                jobs.add(memory_job(agent, instrumented))
    if gc_column:
        jobs.update([replace(job, gc_paused=True) for job in jobs if job.agent == OURS and job.kind in PAUSABLE
                     and job.callgrind])
    return list(jobs)


def spans_alone(results: dict[Job, dict[str, Any]], markers: str,
                args: argparse.Namespace) -> dict[Job, dict[str, Any]]:
    """The OpenTelemetry SDK's part of our ``create``: bare calls, each in a span like ours (its
    name and attributes as the receiver got them from our run), current while it runs, its context
    injected, and exported (``create_otel``), one per run of ours."""
    def one(run: int) -> tuple[Job, dict[str, Any]]:
        job = Job("create_otel", OURS, False, calls=CREATE_CALLS, run=run)
        ours = results.get(Job("create", OURS, True, calls=CREATE_CALLS, run=run), {})
        if "span_attributes" not in ours:
            return job, {"error": "no span of ours to copy"}
        return job, run_job(job, markers, {"span_name": ours["span_name"], "span_attributes": ours["span_attributes"]})

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return dict(pool.map(one, range(args.runs)))


# -- the timed rows, one thing at a time -------------------------------------------------------------------

def auto_instrumentation_dir(python: str) -> str:
    code = "import os, opentelemetry.instrumentation.auto_instrumentation as m; print(os.path.dirname(m.__file__))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def startup(agent: str, runs: int) -> dict[str, Any]:
    """Median wall time of ``python -c CODE`` without and with the agent, interleaved."""
    python = python_of(agent)
    exporters = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
    if agent == OURS:
        on = clean_env(agent, ENABLE_TELEMETRY="true", **exporters)
    else:
        on = clean_env(agent, PYTHONPATH=auto_instrumentation_dir(python), OTEL_LOGS_EXPORTER="none", **exporters)
    off = clean_env(agent)
    figures: dict[str, Any] = {}
    for name, code in (("pass", "pass"), ("import openai", "import openai")):
        samples: dict[str, list[float]] = {"off": [], "on": []}
        for index in range(runs + 1):  # the first pair only fills the bytecode cache
            for variant, env in (("off", off), ("on", on)):
                started = time.perf_counter()
                subprocess.run([python, "-c", code], env=env, check=True)
                if index:
                    samples[variant].append(time.perf_counter() - started)
        figures[name] = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    return figures


@contextlib.contextmanager
def sse_server() -> Iterator[str]:
    server = subprocess.Popen([sys.executable, str(SERVER), "--chunks", str(STREAM_CHUNKS), "--ttft", str(TTFT),
                               "--itl", str(ITL)], stdout=subprocess.PIPE, text=True, env=clean_env("bare"))
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait()


def concurrency(agents: list[str], rounds: int) -> list[dict[str, dict[str, Any]]]:
    """Rounds of one bare client (our venv; every venv has the same openai, httpx2 and pydantic)
    and one client per agent, in an order that reverses every round, so that drift cancels out."""
    measured = []
    clients = [("bare", OURS, False), *((agent, agent, True) for agent in agents)]
    with sse_server() as url:
        for number in range(1, rounds + 1):
            this_round = {}
            for name, venv, instrumented in clients if number % 2 else reversed(clients):
                job = Job("concurrency", venv, instrumented, callgrind=False)
                started = time.perf_counter()
                this_round[name] = run_measured(job, fields={"url": url, "streams": STREAMS})
                log(f"concurrency round {number}/{rounds}, {job.describe()}: {time.perf_counter() - started:.0f} s")
            measured.append(this_round)
    return measured


# -- figures ------------------------------------------------------------------------------------------------

#: a table row: its label, and per column the text of a cell and its value for --json
Cells = dict[str, tuple[str, Any]]
Row = tuple[str, Cells]


class Missing(Exception):
    """A figure that cannot be given; the message says why."""


class Figures:
    """The figures that the job results give, or ``Missing`` and why."""

    def __init__(self, results: dict[Job, dict[str, Any]], runs: int = 1) -> None:
        self.results = results
        self.runs = runs

    def result(self, job: Job) -> dict[str, Any]:
        result = self.results.get(job)
        if result is None:
            raise Missing("not measured")
        if "error" in result:
            raise Missing(result["error"])
        if job.instrumented and result.get("spans", 0) < result.get("calls", 0):
            raise Missing(f"{result.get('spans', 0)} spans for {result['calls']} calls")
        return result

    def count(self, job: Job) -> int:
        return int(self.result(job)["instructions"])

    def slope(self, kind: str, agent: str, instrumented: bool, run: int, sizes: tuple[int, int],
              arrival: str = "paced", library: str = "", paused: bool = False) -> float:
        small, large = (self.count(Job(kind, agent, instrumented, chunks=n, library=library, arrival=arrival, run=run,
                                       gc_paused=paused))
                        for n in sizes)
        return (large - small) / (sizes[1] - sizes[0])

    def per_call(self, job: Job) -> float:
        return self.count(job) / job.calls


def cell(compute: Callable[..., tuple[str, Any]], *args: Any) -> tuple[str, Any]:
    """(text, value) of ``compute(*args)``, or why there is none."""
    try:
        return compute(*args)
    except Missing as why:
        return f"n/m ({why})", None


def added(pairs: list[tuple[float, float]], percent: bool = False) -> tuple[str, Any]:
    """What the agent adds to bare, from (bare, instrumented) of each run: the median, as a ratio
    or a percentage, and the spread of the runs."""
    extras = sorted(inst - bare for bare, inst in pairs)
    ratios = sorted(inst / bare for bare, inst in pairs)
    extra, ratio = statistics.median(extras), statistics.median(ratios)
    text = f"+{extra:,.0f} " + (f"(+{ratio - 1:.1%})" if percent else f"(x{ratio:.3f})")
    if len(pairs) > 1:
        text += f" [{extras[0]:+,.0f}..{extras[-1]:+,.0f}]"
    return text, {"bare": [b for b, _ in pairs], "instrumented": [i for _, i in pairs], "added": extra,
                  "ratio": ratio, "worst_ratio": ratios[-1]}


class Measure(Protocol):
    """A measure of one agent's venv, bare or instrumented, in one of the runs, the collector
    running or ``paused`` in the region."""

    def __call__(self, agent: str, instrumented: bool, run: int, paused: bool = False) -> float: ...


def comparison(label: str, measure: Measure, agents: list[str], runs: int, percent: bool = False,
               only_ours: bool = False, gc_column: bool = False) -> Row:
    """A row of instructions: bare (in our venv), then what each agent adds to its own bare run:
    the median of the runs and, in brackets, the least and the most it added in one. With
    ``gc_column``, also what ours adds when the collector is paused in both."""
    def bare() -> tuple[str, Any]:
        counts = [measure(OURS, False, run) for run in range(runs)]
        return f"{statistics.median(counts):,.0f}", counts

    def adds(agent: str, paused: bool = False) -> tuple[str, Any]:
        return added([(measure(agent, False, r, paused), measure(agent, True, r, paused)) for r in range(runs)],
                     percent)

    cells: Cells = {"bare": cell(bare)}
    if gc_column:
        cells[PAUSED] = cell(adds, OURS, True)
    for agent in agents:
        cells[agent] = ("n/a", None) if only_ours and agent != OURS else cell(adds, agent)
    return label, cells


def instructions_rows(figures: Figures, rows: set[str], agents: list[str], slope: tuple[int, int],
                      arrivals: list[str], gc_column: bool = False) -> list[Row]:
    """The callgrind rows (with ``gc_column``, each comparison also with the collector paused)."""
    runs = figures.runs

    def compare(label: str, measure: Measure, percent: bool = False, only_ours: bool = False) -> Row:
        return comparison(label, measure, agents, runs, percent, only_ours, gc_column)

    def steady(kind: str, arrival: str = "paced", library: str = "") -> Measure:
        return lambda agent, instrumented, run, paused=False: figures.slope(kind, agent, instrumented, run, slope,
                                                                            arrival, library, paused)

    def whole(chunks: int) -> Measure:
        return lambda agent, instrumented, run, paused=False: figures.per_call(
            Job("sync", agent, instrumented, chunks=chunks, calls=WHOLE_CALLS[chunks], run=run, gc_paused=paused))

    def creates(agent: str, instrumented: bool, run: int, paused: bool = False) -> float:
        return figures.per_call(Job("create", agent, instrumented, calls=CREATE_CALLS, run=run, gc_paused=paused))

    def finish(agent: str) -> tuple[str, Any]:
        """Ours: the end of calls of 1,000 content chunks less that of calls of 50, per chunk
        between. A peer's (whose end cannot be run alone): what it adds per call at 1,000 chunks
        less at 50, per chunk between, less what it adds per chunk in the steady state. The
        median of the runs."""
        few, many = FINISH_CHUNKS
        if agent == OURS:
            values = []
            for run in range(runs):
                ends = [figures.per_call(Job("finish", OURS, True, chunks=n, calls=FINISH_CALLS, run=run))
                        for n in (few, many)]
                values.append((ends[1] - ends[0]) / (many - few))
            return f"{statistics.median(values):,.0f}", {"per_chunk": values}

        def extra(measure: Measure, run: int) -> float:
            return measure(agent, True, run) - measure(agent, False, run)
        values = [(extra(whole(many), run) - extra(whole(few), run)) / (many - few) - extra(steady("sync"), run)
                  for run in range(runs)]
        return f"{statistics.median(values):,.0f} (derived)", {"per_chunk": values}

    table: list[Row] = []
    for kind, what in (("sync", "sync SDK stream"), ("async", "async SDK stream")):
        if kind in rows:
            table += [compare(f"{what}, {arrival}, instructions per chunk", steady(kind, arrival))
                      for arrival in arrivals]
    if "whole" in rows:
        table += [compare(f"whole streamed call (sync, paced), {chunks:,} chunks, instructions per call",
                          whole(chunks), percent=True) for chunks in WHOLE_CALLS]
    if "finish" in rows:
        cells: Cells = {"bare": ("n/a", None), **{a: cell(finish, a) for a in agents}}
        table.append(("finish (end-of-call work), instructions per content chunk up to the 1,000 cap", cells))
    if "create" in rows:
        table.append(compare("non-streamed create, instructions per call", creates))

        def part(ours_own: bool) -> Callable[[], tuple[str, Any]]:
            def compute() -> tuple[str, Any]:
                values = []
                for run in range(runs):
                    otel = figures.per_call(Job("create_otel", OURS, False, calls=CREATE_CALLS, run=run))
                    low, high = (otel, creates(OURS, True, run)) if ours_own else (creates(OURS, False, run), otel)
                    values.append(high - low)
                return f"+{statistics.median(values):,.0f}", values
            return compute
        table.append(("non-streamed create, of which the OpenTelemetry SDK's span, context, propagation and export",
                      {"bare": ("n/a", None), OURS: cell(part(False))}))
        table.append(("non-streamed create, of which the agent's own work", {"bare": ("n/a", None),
                                                                            OURS: cell(part(True))}))
    if "raw" in rows:
        table += [compare(f"{what}, {arrival}, instructions per chunk", steady(kind, arrival, raw_library(kind)),
                          only_ours=True)
                  for kind, what in RAW_KINDS.items() for arrival in arrivals if (kind, arrival) not in NO_ROW]
    return table


def startup_rows(measured: dict[str, dict[str, Any]], agents: list[str]) -> list[Row]:
    table = []
    for name in ("pass", "import openai"):
        ours = measured[OURS][name]
        cells: Cells = {"bare": (f"{ours['off']:.1f} ms", ours["off"])}
        for agent in agents:
            figure = measured[agent][name]
            added = figure["on"] - figure["off"]
            cells[agent] = (f"+{added:.1f} ms", {"added_ms": added, **figure})
        table.append((f"start-up, python -c '{name}', telemetry on: wall ms added (median)", cells))
    return table


def concurrency_row(rounds: list[dict[str, dict[str, Any]]], agents: list[str], notes: list[str]) -> Row:
    def per_chunk(result: dict[str, Any]) -> float:
        if "error" in result:
            raise Missing(result["error"])
        if result["job"]["instrumented"] and result.get("spans", 0) < result["calls"]:
            raise Missing(f"{result.get('spans', 0)} spans for {result['calls']} streams")
        return float(result["cpu_s"] / result["chunks"] * 1e6)

    for this_round in rounds:
        for name, result in this_round.items():
            if result.get("cpu_s", 0) > 0.9 * result.get("wall_s", 1):
                notes.append(f"concurrency: the {name} client was CPU-bound "
                             f"({result['cpu_s']:.1f} s CPU in {result['wall_s']:.1f} s): chunks were read together")

    def ratio(agent: str) -> tuple[str, Any]:
        pairs = [(per_chunk(r["bare"]), per_chunk(r[agent])) for r in rounds]
        middle = statistics.median(inst / bare for bare, inst in pairs)
        return f"x{middle:.3f}", {"ratio": middle, "us_per_chunk_bare_and_instrumented": pairs}

    bare = cell(lambda: (f"{statistics.median(per_chunk(r['bare']) for r in rounds):.0f} us CPU",
                         [per_chunk(r["bare"]) for r in rounds]))
    cells: Cells = {"bare": bare, **{agent: cell(ratio, agent) for agent in agents}}
    return f"{STREAMS} concurrent async streams x {STREAM_CHUNKS} chunks, loopback: client CPU per chunk", cells


def memory_row(figures: Figures, agents: list[str]) -> Row:
    def peak(agent: str, instrumented: bool) -> dict[str, Any]:
        return figures.result(memory_job(agent, instrumented))

    cells = {"bare": cell(lambda: (f"peak {peak(OURS, False)['peak_bytes'] / 2**20:.2f} MB",
                                   peak(OURS, False)["peak_bytes"]))}
    for agent in agents:
        def growth(agent: str = agent) -> tuple[str, Any]:
            bare, inst = peak(OURS, False), peak(agent, True)
            extra = (inst["peak_bytes"] - bare["peak_bytes"]) / 2**20
            kept = (inst["retained_bytes"] - bare["retained_bytes"]) / 2**20
            return f"{extra:+.2f} MB", {"peak_mb": extra, "retained_mb": kept}
        cells[agent] = cell(growth)
    return f"memory growth, one {MEMORY_CHUNKS:,}-chunk stream (tracemalloc peak)", cells


def odd_things(results: dict[Job, dict[str, Any]], concurrency_rounds: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Warnings, internal errors, missing spans or unexpected outcomes seen in any run."""
    seen: list[str] = []
    everything = [(job.describe(), r, rerun_reason(job, r)) for job, r in results.items()]
    for number, this_round in enumerate(concurrency_rounds, 1):
        everything += [(f"concurrency round {number}, {name}", r, r.get("error")) for name, r in this_round.items()]
    for what, result, still_wrong in sorted(everything, key=lambda item: item[0]):
        problems = [still_wrong] if still_wrong else []
        if result.get("warnings"):
            problems.append(f"{result['warnings']} warnings logged, the first: {result['first_warning']}")
        if result.get("internal_errors"):
            problems.append(f"internal errors: {result['internal_errors']}")
        if result.get("job", {}).get("instrumented") and result.get("spans") != result.get("calls"):
            problems.append(f"{result.get('spans')} LLM spans for {result.get('calls')} calls")
        last = result.get("last_span", {})
        if last.get("llm.stream.outcome") not in (None, "completed"):
            problems.append(f"outcome {last['llm.stream.outcome']}")
        job = result.get("job", {})
        timed = job.get("kind") == "concurrency" or job.get("arrival") == "paced"
        if last.get("llm.stream.waiting_chunks") and timed:
            problems.append(f"{last['llm.stream.waiting_chunks']} of the last stream's chunks taken as waiting "
                            f"(reader_bound={last.get('llm.stream.reader_bound')}): a busy machine")
        if problems:
            seen.append(f"{what}: {'; '.join(problems)}")
    return seen


def markdown(table: list[Row], agents: list[str], gc_column: bool = False) -> str:
    columns = ["bare", *(c for a in agents for c in ((a, PAUSED) if gc_column and a == OURS else (a,)))]
    lines = ["| path | " + " | ".join(COLUMNS[c] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, cells in table:
        lines.append(f"| {label} | " + " | ".join(cells.get(c, ("", None))[0] for c in columns) + " |")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("--all", action="store_true", help="every row (the default when --rows is not given)")
    parser.add_argument("--rows", default="", help=f"comma-separated, of: {','.join(ROWS)}")
    parser.add_argument("--peers", action="store_true", help="also OpenLLMetry and genai-openai, in side venvs")
    parser.add_argument("--json", action="store_true", help="JSON results on stdout (the table goes to stderr)")
    parser.add_argument("--slope", default="1250,2500", help="the two stream sizes of the per-chunk slopes")
    parser.add_argument("--chunks", type=int, help="the larger slope size (shorthand for --slope 1250,N)")
    parser.add_argument("--arrivals", default=",".join(ARRIVALS),
                        help="how the streams' bytes arrive, each a row of sync, async and raw (of: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each callgrind measurement (spread shown)")
    parser.add_argument("--gc-paused", action="store_true",
                        help="a diagnostic column: what ours adds with the garbage collector paused in the "
                             "measured region (bare and instrumented alike)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the concurrency row")
    parser.add_argument("--startup-runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="callgrind runs at a time")
    parser.add_argument("--agent-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a diagnostic: set this variable for our agent's processes (e.g. LLM_COST=false)")
    parser.add_argument("--callgrind", action="store_true", help=argparse.SUPPRESS)  # old name of --rows sync
    args = parser.parse_args()
    AGENT_SETTINGS.update(setting.split("=", 1) for setting in args.agent_setting)
    args.rows = [r for r in args.rows.split(",") if r] or (["sync"] if args.callgrind and not args.all else list(ROWS))
    unknown = set(args.rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    args.arrivals = [a for a in args.arrivals.split(",") if a]
    if set(args.arrivals) - set(ARRIVALS):
        parser.error(f"unknown arrivals: {', '.join(sorted(set(args.arrivals) - set(ARRIVALS)))}")
    small, large = (int(n) for n in args.slope.split(","))
    args.slope = (small, args.chunks or large)
    args.agents = [a for a in AGENTS if a == OURS or args.peers]
    return args


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every row asked for: the table, what was noticed, the raw results and how long each phase took."""
    rows, agents = set(args.rows), args.agents
    jobs = plan(rows, agents, args.slope, args.arrivals, args.runs, args.gc_paused)
    phases: dict[str, float] = {}
    results: dict[Job, dict[str, Any]] = {}
    started = time.perf_counter()
    if jobs:
        results = run_jobs(jobs, ensure_markers() if any(j.callgrind for j in jobs) else "", args.jobs)
        phases["callgrind and memory"] = time.perf_counter() - started
    if "create" in rows:
        results.update(spans_alone(results, ensure_markers(), args))
    table = instructions_rows(Figures(results, args.runs), rows, agents, args.slope, args.arrivals, args.gc_paused)
    notes: list[str] = []
    measured_startup: dict[str, Any] = {}
    if "startup" in rows:
        started = time.perf_counter()
        measured_startup = {agent: startup(agent, args.startup_runs) for agent in agents}
        table += startup_rows(measured_startup, agents)
        phases["startup"] = time.perf_counter() - started
    concurrency_rounds: list[dict[str, dict[str, Any]]] = []
    if "concurrency" in rows:
        started = time.perf_counter()
        concurrency_rounds = concurrency(agents, args.rounds)
        table.append(concurrency_row(concurrency_rounds, agents, notes))
        phases["concurrency"] = time.perf_counter() - started
    if "memory" in rows:
        table.append(memory_row(Figures(results), agents))
    notes += odd_things(results, concurrency_rounds)
    return {"table": table, "notes": notes, "phases_s": phases, "startup_ms": measured_startup,
            "concurrency": concurrency_rounds,
            "jobs": [{**asdict(job), **{k: v for k, v in r.items() if k != "job"}} for job, r in results.items()]}


def main() -> None:
    args = parse_args()
    begun = time.perf_counter()
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    agent_code = take_snapshot()
    global RECEIVER
    RECEIVER = Receiver()
    ours_versions = run_worker(sys.executable, Job("versions", OURS, False).spec(), clean_env(OURS))["versions"]
    for agent in args.agents:
        ensure_venv(agent, ours_versions)
    versions = {agent: run_worker(python_of(agent), Job("versions", agent, False).spec(), clean_env(agent))
                for agent in args.agents}

    measured = measure(args)
    elapsed = time.perf_counter() - begun
    date = datetime.datetime.now(datetime.timezone.utc)
    header = [
        f"date: {date:%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores, python {versions[OURS]['python']}; "
        f"took {elapsed / 60:.1f} min",
        "versions: " + "; ".join(f"{COLUMNS[a]}: " + ", ".join(f"{k} {v}" for k, v in versions[a]["versions"].items()
                                                            if k not in ("httpx", "httpx2", "pydantic"))
                                 for a in args.agents),
        f"agent code: {agent_code} (a snapshot taken at the start, measured throughout)",
        f"command: {command}",
        "configuration: as users run it: spans exported over OTLP/HTTP to a local receiver, counted in every "
        "thread; garbage collector on" + ("; the column 'ours, collector paused' pauses it in the measured region, "
                                          "bare and instrumented alike (a diagnostic)" if args.gc_paused else "")
        + "; hash seed and address-space randomisation as the system has them",
        f"instructions: callgrind, slopes between streams of {args.slope[0]:,} and {args.slope[1]:,} chunks; "
        f"the median of {args.runs} run(s) and [the least..the most added in one]; "
        "x = ratio to bare; n/a: the agent does not instrument that path; n/m: not measured (why)",
    ]
    text = "\n".join([*header, "", markdown(measured["table"], args.agents, args.gc_paused)])
    if measured["notes"]:
        text += "\n\nnoticed while measuring:\n" + "\n".join(f"- {n}" for n in measured["notes"])
    print(text, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        rows = {label: {COLUMNS[c]: value for c, (_, value) in cells.items()} for label, cells in measured.pop("table")}
        print(json.dumps({"date": date.isoformat(), "command": command, "elapsed_s": elapsed, "agent_code": agent_code,
                          "versions": versions, "slope_sizes": args.slope, "rows": rows, **measured}, indent=1))


if __name__ == "__main__":
    main()

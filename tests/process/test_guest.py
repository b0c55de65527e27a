"""The agent as a guest in the process (project issue 21), proven differentially.

Each application of ``apps.py`` runs in a fresh interpreter twice, bare and under the agent
(auto-loaded by ``ENABLE_TELEMETRY=true``), each against a mock LLM of its own, in Python's
development mode with ResourceWarnings as errors (inherited by every process they start).
Everything the process shows must be the same: exit code, stdout, stderr, the requests the mock
LLM received (but for the documented trace-context headers); its wall time within a generous
factor; and the agent must have exported exactly one span per call, each with its own span id,
with the outcomes the case declares.

``scripts/stress.sh`` runs the cases where timing bugs hide many times, under stress, so that
they show up on demand: ``GUEST_STRESS=gc`` (the collector runs every 100 allocations and threads
switch every 10 µs, in every process of the case) or ``GUEST_STRESS=load`` (two busy processes
keep both cores occupied), ``GUEST_REPEAT=N``. Under stress only the agent's run must hold up: the
bare one may hang where the libraries themselves do (httpcore's pool under collector pressure).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import clean_env
from nexent_autoinstrument.tools.mock import MockConfig, start_in_thread
from receivers import OTLPHTTPReceiver, attributes

APPS = Path(__file__).resolve().parent / "apps.py"
#: Headers the agent adds to every request it traces (README, "What the agent changes").
TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
CASE_SECONDS = 90
STRESS = os.environ.get("GUEST_STRESS", "")
REPEAT = int(os.environ.get("GUEST_REPEAT", "1"))
#: What the stress runs repeat: the cases where the collector, the scheduler and gevent meet.
STRESSED = ("abandoned_at_exit", "gevent_greenlets", "threads", "aiohttp_tasks", "bedrock_gevent", "fork_after_break",
            "pool_fork_with", "held_after_break")
#: (A hang is reported with every thread's stack: the test sends SIGUSR1 to the process group.
#: Not ``dump_traceback_later``: its watchdog's lock stays held in a fork child, which then
#: hangs at exit.)
_STRESS_SITE = """
import faulthandler, gc, signal, sys
gc.set_threshold(100, 5, 5)
sys.setswitchinterval(1e-5)
faulthandler.register(signal.SIGUSR1, all_threads=True)
"""


@dataclass(frozen=True)
class Expect:
    """What the agent must export for a case: LLM spans by outcome."""

    outcomes: dict[str, int]
    #: Seconds a ``closed_early`` call was held open after its last item, at least (a held relay).
    held_at_least: float | None = None
    #: The agent's stderr must equal bare's; with ``no_more``, it may only lack lines of it (a
    #: server's own error lines at shutdown come and go from one run to the next).
    no_more_stderr: bool = False


C, E, X = "completed", "closed_early", "cancelled"
EXPECT: dict[str, Expect] = {
    "threads": Expect({C: 4, E: 4}),
    "asyncio_tasks": Expect({C: 4, E: 4}),
    "uvloop_tasks": Expect({C: 4, E: 4}),
    "aiohttp_tasks": Expect({C: 4, E: 4}),
    "trio_cancel": Expect({C: 2, X: 2}),
    "anyio_cancel": Expect({C: 2, X: 2}),
    "gevent_greenlets": Expect({C: 5, E: 5}),
    "bedrock_gevent": Expect({C: 3, E: 3, X: 1}),
    "gunicorn_gevent": Expect({C: 3, E: 3}, no_more_stderr=True),
    "gunicorn_sync": Expect({C: 3, E: 3}, no_more_stderr=True),
    "gunicorn_uvicorn": Expect({C: 3, E: 3}, no_more_stderr=True),
    "fork_mid_stream": Expect({C: 2}),  # the parent's call, and the child's own
    "fork_after_break": Expect({E: 1, C: 1}),  # the parent's break; the child's own call
    "fork_mid_aiohttp_stream": Expect({C: 2}),  # the parent's aiohttp call, and the child's own
    "fork_mid_bedrock_stream": Expect({C: 2}),  # the parent's Bedrock call, and the child's own
    **{f"pool_{method}_{style}": Expect({C: 4}) for method in ("fork", "spawn", "forkserver")
       for style in ("with", "close_join")},
    "pool_made_mid_stream": Expect({C: 3}),
    "sigterm_default": Expect({C: 1, "interrupted": 1}),
    "sigterm_own_handler": Expect({C: 1, E: 1}),
    "sigterm_chained_handler": Expect({C: 1, E: 1}),
    # (the traceback Python keeps in sys.last_traceback holds the stream open until exit)
    "sigint_mid_stream": Expect({C: 1, "interrupted": 1}),
    "exit_in_stream": Expect({E: 1}),
    "atexit_calls": Expect({C: 2}),
    "abandoned_at_exit": Expect({E: 200}),
    "held_after_break": Expect({E: 1}, held_at_least=0.9),
}


@dataclass
class Run:
    """One run of a case: what the process showed, and what the agent exported."""

    returncode: int | str
    stdout: str
    stderr: str
    seconds: float
    requests: list[Any]
    spans: list[Any] = field(default_factory=list)


_VARYING = re.compile(r"0x[0-9a-f]{6,}|\bpid \d+|\[\d+\]|127\.0\.0\.1:\d+")
#: asyncio's debug mode reports steps that took over 100 ms: a report on the machine's speed.
_SLOW_STEP = re.compile(r"^Executing <.*> took \d+\.\d+ seconds\n", re.MULTILINE)


def normalised(text: str) -> str:
    """Addresses, pids and ports differ between any two runs, with or without the agent."""
    return _VARYING.sub("<n>", _SLOW_STEP.sub("", text))


def _signals_as_in_a_terminal() -> None:
    """In the app's process, before Python starts: Ctrl-C and Ctrl-\\ as a terminal has them. A
    job started in the background by a shell without job control (``cmd &`` in a script, as CI may
    run the tests) inherits them ignored, and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def run(case: str, agent: bool, tmp: Path) -> Run:
    tmp.mkdir()
    mock = start_in_thread(MockConfig(ttft=0.005, itl=0.005, tokens=6))
    receiver = OTLPHTTPReceiver() if agent else None
    env = clean_env(MOCK_URL=mock.base_url, APP_TMP=str(tmp), PYTHONDEVMODE="1",
                    PYTHONWARNINGS="error::ResourceWarning")
    if STRESS == "gc":
        (tmp / "sitecustomize.py").write_text(_STRESS_SITE)
        env["PYTHONPATH"] = str(tmp)
    if receiver is not None:
        env.update(ENABLE_TELEMETRY="true", SERVICE_NAME="guest", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                   OTEL_BSP_SCHEDULE_DELAY="50")
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, str(APPS), case], env=env, cwd=tmp, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=_signals_as_in_a_terminal)
    try:
        stdout, stderr = process.communicate(timeout=CASE_SECONDS)
        returncode: int | str = process.returncode
    except subprocess.TimeoutExpired:
        if STRESS == "gc":
            os.killpg(process.pid, signal.SIGUSR1)  # every process of the case dumps its threads' stacks
            time.sleep(1)
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        returncode = "hung"
    seconds = time.monotonic() - started
    requests = sorted((path, repr(sorted(body.items()))) for path, _, body in mock.requests)
    headers = {name.lower() for _, sent, _ in mock.requests for name in sent}
    mock.shutdown()
    mock.server_close()
    result = Run(returncode, stdout.replace(str(tmp), "<tmp>"), stderr.replace(str(tmp), "<tmp>"), seconds, requests)
    result.requests.append(("headers", sorted(headers - TRACE_HEADERS)))
    if receiver is not None:
        result.spans = [span for _, span in receiver.spans() if "gen_ai.operation.name" in attributes(span.attributes)]
        receiver.stop()
    return result


@pytest.fixture(scope="session", autouse=True)
def machine_load() -> Iterator[None]:
    """Under ``GUEST_STRESS=load``: both cores kept busy for the whole run, then freed."""
    if STRESS != "load":
        yield
        return
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


CASES = [pytest.param(case, attempt, id=f"{case}-{attempt}" if REPEAT > 1 else case)
         for case in (STRESSED if STRESS or REPEAT > 1 else EXPECT) for attempt in range(REPEAT)]


@pytest.mark.parametrize(("case", "attempt"), CASES)
def test_the_process_is_the_same_with_the_agent(case: str, attempt: int, tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        bare_run, agent_run = pool.map(lambda agent: run(case, agent, tmp_path / ("agent" if agent else "bare")),
                                       (False, True))
    assert agent_run.returncode != "hung", f"hung under the agent:\n{agent_run.stderr[-6000:]}"
    if STRESS:
        assert agent_run.returncode == 0 or agent_run.returncode == bare_run.returncode, agent_run.stderr[-6000:]
        assert_exported(case, agent_run)
        return
    assert bare_run.returncode != "hung", bare_run.stderr[-3000:]
    assert (agent_run.returncode, normalised(agent_run.stdout)) == (bare_run.returncode, normalised(bare_run.stdout)), \
        f"with the agent:\n{agent_run.stderr[-3000:]}\nbare:\n{bare_run.stderr[-3000:]}"
    if EXPECT[case].no_more_stderr:
        assert set(normalised(agent_run.stderr).splitlines()) <= set(normalised(bare_run.stderr).splitlines())
    else:
        assert normalised(agent_run.stderr) == normalised(bare_run.stderr)
    assert agent_run.requests == bare_run.requests
    assert agent_run.seconds < 3 * bare_run.seconds + 3, (agent_run.seconds, bare_run.seconds)

    assert_exported(case, agent_run)


def assert_exported(case: str, agent_run: Run) -> None:
    """Exactly one span per call, with the case's outcomes."""
    spans = agent_run.spans
    outcomes = Counter(attributes(span.attributes)["llm.stream.outcome"] for span in spans)
    assert dict(outcomes) == EXPECT[case].outcomes
    assert len({span.span_id for span in spans}) == len(spans)  # no call exported twice
    held = EXPECT[case].held_at_least
    if held is not None:
        (span,) = spans
        attrs = attributes(span.attributes)
        assert attrs["llm.stream.held_seconds"] >= held
        assert (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9 < held  # dated at its last item

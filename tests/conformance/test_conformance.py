"""Differential conformance of the agent over the openai SDK's public surface (project issue 9).

Every case in ``cases_*.py`` runs in a fresh interpreter bare, and again under the agent (plain
``python`` with ``ENABLE_TELEMETRY=true``, loaded by the ``.pth`` hook), one process per mode
for all the cases; the cases that declare ``injected_usage`` run a third time with
``LLM_INJECT_STREAM_USAGE=true``. For each case the caller must have seen exactly the same
thing, and the agent's LLM spans, received by a real OTLP receiver, must be what the case
declares. The spans of a case are the children of its ``case:<name>`` span (same trace id).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kit
import pytest
import replay
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from conftest import clean_env
from nexent_autoinstrument.tools.mock import MockConfig, start_in_thread
from receivers import OTLPHTTPReceiver, attributes

HERE = Path(__file__).resolve().parent
CASES = kit.load_cases()
SLOW_CALL_WARNING = "nexent-autoinstrument: slow LLM call"  # documented: one warning per slow call
INJECTED = [name for name, case in CASES.items() if case.expect.injected_usage is not None]


@dataclass(repr=False)
class Batch:
    """One mode's run of the cases: what each caller saw, and the LLM spans of each case."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)  # case -> why it has no result (crash, hang)
    stderr: str = ""
    spans: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0


def run_batch(env: dict[str, str], names: list[str], out: Path) -> Batch:
    """Run the runner on ``names``; after a crash or a hang, again on the cases after the culprit."""
    batch = Batch()
    started = time.monotonic()
    remaining = list(names)
    for _ in range(10):
        if not remaining:
            break
        command = [sys.executable, str(HERE / "runner.py"), str(out), *remaining]
        try:
            process = subprocess.run(command, env=env, cwd=out.parent, capture_output=True, text=True, timeout=300)
            stderr, exit_code = process.stderr, str(process.returncode)
        except subprocess.TimeoutExpired as timeout:
            stderr, exit_code = str(timeout.stderr or ""), "timeout"
        batch.stderr += stderr
        culprit = None
        for line in out.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line cut short by a crash
                record = json.loads(line)
                culprit = record.get("started")
                if culprit is None:
                    batch.results[record["name"]] = record
        if culprit and culprit not in batch.results:
            batch.lost[culprit] = f"the runner died in this case (exit {exit_code}): {stderr[-3000:]}"
        remaining = [n for n in remaining if n not in batch.results and n not in batch.lost]
        if remaining and not culprit:
            batch.lost.update(dict.fromkeys(remaining, f"the runner stopped (exit {exit_code}): {stderr[-3000:]}"))
            break
    batch.seconds = time.monotonic() - started
    return batch


class TimedReceiver(OTLPHTTPReceiver):
    """The OTLP receiver, noting when each export of spans arrived."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, ExportTraceServiceRequest]] = []
        super().__init__()

    def _receive(self, path: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        if path != "/v1/traces":
            return super()._receive(path, headers, body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        with self.lock:
            self.traces.append(message)
            self.arrivals.append((time.time(), message))
        return 200, "application/x-protobuf", ExportTraceServiceResponse().SerializeToString()


def llm_spans_by_case(receiver: TimedReceiver) -> dict[str, list[dict[str, Any]]]:
    """The LLM spans (those with gen_ai.operation.name) of each case, found by the case span's trace id."""
    by_trace: dict[bytes, list[dict[str, Any]]] = {}
    cases: dict[str, bytes] = {}
    with receiver.lock:
        arrivals = list(receiver.arrivals)
    for arrived, request in arrivals:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if span.name.startswith("case:"):
                        cases[span.name[5:]] = span.trace_id
                        continue
                    attrs = attributes(span.attributes)
                    if "gen_ai.operation.name" in attrs:
                        by_trace.setdefault(span.trace_id, []).append({
                            "name": span.name, "kind": span.kind, "status": span.status.code, "attributes": attrs,
                            "arrived": arrived})
    return {name: by_trace.get(trace_id, []) for name, trace_id in cases.items()}


@dataclass(repr=False)
class Runs:
    bare: Batch
    agent: Batch
    inject: Batch


def selected_cases(session: pytest.Session) -> list[str]:
    """The cases of the tests this session runs: ``-k`` then runs only what it selects (and the
    stderr tests look at those); all of them when no test of a single case is selected."""
    params = [getattr(getattr(item, "callspec", None), "params", {}) for item in session.items
              if "runs" in getattr(item, "fixturenames", ())]
    names = {param["name"] for param in params if "name" in param}
    return [name for name in CASES if name in names] if names else list(CASES)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Any:
    mock = start_in_thread(MockConfig(ttft=0.005, itl=0.001, tokens=kit.TOKENS), seed=1)
    rejecting = start_in_thread(MockConfig(ttft=0.005, itl=0.001, tokens=kit.TOKENS, reject_stream_options=True))
    replayer = replay.ReplayServer()
    receivers = {"agent": TimedReceiver(), "inject": TimedReceiver()}
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    servers = {"CONFORMANCE_MOCK_URL": mock.base_url, "CONFORMANCE_REPLAY_URL": replayer.url,
               "CONFORMANCE_CLOSED_URL": f"http://127.0.0.1:{closed_port}/v1",
               "CONFORMANCE_REJECTING_URL": rejecting.base_url}

    def agent_env(mode: str, **extra: str) -> dict[str, str]:
        return clean_env(**servers, ENABLE_TELEMETRY="true", SERVICE_NAME="conformance",
                         OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                         OTEL_EXPORTER_OTLP_ENDPOINT=receivers[mode].endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
                         OTEL_METRICS_EXPORTER="none", **extra)

    selected = selected_cases(request.session)
    plans = {"bare": (clean_env(**servers), selected),
             "agent": (agent_env("agent"), selected),
             "inject": (agent_env("inject", LLM_INJECT_STREAM_USAGE="true"), [n for n in INJECTED if n in selected])}
    with ThreadPoolExecutor(len(plans)) as pool:
        futures = {mode: pool.submit(run_batch, env, names, tmp_path_factory.mktemp(mode) / "results.jsonl")
                   for mode, (env, names) in plans.items()}
        batches = {mode: future.result() for mode, future in futures.items()}
    for mode, receiver in receivers.items():
        batches[mode].spans = llm_spans_by_case(receiver)
        receiver.stop()
    print("\nconformance batches: " + ", ".join(f"{mode} {len(b.results)} cases in {b.seconds:.1f}s"
                                                for mode, b in batches.items()), file=sys.stderr)
    yield Runs(**batches)
    for server in (mock, rejecting):
        server.shutdown()
        server.server_close()
    replayer.stop()


# -- comparing what the caller saw ------------------------------------------------------------------

def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 600 else text[:600] + "..."


def first_difference(bare: Any, agent: Any, where: str) -> str | None:
    """Where two records first differ, with both values there."""
    if type(bare) is type(agent) and isinstance(bare, list):
        for index, (b, a) in enumerate(zip(bare, agent, strict=False)):
            found = first_difference(b, a, f"{where}[{index}]")
            if found:
                return found
        if len(bare) != len(agent):
            extra = (bare if len(bare) > len(agent) else agent)[min(len(bare), len(agent))]
            return f"{where}: {len(bare)} items bare, {len(agent)} under the agent; the first extra: {_short(extra)}"
        return None
    if type(bare) is type(agent) and isinstance(bare, dict) and bare.keys() == agent.keys():
        for key in bare:
            found = first_difference(bare[key], agent[key], f"{where}.{key}")
            if found:
                return found
        return None
    if bare == agent:
        return None
    if isinstance(bare, str) and isinstance(agent, str):  # show where long texts part
        at = next((i for i, (b, a) in enumerate(zip(bare, agent, strict=False)) if b != a), min(len(bare), len(agent)))
        where, bare, agent = f"{where} (from character {at})", bare[max(0, at - 40):], agent[max(0, at - 40):]
    return f"{where}:\n    bare:  {_short(bare)}\n    agent: {_short(agent)}"


def caller_differences(bare: dict[str, Any], agent: dict[str, Any]) -> list[str]:
    found = []
    labels = [entry[0] for entry in bare["seen"]]
    if labels != [entry[0] for entry in agent["seen"]]:
        found.append(f"recorded steps differ: bare {labels}, agent {[e[0] for e in agent['seen']]}")
    for (label, b), (_, a) in zip(bare["seen"], agent["seen"], strict=False):
        difference = first_difference(b, a, label)
        if difference:
            found.append(difference)
    difference = first_difference(bare["raised"], agent["raised"], "raised")
    if difference:
        found.append(difference)
    # (The documented warning of a slow call is the agent's to write, and whether a call of a timed
    # case is slow depends on the machine's load: what else the case wrote must be the same.)
    difference = first_difference(bare["stderr"], [line for line in agent["stderr"]
                                                   if not line.startswith(SLOW_CALL_WARNING)], "stderr")
    if difference:
        found.append(difference)
    return found


# -- checking the telemetry -------------------------------------------------------------------------

def telemetry_problems(case: kit.Case, result: dict[str, Any], spans: list[dict[str, Any]], mode: str) -> list[str]:
    """What is wrong with a case's LLM spans; ``result`` is what its caller saw under the agent."""
    expect = case.expect
    times = result.get("times") or {}
    problems: list[str] = []

    def want(what: str, actual: Any, expected: Any) -> None:
        if actual != expected:
            problems.append(f"{what}: {actual!r}, expected {expected!r}")

    if expect.outcome != "error" and result["raised"]:
        problems.append(f"the case itself raised, which it should not: {result['raised']}")
    if len(spans) != expect.llm_spans:
        problems.append(f"{len(spans)} LLM spans, expected {expect.llm_spans}: {[s['name'] for s in spans]}")
    usage = expect.injected_usage if mode == "inject" else expect.usage
    error_type = expect.error_type
    if error_type == kit.RAISED:
        error_type = (result["raised"] or {}).get("raised", "nothing raised").rsplit(".", 1)[-1]
    facts = replay.facts(expect.recorded) if expect.recorded else {}
    for span in spans:
        attrs = span["attributes"]
        want("span kind", span["kind"], 3)  # SPAN_KIND_CLIENT
        ours = f"{attrs.get('gen_ai.operation.name')} {attrs.get('gen_ai.request.model')}"
        want("span name", span["name"], expect.sdk_span if span["name"] == expect.sdk_span else ours)
        if expect.op:
            want("gen_ai.operation.name", attrs.get("gen_ai.operation.name"), expect.op)
        if expect.outcome:
            want("llm.stream.outcome", attrs.get("llm.stream.outcome"), expect.outcome)
            expected_type = error_type if expect.outcome == "error" else None
            if expected_type == kit.ANY:
                expected_type = attrs.get("error.type") or "(some error type)"
            want("error.type", attrs.get("error.type"), expected_type)
            want("status is error", span["status"] == 2, expect.outcome == "error")
        if expect.ttft is not None:
            want("has llm.time_to_first_token", "llm.time_to_first_token" in attrs, expect.ttft)
        if usage == "absent":
            want("gen_ai.usage.output_tokens", attrs.get("gen_ai.usage.output_tokens"), None)
            want("llm.usage.source", attrs.get("llm.usage.source"), None)
        elif usage:
            want("llm.usage.source", attrs.get("llm.usage.source"), usage)
            want("has gen_ai.usage.output_tokens", "gen_ai.usage.output_tokens" in attrs, True)
            if usage == "api" and expect.response_model:  # an answer arrived: its model is on the span
                want("has gen_ai.response.model", "gen_ai.response.model" in attrs, True)
            if usage == "api" and expect.output_tokens is not None:
                want("gen_ai.usage.output_tokens", attrs.get("gen_ai.usage.output_tokens"), expect.output_tokens)
        if expect.finish_reasons is not None:
            want("gen_ai.response.finish_reasons", attrs.get("gen_ai.response.finish_reasons"),
                 expect.finish_reasons)
        for key, attribute in (("model", "gen_ai.response.model"), ("id", "gen_ai.response.id"),
                               ("finish_reasons", "gen_ai.response.finish_reasons"),
                               ("output_tokens", "gen_ai.usage.output_tokens"),
                               ("input_tokens", "gen_ai.usage.input_tokens")):
            if facts.get(key) is not None and not (key == "output_tokens" and usage != "api"):
                want(f"{attribute} (recorded)", attrs.get(attribute), facts[key])
        if expect.ended_within is not None:
            delay = span["arrived"] - times.get("broke off", span["arrived"])
            if delay > expect.ended_within:
                problems.append(f"the span was exported {delay:.1f} s after the caller broke off, "
                                f"expected within {expect.ended_within} s")
    return problems


def check(name: str, runs: Runs, mode: str) -> None:
    bare, batch = runs.bare, getattr(runs, mode)
    assert name in bare.results, f"bare run: {bare.lost.get(name, 'no result')}"
    assert name in batch.results, f"{mode} run: {batch.lost.get(name, 'no result')}"
    expected, got = bare.results[name], batch.results[name]
    if expected["skip"]:
        assert got["skip"] == expected["skip"]
        pytest.skip(expected["skip"])
    problems = [f"the caller saw something else: {d}" for d in caller_differences(expected, got)]
    if name not in batch.spans:
        problems.append("no span case:<name> was received: the agent exported nothing for this case")
    problems += telemetry_problems(CASES[name], got, batch.spans.get(name, []), mode)
    assert not problems, f"{CASES[name].doc}\n" + "\n".join(problems)


@pytest.mark.parametrize("name", list(CASES))
def test_case(name: str, runs: Runs) -> None:
    check(name, runs, "agent")


@pytest.mark.parametrize("name", INJECTED)
def test_case_with_injected_usage(name: str, runs: Runs) -> None:
    check(name, runs, "inject")


@pytest.mark.parametrize("mode", ["agent", "inject"])
def test_process_stderr_has_nothing_more(mode: str, runs: Runs) -> None:
    """Nothing printed by the agent's process that the bare one did not print (ended spans, tracebacks)."""

    def lines(text: str) -> Counter[str]:
        return Counter(line for line in kit.tidy_stderr(text) if not line.startswith(("== case:", SLOW_CALL_WARNING)))

    extra = lines(getattr(runs, mode).stderr) - lines(runs.bare.stderr)
    assert not extra, "\n".join(f"{line}    [during or after case {_case_of(getattr(runs, mode).stderr, line)}]"
                                 for line in extra)


def _case_of(stderr: str, line: str) -> str:
    """The case whose marker last came before ``line`` in a runner's stderr."""
    case = "(none yet)"
    for seen in kit.tidy_stderr(stderr):
        if seen.startswith("== case:"):
            case = seen.removeprefix("== case:")
        elif seen == line:
            return case
    return "(not found)"


def test_the_suite_covers_enough() -> None:
    assert len(CASES) >= 100
    assert all(case.doc for case in CASES.values())


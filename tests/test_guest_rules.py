"""The rules of the agent as a guest, each pinned where it is decided (``guest.py``,
``lifecycle.py``, ``instrumentors/exchange.py``, ``instrumentors/body.py``); ``tests/process`` proves them on whole
applications. Finalizers here run inside real collections (``gc.collect()`` of real cycles)."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import SpanProcessor

from conftest import clean_env, run_python, wait_for_llm_span
from nexent_autoinstrument import guest, lifecycle
from nexent_autoinstrument.instrumentors import exchange
from nexent_autoinstrument.instrumentors.otel import HTTPXInstrumentor


class _Cycle:
    """An object freed only by the collector, which calls ``action`` as its finalizer."""

    def __init__(self, action: Any) -> None:
        self.me = self
        self.action = action

    def __del__(self) -> None:
        self.action()


def _ended_on(harness: Any) -> list[str]:
    """The names of the threads that end spans from now on (any span, not only LLM ones)."""
    threads: list[str] = []

    class Recorder(SpanProcessor):
        def on_end(self, span: Any) -> None:
            threads.append(threading.current_thread().name)

    harness.provider.add_span_processor(Recorder())
    return threads


def _settle() -> None:
    assert guest.run_and_wait(lambda: None, 10)


def test_a_call_ended_inside_the_collector_is_ended_by_the_agent_thread(harness: Any) -> None:
    """Ending takes the exporters' and metrics' locks, which the code the collector interrupted may hold."""
    ended_on = _ended_on(harness)
    tracker = lifecycle.begin(harness.telemetry, "chat", "m", stream=True)
    seen_inside: list[bool] = []

    def end_it() -> None:
        seen_inside.append(guest.in_collector())
        lifecycle.end(tracker)

    _Cycle(end_it)
    gc.collect()
    _settle()
    assert seen_inside == [True]
    assert ended_on == [guest.THREAD_NAME]
    assert harness.llm_span().attributes["llm.stream.outcome"] == "completed"


def test_only_the_collecting_thread_posts_its_ends(harness: Any) -> None:
    """While another thread collects, this one is in no finalizer: it ends its calls itself."""
    ended_on = _ended_on(harness)
    tracker = lifecycle.begin(harness.telemetry, "chat", "m")
    collecting, guest.collecting = guest.collecting, -1  # (no thread has that ident)
    try:
        assert not guest.in_collector()
        lifecycle.end(tracker)
    finally:
        guest.collecting = collecting
    assert ended_on == [threading.current_thread().name]


def test_an_exchange_ended_inside_the_collector_is_ended_by_the_agent_thread(harness: Any, mock_llm: Any) -> None:
    """A raw response dropped unclosed in a cycle: its HTTP span is ended on the agent's thread."""
    HTTPXInstrumentor().instrument(telemetry=harness.telemetry)
    try:
        ended_on = _ended_on(harness)
        with httpx.Client() as client:
            response = client.send(client.build_request("GET", mock_llm.base_url + "/models"), stream=True)
            _Cycle(response.close)  # (the response itself stays referenced: only this close ends it)
            gc.collect()
            _settle()
            del response
    finally:
        HTTPXInstrumentor().uninstrument()
    assert ended_on == [guest.THREAD_NAME]


def test_a_fork_childs_copy_of_an_exchange_ends_nothing(harness: Any, mock_llm: Any) -> None:
    """An exchange made under another generation (the parent's, seen from a fork child) is not
    ended there: its span would be exported twice."""
    HTTPXInstrumentor().instrument(telemetry=harness.telemetry)
    try:
        with httpx.Client() as client:
            response = client.send(client.build_request("GET", mock_llm.base_url + "/models"), stream=True)
            guest.generation += 1
            try:
                response.close()
            finally:
                guest.generation -= 1
    finally:
        HTTPXInstrumentor().uninstrument()
    assert harness.spans() == []


def test_a_stream_the_sdk_lets_go_of_at_its_end_is_completed(agent: Any, mock_llm: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's own loop lets go of its stream object when it finishes, while the caller's loop is
    still asking for the next chunk: that is the end of the stream, not an abandonment, even if
    the agent's thread looks before the caller's loop ends the call (here, 0.3 s later). The HTTP
    layer's own note that the SDK closed its response (which comes first when it reads the body)
    is left out here, as for a body it cannot read (br, zstd)."""
    monkeypatch.setattr(exchange.Exchange, "end", lambda self, outcome=None, at=None: None)
    real_end = lifecycle.end

    def late_end(*args: Any, **kwargs: Any) -> None:
        if not args[1:] and not kwargs:  # (the end of the items)
            time.sleep(0.3)
        real_end(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "end", late_end)
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
    for _chunk in client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}],
                                                 stream=True, extra_body={"mock_tokens": 2, "mock_itl": 0}):
        pass
    assert wait_for_llm_span(agent).attributes["llm.stream.outcome"] == "completed"


FORK_AFTER_A_LATE_IMPORT = """
import concurrent.futures.thread  # imported after the agent's providers: its fork hook runs after theirs
import os
pid = os.fork()
if pid == 0:
    os._exit(0)
print("child exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_fork_child_does_not_run_resource_detection_in_its_fork_hook(tmp_path: Path) -> None:
    """The SDK's providers (1.45 and later) re-detect their resource in a fork child on a thread
    pool, inside the fork hook: when ``concurrent.futures`` registered its own fork hook after
    theirs, its lock is still held there and the child hangs. Ours take the child's identity
    directly."""
    result = run_python(FORK_AFTER_A_LATE_IMPORT, env=clean_env(ENABLE_TELEMETRY="true", OTEL_TRACES_EXPORTER="none"),
                        tmp_path=tmp_path, timeout=30)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "child exit 0", "")


HELD_POOL_LOCK = """
import gc, os, sys, threading
import httpx
from nexent_autoinstrument.instrumentors import exchange
from nexent_autoinstrument.instrumentors.otel import HTTPXInstrumentor
sys.path.insert(0, sys.argv[1])
from conftest import make_harness

harness = make_harness()
HTTPXInstrumentor().instrument(telemetry=harness.telemetry)
client = httpx.Client()


class Cycle:
    def __init__(self, response):
        self.me, self.response = self, response


request = client.build_request("POST", sys.argv[2] + "/chat/completions",
                               json={"model": "m", "stream": True, "messages": [], "mock_tokens": 50})
response = client.send(request, stream=True)
chunks = response.iter_bytes()
next(chunks)
Cycle(chunks)  # the body's readers, dropped half read: freed by the collector only
del chunks, response
pool = client._transport._pool
with pool._optional_thread_lock:  # as while httpcore assigns a connection: what its close takes
    gc.collect()  # the dropped response's reader is finalized here, or handed to the agent's thread
print("collected", flush=True)
client.close()
"""


def test_a_dropped_body_is_not_closed_under_its_pools_lock(mock_llm: Any, tmp_path: Path) -> None:
    """httpcore closes a body's reader under its pool's lock, which is not reentrant: a collection
    that finalizes a dropped reader while its thread holds that lock deadlocks, without the agent
    too. The agent keeps the transport's readers of bodies it wraps out of the collector's reach,
    and closes a dropped one on its own thread."""
    result = run_python(HELD_POOL_LOCK, env=clean_env(), tmp_path=tmp_path, timeout=30,
                        script_args=(str(Path(__file__).parent), mock_llm.base_url))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["collected"]


def test_the_agent_thread_sleeps_between_calls(agent: Any, mock_llm: Any) -> None:
    """A broken-off call ends within its grace; the agent's thread then stops ticking."""
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
    for index, _ in enumerate(client.chat.completions.create(model="mock-gpt", messages=[{"role": "user",
                              "content": "x"}], stream=True, extra_body={"mock_tokens": 5})):
        if index == 1:
            break
    assert wait_for_llm_span(agent).attributes["llm.stream.outcome"] == "closed_early"
    assert lifecycle._tick() is None


def test_what_making_the_instruments_imports_does_not_wait_for_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making the instruments imports genai-prices, which imports httpx2, whose import hook asks
    for the instruments again, on the same thread: that call returns at once (it waited 30 s for
    itself in every process that had not imported httpx2), while another thread still waits."""
    from opentelemetry.sdk.trace import TracerProvider

    from nexent_autoinstrument import tracker as tracker_module
    from nexent_autoinstrument.settings import Settings

    waits: list[str] = []
    monkeypatch.setattr(tracker_module.guest, "wait_until",
                        lambda predicate, seconds: waits.append(threading.current_thread().name) or True)
    made: list[int] = []

    def make() -> Any:
        telemetry.prepare()  # (what an import hook does meanwhile)
        other = threading.Thread(target=telemetry.prepare, name="other")
        other.start()
        other.join()
        made.append(1)
        return "metrics", "http", None

    telemetry = tracker_module.Telemetry(Settings(enabled=True), TracerProvider().get_tracer("t"), make_metrics=make)
    telemetry.prepare()
    assert made == [1] and waits == ["other"]
    assert telemetry.http_metrics == "http"

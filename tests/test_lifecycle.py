"""Every call ends exactly once, promptly, with the truthful outcome: break, resume, exit,
SIGTERM, timeouts and cancellation (``lifecycle.py``). The manual API's generator protocol is in
test_manual_api.py, the engine's edge values in test_result.py."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import clean_env, make_harness, run_python, wait_for_llm_span
from nexent_autoinstrument import lifecycle
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.tracker import CallTracker

MESSAGES = [{"role": "user", "content": "hello"}]


def stream_of(mock_llm: Any, tokens: int = 50, itl: float = 0.002, **options: Any) -> Any:
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
    return client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True,
                                          extra_body={"mock_tokens": tokens, "mock_itl": itl}, **options)


def astream_of(mock_llm: Any, tokens: int = 50, itl: float = 0.002) -> Any:
    client = openai.AsyncOpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
    return client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True,
                                          extra_body={"mock_tokens": tokens, "mock_itl": itl})


def duration_count(harness: Any, outcome: str) -> float:
    return harness.value("llm_request_duration_seconds_count", model="mock-gpt", operation="chat", outcome=outcome)


# -- break, without with or close() --------------------------------------------------------------------

def test_break_without_close_ends_promptly_as_closed_early_at_the_break(agent: Any, mock_llm: Any) -> None:
    stream = stream_of(mock_llm)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    broke_at, broke_clock = time.time_ns(), time.monotonic()
    span = wait_for_llm_span(agent, 15)  # no other call follows, and the stream stays referenced
    # Noticed by the agent's thread after its grace (0.5 s), not at the stream's collection or the
    # process's exit; the bound leaves a loaded machine room to schedule that thread.
    assert time.monotonic() - broke_clock < 5
    assert span.attributes["llm.stream.outcome"] == "closed_early"
    assert span.end_time <= broke_at + 20_000_000  # ended at the time of the break, not when noticed
    assert len(decode_offsets(span.attributes["llm.token.offsets"])) == 3  # role chunk, then 3 content chunks
    assert duration_count(agent, "closed_early") == 1
    del stream


def read_then_break(stream: Any, count: int) -> list[Any]:
    first = []
    for chunk in stream:
        first.append(chunk)
        if len(first) == count:
            break
    return first


def test_resuming_soon_after_a_break_completes_the_same_call(agent: Any, mock_llm: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # "Soon" is within the default grace whatever the load: the lifecycle's clock stands still
    # from the last chunk read to the resumption, so however long the caller is descheduled, no
    # grace passes (the reaper still ticks); with no grace at all, it would end the call at the break.
    real_clock, stopped = lifecycle.clock, [float("inf")]
    monkeypatch.setattr(lifecycle, "clock", lambda: min(real_clock(), stopped[0]))
    stream = stream_of(mock_llm, tokens=20)
    first = []
    for chunk in stream:
        first.append(chunk)
        if len(first) == 4:
            stopped[0] = real_clock()
            break
    broke = time.time_ns()
    time.sleep(0.3)  # more than a tick of the reaper
    rest = []
    for chunk in stream:  # resuming works exactly as without the agent
        stopped[0] = float("inf")  # (resumed: the lifecycle's clock runs again)
        rest.append(chunk)
    read_all = time.time_ns()
    assert len(first) + len(rest) == 22  # role + 20 content + finish
    span = wait_for_llm_span(agent)
    assert span.attributes["llm.stream.outcome"] == "completed"
    assert len(decode_offsets(span.attributes["llm.token.offsets"])) == 20
    # It ended at the end of the stream, after the 0.3 s pause, not at the break (no tighter bound:
    # on a busy machine the caller's list() may return some milliseconds after the end).
    assert broke + 300_000_000 <= span.end_time <= read_all


def _voluntary_switches(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread statistics of Linux")
def test_the_reaper_sleeps_while_no_call_waits_to_end(agent: Any, mock_llm: Any) -> None:
    """It wakes for a call broken off, ticks through the grace, ends it, and then sleeps: an idle
    service is not woken five times a second, and a busy one only when a call stops being read."""
    read_then_break(stream_of(mock_llm, tokens=5), 2)
    assert wait_for_llm_span(agent).attributes["llm.stream.outcome"] == "closed_early"
    (reaper,) = [thread for thread in threading.enumerate() if thread.name == "nexent-agent"]
    # Until it has gone back to sleep after ending the call (at once on a quiet machine; on a busy
    # one it may be descheduled on its way there): no switch for a whole tick.
    settled, deadline = _voluntary_switches(reaper), time.monotonic() + 30
    while True:
        time.sleep(0.25)
        now = _voluntary_switches(reaper)
        if now == settled:
            break
        assert time.monotonic() < deadline, "the agent's thread never went to sleep"
        settled = now
    before = _voluntary_switches(reaper)
    time.sleep(1.0)
    assert _voluntary_switches(reaper) - before <= 1


def test_resuming_long_after_a_break_still_gives_every_chunk(agent: Any, mock_llm: Any) -> None:
    stream = stream_of(mock_llm, tokens=20)
    first = read_then_break(stream, 4)
    span = wait_for_llm_span(agent)  # ended as closed early after the grace ...
    rest = list(stream)  # ... and the caller still gets the rest, untouched
    assert len(first) + len(rest) == 22
    assert [c.choices[0].finish_reason for c in rest][-1] == "stop"
    assert span.attributes["llm.stream.outcome"] == "closed_early"
    assert len(agent.llm_spans()) == 1


def test_exception_in_a_plain_for_loop_and_a_closed_relay_are_closed_early(agent: Any, mock_llm: Any) -> None:
    with pytest.raises(KeyError):
        for _ in stream_of(mock_llm):
            raise KeyError("the user's own bug")
    assert wait_for_llm_span(agent).attributes["llm.stream.outcome"] == "closed_early"
    assert agent.value("llm_error_count_total", model="mock-gpt", operation="chat", error_type="KeyError") == 0

    agent.exporter.clear()
    stream = stream_of(mock_llm)

    def relay() -> Iterator[Any]:  # a web handler relaying chunks; the client went away
        yield from stream

    relayed = relay()
    next(relayed)
    next(relayed)
    relayed.close()
    assert wait_for_llm_span(agent).attributes["llm.stream.outcome"] == "closed_early"


def test_async_break_without_close_ends_promptly(agent: Any, mock_llm: Any) -> None:
    async def main() -> Any:
        stream = await astream_of(mock_llm)
        async for _ in stream:
            break
        broke_at = time.time_ns()
        # The service idles and the stream is still referenced: the agent's thread ends the call
        # after its grace (about 0.7 s; longer only on a busy machine), dated at the break.
        deadline = time.monotonic() + 30
        while not agent.llm_spans() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert agent.llm_span().end_time <= broke_at + 20_000_000
        return stream

    asyncio.run(main())
    assert agent.llm_span().attributes["llm.stream.outcome"] == "closed_early"


# -- unfinished at exit --------------------------------------------------------------------------------

EXIT_APP = """
import os, sys
import openai

client = openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-test", max_retries=0)
stream = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}],
                                        stream=True, extra_body={"mock_tokens": 60, "mock_itl": 0.002})
mode = sys.argv[1]
if mode == "break":
    for index, chunk in enumerate(stream):
        if index == 5:
            break
elif mode == "session":
    class Session:
        pass
    session = Session()
    session.stream = stream
    for _ in range(6):
        next(stream)
elif mode == "crash_in_loop":
    for index, chunk in enumerate(stream):
        if index == 5:
            raise RuntimeError("the app crashed")
elif mode == "crash_elsewhere":
    for _ in range(6):
        next(stream)
    raise RuntimeError("the app crashed")
"""


@pytest.mark.parametrize(("mode", "expected"), [("break", "closed_early"), ("session", "interrupted"),
                                                ("crash_in_loop", "closed_early"),
                                                ("crash_elsewhere", "interrupted")])
def test_calls_unfinished_at_exit_are_recorded(mode: str, expected: str, mock_llm: Any, tmp_path: Path) -> None:
    result = run_python(EXIT_APP, args=(), tmp_path=tmp_path, env=clean_env(
        ENABLE_TELEMETRY="true", MOCK_URL=mock_llm.base_url, OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="console", OTEL_METRIC_EXPORT_INTERVAL="600000"), script_args=(mode,))
    assert ("RuntimeError" in result.stderr) == mode.startswith("crash"), result.stderr
    spans = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"name": "chat ')]
    assert len(spans) == 1, result.stdout[-2000:]
    attributes = spans[0]["attributes"]
    assert attributes["llm.stream.outcome"] == expected
    assert attributes["llm.time_to_first_token"] > 0 and len(decode_offsets(attributes["llm.token.offsets"])) == 5
    assert attributes["llm.stream.chunks"] == 6  # the partial data it had
    assert f'"outcome": "{expected}"' in result.stdout  # and the metrics were flushed too


def test_sigterm_ends_an_open_call_as_interrupted(mock_llm: Any, tmp_path: Path) -> None:
    app = EXIT_APP.replace('mode = sys.argv[1]', 'mode = "session"') + (
        "\nimport signal, time\nprint('ready', flush=True)\nsignal.pause()\n")
    script = tmp_path / "sigterm_app.py"
    script.write_text(app)
    import subprocess

    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=clean_env(ENABLE_TELEMETRY="true", MOCK_URL=mock_llm.base_url,
                                                        OTEL_TRACES_EXPORTER="console"))
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.terminate()
    out, _ = process.communicate(timeout=20)
    assert process.returncode == -15  # it still dies of the signal
    (span,) = [json.loads(line) for line in out.splitlines() if line.startswith('{"name": "chat ')]
    assert span["attributes"]["llm.stream.outcome"] == "interrupted"


# -- timeouts and cancellation -----------------------------------------------------------------------

def test_asyncio_timeout_around_a_stream_is_an_error(agent: Any, mock_llm: Any) -> None:
    async def main() -> None:
        stream = await astream_of(mock_llm, tokens=50, itl=0.05)
        async with asyncio.timeout(0.3):
            async for _ in stream:
                pass

    with pytest.raises(TimeoutError):
        asyncio.run(main())
    span = wait_for_llm_span(agent)
    assert span.attributes["llm.stream.outcome"] == "error"
    assert span.attributes["error.type"] == "TimeoutError"
    assert agent.value("llm_error_count_total", model="mock-gpt", operation="chat", error_type="TimeoutError") == 1


def test_wait_for_around_a_stream(agent: Any, mock_llm: Any) -> None:
    async def consume() -> None:
        async with await astream_of(mock_llm, tokens=50, itl=0.05) as stream:
            async for _ in stream:
                pass

    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(consume(), 0.3))
    # From Python 3.12 wait_for is asyncio.timeout inside the same task; on 3.11 it cancels a
    # separate task, which cannot tell that a timeout asked for it (the documented rule).
    expected = "error" if sys.version_info >= (3, 12) else "cancelled"
    assert wait_for_llm_span(agent).attributes["llm.stream.outcome"] == expected


@pytest.mark.parametrize("inside_with", [False, True])
def test_plain_cancellation_is_cancelled_not_an_error(agent: Any, mock_llm: Any, inside_with: bool) -> None:
    async def consume() -> None:
        stream = await astream_of(mock_llm, tokens=50, itl=0.05)
        if inside_with:
            async with stream:
                async for _ in stream:
                    pass
        else:
            async for _ in stream:
                pass

    async def main() -> None:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert wait_for_llm_span(agent).attributes["llm.stream.outcome"] == "cancelled"
    assert agent.value("llm_error_count_total", model="mock-gpt", operation="chat",
                       error_type="CancelledError") == 0


def test_telemetry_off_under_opentelemetry_instrument_exports_nothing(mock_llm: Any, tmp_path: Path) -> None:
    from receivers import OTLPHTTPReceiver

    app = EXIT_APP.replace('mode = sys.argv[1]', 'mode = "none"') + "\nprint(len(list(stream)))\n"
    receiver = OTLPHTTPReceiver()
    try:
        for value in (None, "false"):
            env = clean_env(MOCK_URL=mock_llm.base_url, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                            OTEL_METRICS_EXPORTER="otlp", OTEL_BSP_SCHEDULE_DELAY="50")
            if value is not None:
                env["ENABLE_TELEMETRY"] = value
            result = run_python(app, env=env, instrument=True, tmp_path=tmp_path)
            assert result.stdout.split() == ["62"], result.stderr
        assert not list(receiver.spans()) and not receiver.metric_names()
    finally:
        receiver.stop()


def test_a_tracker_is_registered_until_it_ends() -> None:
    harness = make_harness()
    tracker: CallTracker = lifecycle.begin(harness.telemetry, "chat", "m")
    assert id(tracker) in lifecycle._live
    lifecycle.end(tracker)
    assert id(tracker) not in lifecycle._live

"""The aiohttp layer against the mock LLM: arrival times against the server's own send times, a
caller that reads late, every exit leaving nothing behind, and one span per call when an SDK
sends through aiohttp. (What the caller sees, bare against agent, is the conformance suite's
``cases_aiohttp``; the wire's dialects and cuts are its ``aiohttp_lines`` reader.)"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from conftest import Harness, make_harness
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.instrumentors import aiohttp as layer
from nexent_autoinstrument.instrumentors.otel import AioHTTPInstrumentor, HTTPX2Instrumentor, OpenAIInstrumentor

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def agent() -> Iterator[Harness]:
    harness = make_harness()
    layers = [OpenAIInstrumentor(), HTTPX2Instrumentor(), AioHTTPInstrumentor()]
    for instrumentor in layers:
        instrumentor.instrument(telemetry=harness.telemetry)
    yield harness
    for instrumentor in layers:
        instrumentor.uninstrument()


def chat(mock_llm: Any, **mock: Any) -> tuple[str, dict[str, Any]]:
    return mock_llm.base_url + "/chat/completions", {"model": "mock-gpt", "messages": MESSAGES, "stream": True,
                                                      **mock}


async def test_chunks_are_timed_as_they_arrive_even_when_the_caller_reads_late(agent: Harness,
                                                                                 mock_llm: Any) -> None:
    """aiohttp reads ahead of its caller: a chunk's time is when it came off the connection (after
    the server sent it, before the caller got it), not when a caller that lags read it."""
    label = uuid.uuid4().hex
    url, body = chat(mock_llm, mock_ttft=0.3, mock_itl=0.03, mock_tokens=6, mock_label=label)
    got: list[float] = []  # when the caller had each content line
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(url, json=body) as response:
            async for line in response.content:
                if b'"content":"' in line and b'"content":""' not in line:
                    got.append(time.perf_counter())
                    await asyncio.sleep(0.1)  # (the caller falls behind the stream)
    attrs = agent.llm_span().attributes
    timeline = mock_llm.timelines[label]  # (the mock runs in this process: the same clock)
    offsets = decode_offsets(attrs["llm.token.offsets"])
    assert len(offsets) == len(timeline["tokens"]) == len(got) == 6
    since_start = [offset / 1e6 for offset in offsets]
    for since, server_sent, caller_had in zip(since_start, timeline["tokens"], got, strict=True):
        # The call started after ``started`` and before the server had the request; each chunk
        # arrived after the server sent it and before the caller had it. Bounds that hold at any
        # speed (1 ms for the offsets' rounding to microseconds).
        assert started + since <= caller_had
        assert server_sent <= timeline["arrived"] + since + 0.001
    # The caller took each line 0.1 s after the last, on purpose; the arrivals are the server's pace.
    assert since_start[-1] - since_start[0] < got[-1] - got[0]
    assert attrs["llm.stream.outcome"] == "completed" and attrs["gen_ai.usage.output_tokens"] == 6
    assert "llm.stream.reader_seconds" not in attrs  # (the caller's pace is not in reads timed at arrival)
    # The first token came 0.3 s after the headers, in a read of its own: an arrival, so the
    # server's part of TTFT is known. (The others, 30 ms apart, are arrivals too unless a loaded
    # machine let two of them meet in one read: then they count as chunks that waited.)
    assert "llm.server_time_to_first_token" in attrs
    assert "llm.token_generation_rate" in attrs or attrs["llm.stream.waiting_chunks"] > 0


async def test_every_exit_ends_one_span_and_leaves_nothing_behind(agent: Harness, mock_llm: Any) -> None:
    # (a pause after the second token: the caller leaves while the server is still sending, at any speed)
    url, long = chat(mock_llm, mock_tokens=10, mock_stall_at=2, mock_stall=3.0)
    outcomes: list[str] = []
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=chat(mock_llm)[1]) as response:
            await response.read()
        outcomes.append("completed")
        async with session.post(url, json=long) as response:
            await response.content.readline()
        outcomes.append("closed_early")
        with contextlib.suppress(ValueError):
            async with session.post(url, json=long) as response:
                raise ValueError("the caller's bug")
        outcomes.append("closed_early")

        async def read_forever() -> None:
            async with session.post(url, json=long) as response:
                await response.content.readline()
                await asyncio.sleep(10)

        task = asyncio.ensure_future(read_forever())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        outcomes.append("cancelled")
        async with session.post(url, json={**long, "mock_drop_after": 2}) as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        outcomes.append("error")
        async with session.post(url, json={**long, "stream": False, "mock_error": 503}) as response:
            assert response.status == 503
        outcomes.append("error")
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.post("http://127.0.0.1:9/v1/chat/completions", json=long)
        outcomes.append("error")
        async with session.get(mock_llm.base_url + "/models") as response:  # (no LLM path: not a call)
            await response.read()
    assert [s.attributes["llm.stream.outcome"] for s in agent.llm_spans()] == outcomes
    assert layer._arriving == {} and layer._awaiting == {}


def test_a_body_nobody_reads_is_not_kept_alive_by_the_agent(agent: Harness, mock_llm: Any) -> None:
    """A response dropped unread, its session closed with its event loop: the body never ends,
    and the agent, which watches it by its reader, keeps neither that reader nor (through it) the
    connection, its transport and the loop alive. They go with the caller's last reference, as
    bare (an SDK's own connector finalized later, at exit, finds its loop closed)."""
    url, body = chat(mock_llm, mock_tokens=10, mock_stall_at=2, mock_stall=3.0)

    async def leave_unread() -> None:
        async with aiohttp.ClientSession() as session:
            await session.post(url, json=body)

    gc.collect()
    before = sum(type(o) is aiohttp.StreamReader for o in gc.get_objects())
    for _ in range(3):
        asyncio.run(leave_unread())
    gc.collect()
    assert sum(type(o) is aiohttp.StreamReader for o in gc.get_objects()) == before


def test_a_new_reader_takes_nothing_watched_under_a_reused_id(agent: Harness) -> None:
    """What was watched under an id whose reader has gone (a body that never ended) is dropped when
    a new reader gets that id: its bytes are not taken for the old body's."""
    reader = object()
    layer._arriving[id(reader)] = "a body that never ended"  # type: ignore[assignment]
    try:
        layer._reader_made(lambda *args, **kwargs: None, reader, (), {})
        assert id(reader) not in layer._arriving
    finally:
        layer._arriving.pop(id(reader), None)


async def test_an_sdk_sending_through_aiohttp_is_measured_once(agent: Harness, mock_llm: Any) -> None:
    """openai's ``DefaultAioHttpClient`` is an httpx client over an aiohttp transport: the SDK's layer
    measures the call; the aiohttp layer, beneath it, adds no second one."""
    openai = pytest.importorskip("openai")
    try:
        http_client = openai.DefaultAioHttpClient()
    except (AttributeError, RuntimeError) as missing:
        pytest.skip(f"this openai release has no aiohttp client: {missing}")
    client = openai.AsyncOpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0, http_client=http_client)
    stream = await client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True)
    assert [chunk async for chunk in stream]
    await client.close()
    span = agent.llm_span()
    assert span.attributes["llm.stream.outcome"] == "completed" and "llm.time_to_first_token" in span.attributes


def test_a_request_made_while_an_llm_request_is_sent_is_not_its_hop(agent: Harness, mock_llm: Any) -> None:
    """A trace config's callback that sends a request of its own, inside an LLM request: that request
    carries no trace context of the call's and its body is not taken for the call's."""
    url, body = chat(mock_llm)
    seen: dict[str, Any] = {}

    async def on_request_start(session: Any, context: Any, params: Any) -> None:
        if "inner" not in seen:
            seen["inner"] = True
            async with aiohttp.ClientSession() as other, other.get(mock_llm.base_url + "/models") as response:
                seen["headers"] = dict(response.request_info.headers)
                await response.read()

    async def main() -> bytes:
        config = aiohttp.TraceConfig()
        config.on_request_start.append(on_request_start)
        async with aiohttp.ClientSession(trace_configs=[config]) as session, \
                session.post(url, json=body) as response:
            return await response.read()

    assert asyncio.run(main()).endswith(b"data: [DONE]\n\n")
    assert "traceparent" not in seen["headers"]
    span = agent.llm_span()
    assert span.attributes["llm.stream.outcome"] == "completed" and span.attributes["gen_ai.usage.output_tokens"] == 10

"""Each exit path of a stream ends its span exactly once, sync and async; measurements are right."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from conftest import make_harness, wait_for_llm_span
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.instrumentors.otel import OpenAIInstrumentor

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def instrument(harness_factory: Any, caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    """Instrument openai with a harness built from the given settings; checks spans end once."""
    instrumentor = OpenAIInstrumentor()

    def start(**overrides: Any) -> Any:
        harness = harness_factory(**overrides)
        instrumentor.uninstrument()
        instrumentor.instrument(telemetry=harness.telemetry)
        return harness

    with caplog.at_level(logging.WARNING):
        yield start
    instrumentor.uninstrument()
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]  # no double end()


def sync_client(mock_llm: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)


def async_client(mock_llm: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)


def outcome(harness: Any) -> str:
    return harness.llm_span().attributes["llm.stream.outcome"]


def create(client: Any, **extra: Any) -> Any:
    return client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True,
                                          extra_body=extra or None)


# -- exit paths, sync ---------------------------------------------------------------------------

def test_sync_consumed_to_the_end(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    stream = create(sync_client(mock_llm))
    assert isinstance(stream, openai.Stream)
    assert stream.response.status_code == 200
    chunks = list(stream)
    assert outcome(harness) == "completed"
    assert harness.llm_span().attributes["llm.stream.chunks"] == len(chunks) == 12  # role + 10 + finish


def test_sync_break_then_close(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    stream = create(sync_client(mock_llm), mock_tokens=50)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    assert not harness.llm_spans()
    stream.close()
    attrs = harness.llm_span().attributes
    assert attrs["llm.stream.outcome"] == "closed_early"
    assert len(decode_offsets(attrs["llm.token.offsets"])) == 3 and attrs["llm.time_to_first_token"] > 0  # partial data


def test_sync_break_inside_with(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    with create(sync_client(mock_llm), mock_tokens=50) as stream:
        assert isinstance(stream, openai.Stream)
        next(stream)
        next(stream)
    assert outcome(harness) == "closed_early"


def test_sync_abandoned_and_garbage_collected(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    ended_on = harness.record_ending_threads()
    stream = create(sync_client(mock_llm), mock_tokens=50)
    next(stream)
    next(stream)
    del stream
    gc.collect()
    abandoned_at = time.time_ns()
    span = wait_for_llm_span(harness)  # ended soon, with no other call needed ...
    assert ended_on == ["nexent-agent"]  # ... by the reaper thread, never inside the collector
    assert span.attributes["llm.stream.outcome"] == "abandoned"
    assert span.end_time <= abandoned_at + 50_000_000  # with the time it was dropped
    assert harness.value("llm_time_to_first_token_seconds_count", model="mock-gpt", operation="chat") == 1


def test_sync_connection_drop_reaches_user_unchanged(instrument: Any, mock_llm: Any) -> None:
    bare: list[BaseException] = []
    try:
        list(create(sync_client(mock_llm), mock_drop_after=3))
    except Exception as exc:
        bare.append(exc)
    harness = instrument()
    with pytest.raises(Exception) as caught:
        list(create(sync_client(mock_llm), mock_drop_after=3))
    assert type(caught.value) is type(bare[0]) and str(caught.value) == str(bare[0])
    span = harness.llm_span()
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["llm.stream.outcome"] == "error"
    assert span.attributes["error.type"] == type(caught.value).__name__
    assert len(decode_offsets(span.attributes["llm.token.offsets"])) == 3
    assert harness.value("llm_error_count_total", model="mock-gpt", operation="chat",
                         error_type=type(caught.value).__name__) == 1


def test_sync_exception_in_user_loop_body(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    with pytest.raises(ZeroDivisionError), create(sync_client(mock_llm), mock_tokens=50) as stream:
        for _ in stream:
            1 / 0  # noqa: B018
    assert outcome(harness) == "closed_early"
    assert harness.value("llm_error_count_total", model="mock-gpt", operation="chat",
                         error_type="ZeroDivisionError") == 0  # the user's bug is not an LLM error

    harness = instrument()  # the same without ``with``: the loop broke off, as with ``break``
    stream = create(sync_client(mock_llm), mock_tokens=50)
    with pytest.raises(KeyError):
        for _ in stream:
            raise KeyError("user")
    assert wait_for_llm_span(harness).attributes["llm.stream.outcome"] == "closed_early"
    assert harness.value("llm_error_count_total", model="mock-gpt", operation="chat", error_type="KeyError") == 0


# -- exit paths, async --------------------------------------------------------------------------

def test_async_consumed_to_the_end(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()

    async def main() -> int:
        stream = await create(async_client(mock_llm))
        assert isinstance(stream, openai.AsyncStream)
        return len([chunk async for chunk in stream])

    assert asyncio.run(main()) == 12
    assert outcome(harness) == "completed"


def test_async_break_then_close_and_aclose(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()

    async def main(close_name: str) -> None:
        stream = await create(async_client(mock_llm), mock_tokens=50)
        async for _ in stream:
            break
        await getattr(stream, close_name)()

    asyncio.run(main("close"))
    assert outcome(harness) == "closed_early"
    if hasattr(openai.AsyncStream, "aclose"):  # (openai 2.x and later; the agent adds none to 1.x)
        harness = instrument()
        asyncio.run(main("aclose"))
        assert outcome(harness) == "closed_early"


def test_async_break_inside_async_with(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()

    async def main() -> None:
        async with await create(async_client(mock_llm), mock_tokens=50) as stream:
            assert isinstance(stream, openai.AsyncStream)
            async for _ in stream:
                break

    asyncio.run(main())
    assert outcome(harness) == "closed_early"


def test_async_abandoned_and_garbage_collected(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()

    async def main() -> None:
        stream = await create(async_client(mock_llm), mock_tokens=50)
        await stream.__anext__()
        del stream
        gc.collect()

    asyncio.run(main())
    assert wait_for_llm_span(harness).attributes["llm.stream.outcome"] == "abandoned"


def test_async_connection_drop(instrument: Any, mock_llm: Any) -> None:
    async def main() -> type[BaseException]:
        try:
            async for _ in await create(async_client(mock_llm), mock_drop_after=2):
                pass
        except Exception as exc:
            return type(exc)
        raise AssertionError("the drop did not raise")

    bare = asyncio.run(main())
    harness = instrument()
    assert asyncio.run(main()) is bare  # openai 3 wraps it in APIConnectionError, 1.x/2.x raise httpx's
    assert outcome(harness) == "error"
    assert harness.llm_span().status.status_code.name == "ERROR"


def test_async_cancellation_is_recorded_and_propagates(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()

    async def consume(first: asyncio.Event) -> None:
        stream = await create(async_client(mock_llm), mock_tokens=200, mock_itl=0.05)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first.set()

    async def main() -> None:
        first = asyncio.Event()
        task = asyncio.create_task(consume(first))
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    attrs = harness.llm_span().attributes
    assert attrs["llm.stream.outcome"] == "cancelled"
    assert attrs["llm.time_to_first_token"] > 0
    assert harness.value("llm_request_duration_seconds_count", model="mock-gpt", operation="chat",
                         outcome="cancelled") == 1
    assert harness.value("llm_error_count_total", model="mock-gpt", operation="chat",
                         error_type="CancelledError") == 0


def test_async_exception_in_user_loop_body(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()

    async def main() -> None:
        async with await create(async_client(mock_llm), mock_tokens=50) as stream:
            async for _ in stream:
                raise ValueError("user bug")

    with pytest.raises(ValueError, match="user bug"):
        asyncio.run(main())
    assert outcome(harness) == "closed_early"


# -- what is measured -----------------------------------------------------------------------------

def test_ttft_and_rate_accuracy_against_known_timing(instrument: Any, mock_llm: Any) -> None:
    """Mock: role chunk at once, first content at 200 ms, then 10 ms between 50 tokens. Each
    token's time lies between the server's send and our having it, at any load (on a quiet machine
    a few milliseconds apart); the TTFT, the rate and the median gap are those times'."""
    harness = instrument()
    label = uuid.uuid4().hex
    called = time.perf_counter()  # the call starts after this, and before the server has it
    stream = create(sync_client(mock_llm), mock_ttft=0.2, mock_itl=0.01, mock_tokens=50, mock_label=label)
    seen = [time.perf_counter() for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    timeline = mock_llm.timelines[label]
    attrs = harness.llm_span().attributes
    offsets = decode_offsets(attrs["llm.token.offsets"])  # integer microseconds since the call started
    assert len(offsets) == len(seen) == len(timeline["tokens"]) == 50 and offsets == sorted(offsets)
    times = [offset / 1e6 for offset in offsets]
    slack = 2e-6  # (whole microseconds)
    for index, (sent, at, had) in enumerate(zip(timeline["tokens"], times, seen, strict=True)):
        assert sent - timeline["arrived"] - slack <= at <= had - called + slack, index
    assert attrs["llm.time_to_first_token"] >= 0.2  # (the server sent it 200 ms after it began to read the request)
    assert abs(offsets[0] - attrs["llm.time_to_first_token"] * 1e6) <= 1
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    if attrs["llm.stream.waiting_chunks"] == 0:  # every gap timed: the rate and median are of them all
        assert attrs["llm.token_generation_rate"] == pytest.approx(49 / (times[-1] - times[0]), rel=1e-4)
        assert attrs["llm.inter_token_latency.p50"] == pytest.approx(gaps[24], abs=slack)  # (nearest rank)
    else:  # (a loaded machine read some chunks late, together: only the gaps before the others count)
        assert 1 / gaps[-1] <= attrs["llm.token_generation_rate"] <= 1 / gaps[0]
        assert gaps[0] - slack <= attrs["llm.inter_token_latency.p50"] <= gaps[-1] + slack


def test_ttft_ignores_the_role_only_first_chunk(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    list(create(sync_client(mock_llm), mock_ttft=0.15))
    assert harness.llm_span().attributes["llm.time_to_first_token"] >= 0.14


def test_stall_event_marks_the_gap_and_position(instrument: Any, mock_llm: Any) -> None:
    harness = instrument(stall_threshold_seconds=0.1)
    list(create(sync_client(mock_llm), mock_tokens=10, mock_stall_at=6, mock_stall=0.25))
    span = harness.llm_span()
    stalls = [e for e in span.events if e.name == "llm.stream.stall"]
    assert len(stalls) == 1
    assert stalls[0].attributes["llm.stall.chunk_index"] == 6
    assert stalls[0].attributes["llm.stall.gap_seconds"] >= 0.2
    if span.attributes["llm.stream.waiting_chunks"] == 0:  # (every gap timed: a busy machine may read some late)
        assert span.attributes["llm.inter_token_latency.max"] >= 0.2
    assert not [e for e in span.events if e.name.startswith("llm.token")]  # never one event per token


def test_token_offsets_are_capped(instrument: Any, mock_llm: Any) -> None:
    harness = instrument(token_timestamps_max=5)
    list(create(sync_client(mock_llm), mock_tokens=12))
    attrs = harness.llm_span().attributes
    assert len(decode_offsets(attrs["llm.token.offsets"])) == 5 and attrs["llm.token.offsets_truncated"] is True
    assert attrs["gen_ai.usage.output_tokens"] == 12


def test_slow_duration_and_slow_rate(instrument: Any, mock_llm: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Thresholds that no speed can cross: the call takes at least the mock's 0.47 s (TTFT and gaps),
    # and 9 gaps between chunks the SDK parsed one by one cannot add up to less than a microsecond,
    # while on a busy machine chunks parsed back to back can make any rate of thousands per second.
    # (Gaps of 50 ms: a reader that a loaded machine holds back longer than that finds chunks
    # waiting, and a call read slower than it came gets no rate verdict.)
    harness = instrument(slow_request_threshold_seconds=0.05, slow_token_rate_threshold=1e7)
    list(create(sync_client(mock_llm), mock_tokens=10, mock_itl=0.05))
    span = harness.llm_span()
    events = {e.name: e.attributes for e in span.events}
    assert events.keys() >= {"llm.slow_request", "llm.slow_token_rate"}, dict(span.attributes)
    assert events["llm.slow_request"]["llm.duration_seconds"] >= 0.47
    assert events["llm.slow_token_rate"]["llm.token_generation_rate"] == span.attributes["llm.token_generation_rate"]
    for reason in ("duration", "token_rate"):
        assert harness.value("llm_slow_requests_total", model="mock-gpt", operation="chat", reason=reason) == 1
    assert len([r for r in caplog.records if "slow LLM call" in r.getMessage()]) == 1


def test_fast_call_is_not_slow(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    list(create(sync_client(mock_llm)))
    assert not harness.llm_span().events


def test_usage_from_api_when_the_user_asks_for_it(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    chunks = list(sync_client(mock_llm).chat.completions.create(
        model="mock-gpt", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # theirs: they see it
    attrs = harness.llm_span().attributes
    assert attrs["llm.usage.source"] == "api" and attrs["gen_ai.usage.output_tokens"] == 10


def test_injected_usage_chunk_is_consumed_by_the_agent(instrument: Any, mock_llm: Any) -> None:
    harness = instrument(inject_stream_usage=True)
    chunks = list(create(sync_client(mock_llm)))
    assert all(chunk.choices for chunk in chunks)  # chunk.choices[0] never crashes
    assert mock_llm.requests[-1][2]["stream_options"] == {"include_usage": True}
    attrs = harness.llm_span().attributes
    assert attrs["llm.usage.source"] == "api" and attrs["gen_ai.usage.input_tokens"] > 0

    async def main() -> list[Any]:
        return [c async for c in await create(async_client(mock_llm))]

    harness = instrument(inject_stream_usage=True)
    assert all(chunk.choices for chunk in asyncio.run(main()))
    assert harness.llm_span().attributes["llm.usage.source"] == "api"


def test_estimated_usage_without_api_usage(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    list(create(sync_client(mock_llm), mock_tokens=7))
    attrs = harness.llm_span().attributes
    assert attrs["llm.usage.source"] == "estimated" and attrs["gen_ai.usage.output_tokens"] == 7


def test_http_error_is_counted_and_raised_unchanged(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    with pytest.raises(openai.InternalServerError) as caught:
        sync_client(mock_llm).chat.completions.create(model="mock-gpt", messages=MESSAGES,
                                                      extra_body={"mock_error": 500})
    assert caught.value.status_code == 500
    span = harness.llm_span()
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == "InternalServerError"
    assert span.attributes["http.response.status_code"] == 500
    assert harness.value("llm_error_count_total", model="mock-gpt", operation="chat",
                         error_type="InternalServerError") == 1
    assert harness.value("llm_request_duration_seconds_count", model="mock-gpt", operation="chat",
                         outcome="error") == 1


def test_model_labels_are_bounded(instrument: Any, mock_llm: Any) -> None:
    harness = instrument(max_model_labels=2)
    client = sync_client(mock_llm)
    for model in ("m-1", "m-2", "m-3", "m-4"):
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert harness.value("llm_request_duration_seconds_count", model="other", operation="chat",
                         outcome="completed") == 2
    assert harness.llm_spans()[-1].attributes["gen_ai.request.model"] == "m-4"  # spans keep the truth


def test_span_is_child_of_the_current_span_also_in_a_task(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    tracer = harness.provider.get_tracer("app")

    async def main() -> None:
        with tracer.start_as_current_span("request") as parent:
            async def call() -> None:
                async for _ in await create(async_client(mock_llm)):
                    pass
            await asyncio.create_task(call())
        llm = harness.llm_span()
        assert llm.parent is not None and llm.parent.span_id == parent.get_span_context().span_id
        assert llm.context.trace_id == parent.get_span_context().trace_id

    asyncio.run(main())


def test_span_context_does_not_leak_into_the_caller(instrument: Any, mock_llm: Any) -> None:
    from opentelemetry import trace

    instrument()
    before = trace.get_current_span()
    stream = create(sync_client(mock_llm))
    assert trace.get_current_span() is before
    next(stream)
    assert trace.get_current_span() is before
    stream.close()


def test_content_is_not_captured_by_default_and_bounded_when_on(instrument: Any, mock_llm: Any) -> None:
    harness = instrument()
    list(create(sync_client(mock_llm)))
    attrs = harness.llm_span().attributes
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs

    harness = instrument(capture_content=True)
    list(create(sync_client(mock_llm), mock_tokens=3000))
    attrs = harness.llm_span().attributes
    assert "hello" in attrs["gen_ai.input.messages"]
    assert attrs["gen_ai.output.messages"].startswith("the model")
    assert len(attrs["gen_ai.output.messages"]) <= 4097


def test_a_bug_in_the_agent_never_reaches_the_user(instrument: Any, mock_llm: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from nexent_autoinstrument import guard
    from nexent_autoinstrument.instrumentors import stainless

    def broken(tracker: Any, chunk: Any) -> None:
        raise RuntimeError("agent bug")

    routes = tuple((suffix, replace(ep, read_item=broken)) for suffix, ep in stainless.ROUTES["openai"])
    monkeypatch.setitem(stainless.ROUTES, "openai", routes)
    harness = instrument()
    before = guard.internal_errors["stream.read_item"]
    chunks = list(create(sync_client(mock_llm)))
    assert len(chunks) == 12
    assert guard.internal_errors["stream.read_item"] == before + 12
    assert outcome(harness) == "completed"


# -- injection and the Responses API's own failure, on a harness of their own --------------------

def test_response_failed_is_an_error_counted_once() -> None:
    body = b"".join(b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps(data).encode()) for kind, data in [
        ("response.created", {"type": "response.created", "sequence_number": 0, "response": {
            "id": "resp_1", "object": "response", "created_at": 1, "model": "m", "status": "in_progress",
            "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1,
                                        "item_id": "msg", "output_index": 0, "content_index": 0,
                                        "delta": "partial", "logprobs": []}),
        ("response.failed", {"type": "response.failed", "sequence_number": 2, "response": {
            "id": "resp_1", "object": "response", "created_at": 1, "model": "m", "status": "failed",
            "error": {"code": "server_error", "message": "boom"}, "output": [], "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}})])
    library = __import__("httpx2" if int(openai.__version__.split(".")[0]) >= 3 else "httpx")
    transport = library.MockTransport(lambda request: library.Response(
        200, headers={"content-type": "text/event-stream"}, content=body))
    harness = make_harness()
    OpenAIInstrumentor().instrument(telemetry=harness.telemetry)
    try:
        client = openai.OpenAI(base_url="http://llm.test/v1", api_key="sk-test", max_retries=0,
                               http_client=library.Client(transport=transport))
        events = [event.type for event in client.responses.create(model="m", input="hi", stream=True)]
    finally:
        OpenAIInstrumentor().uninstrument()
    assert events == ["response.created", "response.output_text.delta", "response.failed"]
    span = harness.llm_span()
    assert span.attributes["llm.stream.outcome"] == "error"
    assert span.attributes["error.type"] == "response.failed"
    assert span.attributes["gen_ai.usage.output_tokens"] == 1
    assert harness.value("llm_error_count_total", model="m", operation="generate_content",
                         error_type="response.failed") == 1


def test_user_stream_options_keep_their_usage_chunk_under_injection(mock_llm: Any) -> None:
    harness = make_harness(inject_stream_usage=True)
    OpenAIInstrumentor().instrument(telemetry=harness.telemetry)
    try:
        for where in ("body", "extra_body"):
            harness.exporter.clear()
            options: dict[str, Any] = {"stream_options": {"include_usage": True}}
            client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
            if where == "body":
                stream = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True,
                                                        extra_body={"mock_tokens": 10}, **options)
            else:  # (one stream per round: a second one, dropped unread, would end as a second span)
                stream = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True,
                                                        extra_body={"mock_tokens": 10, **options})
            chunks = list(stream)
            assert len(chunks) == 13 and not chunks[-1].choices and chunks[-1].usage.completion_tokens == 10
            assert harness.llm_span().attributes["llm.usage.source"] == "api"
    finally:
        OpenAIInstrumentor().uninstrument()

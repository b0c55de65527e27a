"""Every protocol but openai's (Anthropic, Ollama, Gemini, Cohere...): raw httpx/httpx2 calls to
each route the mock LLM serves, and the real SDKs, against the mock's own server-side times,
through every exit path; one LLM span and one count per call."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import cohere
import ollama
import pytest
from google import genai
from google.genai import types as genai_types

from conftest import Harness, wait_for_llm_span
from nexent_autoinstrument.adapters.endpoints import PROTOCOLS
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.instrumentors.otel import (
    AioHTTPInstrumentor,
    AnthropicInstrumentor,
    HTTPX2Instrumentor,
    HTTPXInstrumentor,
    OpenAIInstrumentor,
)
from nexent_autoinstrument.tools.mock.core import Sample
from nexent_autoinstrument.tools.mock.server import MODULES

MESSAGES = [{"role": "user", "content": "hello"}]
TIMED = {"mock_ttft": 0.05, "mock_itl": 0.015, "mock_tokens": 12}  # enough spacing to check rates and gaps
#: The anthropic SDK traces its own calls from 1.x (the ``open_telemetry`` client option).
SDK_TRACES = "open_telemetry" in inspect.signature(anthropic.Anthropic.__init__).parameters


@pytest.fixture
def agent(harness: Harness, caplog: pytest.LogCaptureFixture) -> Iterator[Harness]:
    """Every layer of the agent, recording into ``harness``; no span may be ended twice."""
    layers = [OpenAIInstrumentor(), AnthropicInstrumentor(), HTTPXInstrumentor(), HTTPX2Instrumentor(),
              AioHTTPInstrumentor()]
    for layer in layers:
        layer.instrument(telemetry=harness.telemetry)
    with caplog.at_level(logging.WARNING):
        yield harness
    for layer in layers:
        layer.uninstrument()
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]


def root(mock_llm: Any) -> str:
    return mock_llm.base_url.removesuffix("/v1")


def count(harness: Harness, model: str, operation: str, outcome: str) -> float:
    return harness.value("llm_request_duration_seconds_count", model=model, operation=operation, outcome=outcome)


# -- raw httpx/httpx2: each protocol's bytes, against the server's truth --------------------------

#: Every route of the registry that the mock LLM has a client's sample request for (openai's are
#: tested through its SDK and raw in test_httpx): "protocol", or "protocol-operation" when it has
#: several routes -> (operation, sample). A new protocol with a mock module is covered here.
RAW: dict[str, tuple[str, Sample]] = {
    (name if len(samples) == 1 else f"{name}-{operation}"): (operation, sample)
    for name, module in MODULES.items() if (samples := getattr(module, "SAMPLES", None))
    for operation, sample in samples.items()}


def test_the_mock_serves_every_route_of_the_registry_with_a_sample() -> None:
    """What the raw tests above cover is every route of every protocol (openai's: test_httpx)."""
    for protocol in PROTOCOLS:
        module = MODULES[protocol.name]
        assert {route.operation for route in protocol.routes} <= set(module.HANDLERS)
        if protocol.name != "openai":
            assert set(module.SAMPLES) == {route.operation for route in protocol.routes}


def raw_request(mock_llm: Any, protocol: str, stream: bool, **mock: Any) -> tuple[str, dict[str, Any]]:
    path, body = RAW[protocol][1].request(stream, **mock)
    return root(mock_llm) + path, body


def between(sent: list[float], received: list[float], slack: float) -> tuple[float, float]:
    """The least and the most a rate from the first token to the last can be, when each token
    arrived after the server sent it and before the client had it (no upper bound when the
    server sent the last token before the client had the first: a late reader)."""
    shortest = sent[-1] - received[0] - slack
    return (len(sent) - 1) / (received[-1] - sent[0] + slack), \
        (len(sent) - 1) / shortest if shortest > 0 else float("inf")


@pytest.mark.parametrize("library", ["httpx", "httpx2"])
@pytest.mark.parametrize("protocol", list(RAW))
def test_raw_stream_is_measured_as_the_server_sent_it(agent: Harness, mock_llm: Any, protocol: str,
                                                      library: str) -> None:
    httpx = importlib.import_module(library)
    label = uuid.uuid4().hex
    content = [f"w{index:02d} " for index in range(12)]  # one token each, easy to find in a line
    url, body = raw_request(mock_llm, protocol, True, mock_label=label, mock_content=content, **TIMED)
    received = []  # when the client had each token's line: the latest the agent can have timed it
    with httpx.Client() as client:
        before = time.perf_counter()  # the call starts after this, and before the server has it
        with client.stream("POST", url, json=body) as response:
            for line in response.iter_lines():
                if re.search(r"w\d\d ", line):
                    received.append(time.perf_counter())
    timeline = mock_llm.timelines[label]
    sent = timeline["tokens"]
    operation, sample = RAW[protocol]
    provider, model = sample.provider, sample.model
    span = agent.llm_span()
    attrs = span.attributes
    assert received and attrs["llm.stream.outcome"] == "completed" and attrs["llm.stream"] is True
    assert (attrs["gen_ai.provider.name"], attrs["gen_ai.operation.name"], attrs["gen_ai.request.model"]) == \
        (provider, operation, model)
    assert attrs.get("gen_ai.response.model") == sample.response_model and attrs["llm.usage.source"] == "api"
    offsets = [offset / 1e6 for offset in decode_offsets(attrs["llm.token.offsets"])]
    assert attrs["gen_ai.usage.output_tokens"] == len(sent) == len(received) == len(offsets) == 12
    assert attrs["gen_ai.usage.input_tokens"] > 0 and len(attrs["gen_ai.response.finish_reasons"]) == 1
    # Each token was timed after the server sent it and before the client had its line, whatever
    # the machine's load. The call's start is unknown (after ``before``, before the server had the
    # request), so there must be one start that puts every token's offset within those bounds.
    slack = 0.001  # offsets are whole microseconds; the mock stamps a token just before its write
    earliest = max([before] + [s - offset for s, offset in zip(sent, offsets, strict=True)])
    latest = min([timeline["arrived"]] + [r - offset for r, offset in zip(received, offsets, strict=True)])
    assert earliest <= latest + slack
    assert attrs["llm.time_to_first_token"] == pytest.approx(offsets[0], abs=1e-5)
    # A gap between two timed tokens lies between the next send after this receipt and the next
    # receipt after this send; the median gap and the rate follow (the agent's rate is the tokens
    # over the mean timed gap). A chunk that waited for a busy reader is left out of both.
    lower = [s1 - r0 for r0, s1 in zip(received, sent[1:], strict=False)]
    upper = [r1 - s0 for s0, r1 in zip(sent, received[1:], strict=False)]
    # (On a busy machine every read after the first may find its chunks waiting: then no two
    # consecutive tokens were timed, and there is no rate and no gap at all.)
    rate, p50 = attrs.get("llm.token_generation_rate"), attrs.get("llm.inter_token_latency.p50")
    if attrs["llm.stream.waiting_chunks"] == 0:
        assert rate is not None and p50 is not None
        least, most = between(sent, received, slack)
        assert least <= rate <= most
        assert sorted(lower)[5] - slack <= p50 <= sorted(upper)[5] + slack
    else:
        assert (rate is None) == (p50 is None)
        if rate is not None:
            assert 1 / (max(upper) + slack) <= rate and min(lower) - slack <= p50 <= max(upper) + slack
    assert count(agent, model, operation, "completed") == 1
    assert not [s.name for s in agent.spans() if s.parent and s.parent.span_id == agent.llm_span().context.span_id]
    assert attrs["http.response.status_code"] == 200  # (one attempt that succeeded: no HTTP span of its own)


@pytest.mark.parametrize("protocol", list(RAW))
def test_raw_whole_answer(agent: Harness, mock_llm: Any, protocol: str) -> None:
    import httpx

    url, body = raw_request(mock_llm, protocol, False)
    answer = httpx.post(url, json=body).json()
    attrs = agent.llm_span().attributes
    assert attrs["llm.stream.outcome"] == "completed" and attrs["llm.stream"] is False
    assert attrs["gen_ai.usage.output_tokens"] == 10 and attrs["llm.usage.source"] == "api"
    assert "llm.time_to_first_token" not in attrs and answer


def test_ollama_streams_unless_told_not_to(agent: Harness, mock_llm: Any) -> None:
    import httpx

    with httpx.stream("POST", root(mock_llm) + "/api/chat", json={"model": "llama-test", "messages": MESSAGES}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        r.read()
    attrs = agent.llm_span().attributes
    assert attrs["llm.stream"] is True and len(decode_offsets(attrs["llm.token.offsets"])) == 10


@pytest.mark.parametrize("protocol", list(RAW))
def test_raw_errors(agent: Harness, mock_llm: Any, protocol: str) -> None:
    import httpx

    operation, sample = RAW[protocol]
    model = sample.model
    with httpx.Client() as client:
        for status in (429, 500):
            url, body = raw_request(mock_llm, protocol, True, mock_error=status)
            assert client.post(url, json=body).status_code == status
        url, body = raw_request(mock_llm, protocol, True, mock_drop_after=3)
        with pytest.raises(httpx.RemoteProtocolError), client.stream("POST", url, json=body) as response:
            response.read()
        url, body = raw_request(mock_llm, protocol, True, mock_error_event=2)  # an error event mid-stream
        with client.stream("POST", url, json=body) as response:
            response.read()
    errors = sorted(s.attributes["error.type"] for s in agent.llm_spans())
    assert errors == sorted(["429", "500", "RemoteProtocolError", sample.stream_error])
    assert all(s.attributes["llm.stream.outcome"] == "error" for s in agent.llm_spans())
    assert count(agent, model, operation, "error") == 4
    assert agent.value("llm_error_count_total", model=model, operation=operation, error_type="429") == 1


def test_ollama_reports_its_own_timings_beside_ours(agent: Harness, mock_llm: Any) -> None:
    """The server's decode rate and phases go on the span: a ground truth beside the agent's rate."""
    import httpx

    label = uuid.uuid4().hex
    content = [f"w{index:02d} " for index in range(12)]  # one token each, easy to find in a line
    url, body = raw_request(mock_llm, "ollama-chat", True, mock_load=0.02, mock_label=label, mock_content=content,
                            **TIMED)
    received, lines = [], []  # when the client had each token's line; the lines
    with httpx.Client() as client, client.stream("POST", url, json=body) as response:
        for line in response.iter_lines():
            if re.search(r"w\d\d ", line):
                received.append(time.perf_counter())
            if line:
                lines.append(line)
    final = json.loads(lines[-1])
    attrs = agent.llm_span().attributes
    sent = mock_llm.timelines[label]["tokens"]
    assert len(sent) == len(received) == final["eval_count"] == 12
    assert attrs["llm.server.eval_duration"] == final["eval_duration"] / 1e9
    assert attrs["llm.server.load_duration"] == final["load_duration"] / 1e9 == 0.02
    assert attrs["llm.server.prompt_eval_duration"] == final["prompt_eval_duration"] / 1e9
    assert attrs["llm.server.total_duration"] == final["total_duration"] / 1e9
    assert attrs["llm.server.token_generation_rate"] == final["eval_count"] / (final["eval_duration"] / 1e9)
    # The server's rate is its own sends' (11 gaps from the first to the last); ours is the same
    # tokens as they reached us. On a busy machine the two may differ by any amount (a reader
    # descheduled mid-stream delays some arrivals), but each token reached us after the server sent
    # it and before we had its line: what holds at any speed.
    slack = 0.001  # offsets are whole microseconds; the mock stamps a token just before its write
    least, most = between(sent, received, slack)
    server_rate = attrs["llm.server.token_generation_rate"]
    assert least <= server_rate <= most  # (the server's own stamps lie between our two)
    rate = attrs.get("llm.token_generation_rate")
    if attrs["llm.stream.waiting_chunks"] == 0:  # every token timed on its own: first to last
        assert rate is not None and least <= rate <= most
    elif rate is not None:  # some came bundled: the rate rests on the gaps that were timed
        upper = [r1 - s0 for s0, r1 in zip(sent, received[1:], strict=False)]
        assert 1 / (max(upper) + slack) <= rate


def test_a_last_ndjson_line_without_its_line_end_is_read(harness: Harness) -> None:
    """Exchange-level: Ollama ends its lines, but a proxy may not; the final counts still count."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = (b'{"model":"m","message":{"content":"hi"},"done":false}\n'
                    b'{"model":"m","message":{"content":""},"done":true,"eval_count":7,"prompt_eval_count":3}')
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    layer = HTTPXInstrumentor()
    layer.instrument(telemetry=harness.telemetry)
    try:
        httpx.post(f"http://127.0.0.1:{server.server_address[1]}/api/chat", json={"model": "m"})
    finally:
        layer.uninstrument()
        server.shutdown()
    attrs = harness.llm_span().attributes
    assert (attrs["gen_ai.usage.output_tokens"], attrs["gen_ai.usage.input_tokens"]) == (7, 3)
    assert attrs["llm.stream.outcome"] == "completed"


# -- the SDKs: every exit path ---------------------------------------------------------------------

def anthropic_client(mock_llm: Any, harness: Harness, traced: bool, **options: Any) -> Any:
    if SDK_TRACES:  # the SDK's own tracing, into the test's provider, or off
        options["open_telemetry"] = {"tracer_provider": harness.provider} if traced else False
    options.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=root(mock_llm), api_key="sk-ant-test", **options)


def anthropic_stream(mock_llm: Any, harness: Harness, traced: bool = False, **mock: Any) -> Any:
    return anthropic_client(mock_llm, harness, traced).messages.create(
        model="claude-test", max_tokens=64, messages=MESSAGES, stream=True, extra_body=mock or None)


def ollama_stream(mock_llm: Any, harness: Harness, **mock: Any) -> Any:
    return ollama.Client(host=root(mock_llm)).chat(model="llama-test", messages=MESSAGES, stream=True, options=mock)


@functools.cache
def gemini_client(mock_llm: Any) -> Any:
    """One client per server: a dropped ``genai.Client`` closes its HTTP client, under its streams."""
    return genai.Client(api_key="test", http_options=genai_types.HttpOptions(base_url=root(mock_llm),
                                                                             api_version="v1beta"))


def gemini_config(**mock: Any) -> Any:
    return genai_types.GenerateContentConfig(http_options=genai_types.HttpOptions(extra_body=mock)) if mock else None


def gemini_stream(mock_llm: Any, harness: Harness, **mock: Any) -> Any:
    return gemini_client(mock_llm).models.generate_content_stream(model="gemini-test", contents="hello",
                                                                 config=gemini_config(**mock))


def cohere_stream(mock_llm: Any, harness: Harness, **mock: Any) -> Any:
    return cohere.ClientV2(api_key="test", base_url=root(mock_llm)).chat_stream(
        model="command-test", messages=MESSAGES,
        request_options={"additional_body_parameters": mock, "max_retries": 0})


#: SDK -> (a stream of a long answer, its model, operation)
SDK_STREAMS: dict[str, tuple[Callable[..., Any], str, str]] = {
    "anthropic": (anthropic_stream, "claude-test", "chat"),
    "anthropic-traced": (lambda m, h, **mock: anthropic_stream(m, h, True, **mock), "claude-test", "chat"),
    "ollama": (ollama_stream, "llama-test", "chat"),
    "gemini": (gemini_stream, "gemini-test", "generate_content"),
    "cohere": (cohere_stream, "command-test", "chat"),
}


def consumed(stream: Any) -> None:
    assert len(list(stream)) > 10


def break_then_close(stream: Any) -> None:
    for index, _ in enumerate(stream):
        if index == 4:  # (past the first content: Anthropic's first events carry none)
            break
    stream.close()


def break_inside_with(stream: Any) -> None:
    with stream if hasattr(stream, "__enter__") else contextlib.closing(stream):
        for index, _ in enumerate(stream):
            if index == 4:
                break


def exception_in_the_loop_body(stream: Any) -> None:
    with contextlib.suppress(ValueError):
        for index, _ in enumerate(stream):
            if index == 4:
                raise ValueError("the caller's own bug")


def break_then_drop(stream: Any) -> None:
    for index, _ in enumerate(stream):
        if index == 4:
            break
    del stream
    gc.collect()


EXITS: dict[str, tuple[Callable[[Any], None], str]] = {
    "consumed": (consumed, "completed"), "break_then_close": (break_then_close, "closed_early"),
    "break_inside_with": (break_inside_with, "closed_early"),
    "exception_in_the_loop_body": (exception_in_the_loop_body, "closed_early"),
    "break_then_drop": (break_then_drop, "closed_early"),
}


@pytest.mark.parametrize("exit_path", list(EXITS))
@pytest.mark.parametrize("sdk", list(SDK_STREAMS))
def test_sdk_stream_exits(agent: Harness, mock_llm: Any, sdk: str, exit_path: str) -> None:
    if sdk == "anthropic-traced" and not SDK_TRACES:
        pytest.skip(f"anthropic {anthropic.__version__} does not trace its calls")
    make, model, operation = SDK_STREAMS[sdk]
    leave, outcome = EXITS[exit_path]
    leave(make(mock_llm, agent, mock_tokens=30))
    attrs = wait_for_llm_span(agent).attributes
    assert attrs["llm.stream.outcome"] == outcome
    assert attrs["llm.time_to_first_token"] > 0
    assert count(agent, model, operation, outcome) == 1  # once, though the call also went over httpx
    if outcome == "completed":
        assert attrs["gen_ai.usage.output_tokens"] == 30 and attrs["llm.usage.source"] == "api"
    else:
        assert attrs["llm.usage.source"] == "estimated" and attrs["gen_ai.usage.output_tokens"] < 30


def test_anthropic_stream_dropped_unread(agent: Harness, mock_llm: Any) -> None:
    anthropic_stream(mock_llm, agent)  # (dropped at once)
    gc.collect()
    assert wait_for_llm_span(agent).attributes["llm.stream.outcome"] == "abandoned"


@pytest.mark.parametrize("sdk", ["anthropic", "ollama", "gemini", "cohere"])
def test_sdk_errors(agent: Harness, mock_llm: Any, sdk: str) -> None:
    make, model, operation = SDK_STREAMS[sdk]
    raised = []
    for mock in ({"mock_error": 429}, {"mock_error": 500}, {"mock_drop_after": 3}, {"mock_error_event": 2}):
        try:
            list(make(mock_llm, agent, **mock))
        except Exception as error:
            raised.append(type(error).__name__)
    assert len(raised) == (3 if sdk == "cohere" else 4)  # (cohere yields an error event, it does not raise)
    spans = agent.llm_spans()
    assert len(spans) == 4 and {s.attributes["llm.stream.outcome"] for s in spans} == {"error"}
    assert count(agent, model, operation, "error") == 4
    error_types = [s.attributes["error.type"] for s in spans]
    if sdk == "anthropic":  # the SDK layer names the SDK's exception
        assert error_types[:2] == raised[:2] == ["RateLimitError", "InternalServerError"]
    else:  # measured from the bytes: the status, or the stream's own error
        assert error_types[:2] == ["429", "500"]


def test_anthropic_whole_answers_helpers_and_raw_responses(agent: Harness, mock_llm: Any) -> None:
    client = anthropic_client(mock_llm, agent, traced=False)
    message = client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES)
    with client.messages.stream(model="claude-test", max_tokens=64, messages=MESSAGES) as helper:
        text = "".join(helper.text_stream)
        final = helper.get_final_message()
    raw = client.messages.with_raw_response.create(model="claude-test", max_tokens=64, messages=MESSAGES)
    with client.messages.with_streaming_response.create(model="claude-test", max_tokens=64, messages=MESSAGES,
                                                        stream=True) as streamed:
        lines = list(streamed.iter_lines())
    tools = client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES, stream=True,
                                   extra_body={"mock_tool_call": True, "mock_reasoning": "let me think"})
    kinds = [event.type for event in tools]
    assert message.usage.output_tokens == 10 and text == final.content[0].text and raw.parse().id and lines
    assert "content_block_delta" in kinds
    spans = agent.llm_spans()
    assert len(spans) == 5 and count(agent, "claude-test", "chat", "completed") == 5
    by_stream = {s.attributes["llm.stream"]: s.attributes for s in spans}
    assert by_stream[False]["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert by_stream[False]["gen_ai.usage.output_tokens"] == 10
    thought = spans[-1].attributes  # thinking and tool-input deltas are content: 3 + 6 chunks
    assert thought["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert len(decode_offsets(thought["llm.token.offsets"])) == 9


def test_anthropic_retries_are_one_call(agent: Harness, mock_llm: Any) -> None:
    client = anthropic_client(mock_llm, agent, traced=False, max_retries=2)
    client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES, extra_body={"mock_fail_attempts": 2})
    llm = agent.llm_span()
    attempts = [s for s in agent.spans() if s.parent and s.parent.span_id == llm.context.span_id]
    assert [a.attributes["http.response.status_code"] for a in attempts] == [503, 503, 200]
    assert llm.attributes["llm.request.retries"] == 2 and llm.attributes["anthropic.request.id"].startswith("req_")


@pytest.mark.skipif(not SDK_TRACES, reason="this anthropic release does not trace its calls")
def test_anthropic_own_span_is_adopted_not_duplicated(agent: Harness, mock_llm: Any) -> None:
    """With the SDK's tracing on, each call keeps the SDK's one span; the agent adds its timing to
    it (the SDK's own attributes win where both have one) and records the metrics."""
    client = anthropic_client(mock_llm, agent, traced=True)
    consumed(client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES, stream=True,
                                    extra_body={"mock_tokens": 30}))
    client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES)
    with client.messages.stream(model="claude-test", max_tokens=64, messages=MESSAGES) as helper:
        helper.until_done()
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES, extra_body={"mock_error": 429})
    spans = agent.llm_spans()
    assert [s.name for s in spans] == ["anthropic.messages.create"] * 4
    assert {s.instrumentation_scope.name for s in spans} == {"com.anthropic.sdk.python"}
    streamed, whole, helper_span, failed = (s.attributes for s in spans)
    for attrs in (streamed, helper_span):
        assert attrs["llm.stream.outcome"] == "completed"
        # A rate needs two consecutive content chunks that each arrived in a read of its own: on a
        # busy machine the reads may find their chunks waiting, and then there may be none.
        assert attrs["llm.token_generation_rate"] > 0 if "llm.token_generation_rate" in attrs \
            else attrs["llm.stream.waiting_chunks"] > 0
        assert "gen_ai.response.time_to_first_chunk" in attrs and "anthropic.message.stop_reason" in attrs
    assert len(decode_offsets(streamed["llm.token.offsets"])) == 30 and streamed["gen_ai.usage.output_tokens"] == 30
    assert whole["llm.stream.outcome"] == "completed" and whole["llm.usage.source"] == "api"
    assert failed["llm.stream.outcome"] == "error" and failed["error.type"] == "rate_limit_error"
    assert count(agent, "claude-test", "chat", "completed") == 3 and count(agent, "claude-test", "chat", "error") == 1
    assert agent.value("llm_error_count_total", model="claude-test", operation="chat",
                       error_type="RateLimitError") == 1  # the metrics keep the agent's error type
    for span in spans:  # nothing nests under the SDK's span (a failed attempt: its HTTP span)
        children = [s for s in agent.spans() if s.parent and s.parent.span_id == span.context.span_id]
        assert [c.name for c in children] == (["POST"] if span.attributes.get("error.type") else [])
    assert spans[0].end_time >= spans[0].start_time + int(streamed["llm.time_to_first_token"] * 1e9)


# -- async -------------------------------------------------------------------------------------------

async def test_async_sdk_streams(agent: Harness, mock_llm: Any) -> None:
    client = anthropic.AsyncAnthropic(base_url=root(mock_llm), api_key="sk-ant-test", max_retries=0)
    chunks = [event async for event in await client.messages.create(
        model="claude-test", max_tokens=64, messages=MESSAGES, stream=True)]
    parts = [part async for part in await ollama.AsyncClient(host=root(mock_llm)).chat(
        model="llama-test", messages=MESSAGES, stream=True)]
    pieces = [piece async for piece in await gemini_client(mock_llm).aio.models.generate_content_stream(
        model="gemini-test", contents="hello")]
    assert chunks and parts and pieces
    spans = agent.llm_spans()
    assert sorted(s.attributes["gen_ai.provider.name"] for s in spans) == ["anthropic", "gcp.gemini", "ollama"]
    for span in spans:
        attrs = span.attributes
        assert attrs["llm.stream.outcome"] == "completed" and len(decode_offsets(attrs["llm.token.offsets"])) == 10
        assert attrs["gen_ai.usage.output_tokens"] == 10


async def test_async_anthropic_break_then_close(agent: Harness, mock_llm: Any) -> None:
    client = anthropic.AsyncAnthropic(base_url=root(mock_llm), api_key="sk-ant-test", max_retries=0)
    stream = await client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES, stream=True,
                                          extra_body={"mock_tokens": 30})
    async for _ in stream:
        break
    await stream.close()
    await asyncio.sleep(0)
    assert agent.llm_span().attributes["llm.stream.outcome"] == "closed_early"


# -- the dashboard ---------------------------------------------------------------------------------

def test_the_dashboard_is_provider_independent(agent: Harness, mock_llm: Any) -> None:
    """The dashboard selects series by service and model only, and every provider's calls give
    the same series (``model``, ``operation``...): its model variable lists them all."""
    import re
    from pathlib import Path

    import httpx

    dashboard = json.loads((Path(__file__).parents[1] / "docker/grafana/dashboards/llm-performance.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    queries += [variable["query"]["query"] for variable in dashboard["templating"]["list"]]
    matched = {label for query in queries for label in re.findall(r"(\w+)\s*=~", query)}
    assert matched == {"service", "model"}
    for protocol in RAW:
        url, body = raw_request(mock_llm, protocol, False)
        httpx.post(url, json=body)
    models = {sample.labels["model"]: set(sample.labels) for metric in agent.registry.collect()
              if metric.name == "llm_request_duration_seconds" for sample in metric.samples
              if sample.name.endswith("_count")}
    assert set(models) == {sample.model for _, sample in RAW.values()}
    assert all(labels == {"model", "operation", "outcome"} for labels in models.values())

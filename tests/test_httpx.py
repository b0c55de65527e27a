"""The httpx and httpx2 layer, against real loopback servers, sync and async."""

from __future__ import annotations

import asyncio
import gc
import importlib
import itertools
import json
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import format_span_id

from nexent_autoinstrument import lifecycle
from nexent_autoinstrument.adapters.endpoints import ENDPOINTS
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.instrumentors.body import MAX_GZIP_HEADER, Inflate
from nexent_autoinstrument.instrumentors.exchange import header_values
from nexent_autoinstrument.instrumentors.otel import HTTPX2Instrumentor, HTTPXInstrumentor, OpenAIInstrumentor
from nexent_autoinstrument.redaction import redact_url

LIBRARIES = ["httpx", "httpx2"]
CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def instrumented(agent: Any) -> Any:
    return agent


@pytest.fixture(scope="module")
def plain_server() -> Iterator[str]:
    """A non-LLM HTTP server that echoes the headers it received."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps(dict(self.headers)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def http_spans(harness: Any) -> list[Any]:
    return [s for s in harness.spans() if "http.request.method" in (s.attributes or {})]


@pytest.mark.parametrize("library", LIBRARIES)
def test_plain_request_gets_a_client_span_and_propagates_context(instrumented: Any, plain_server: str,
                                                                 library: str) -> None:
    httpx = importlib.import_module(library)
    tracer = instrumented.provider.get_tracer("app")
    with tracer.start_as_current_span("parent"), httpx.Client() as client:
        echoed = client.get(plain_server + "/things?api_key=s3cret&page=2").json()
    (span,) = http_spans(instrumented)
    attrs = span.attributes
    assert span.kind.name == "CLIENT" and span.name == "GET"
    assert attrs["http.request.method"] == "GET" and attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] > 0
    assert attrs["url.full"].endswith("/things?api_key=REDACTED&page=2")
    assert echoed["traceparent"].split("-")[2] == format_span_id(span.context.span_id)
    assert not instrumented.llm_spans()
    assert instrumented.value("http_client_request_duration_seconds_count", http_request_method="GET",
                              http_response_status_code="200", server_address="127.0.0.1") == 1


@pytest.mark.parametrize("library", LIBRARIES)
def test_baggage_is_propagated(instrumented: Any, plain_server: str, library: str) -> None:
    from opentelemetry import baggage, context

    httpx = importlib.import_module(library)
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with httpx.Client() as client:
            echoed = client.get(plain_server).json()
    finally:
        context.detach(token)
    assert echoed["baggage"] == "tenant=acme"


def test_redaction_of_credentials_and_secret_parameters() -> None:
    url = "https://user:pa55@api.example.com/v1/x?key=abc&token=t&signature=z&sig=q&model=gpt&page=1"
    assert redact_url(url) == ("https://REDACTED:REDACTED@api.example.com/v1/x?key=REDACTED&token=REDACTED"
                               "&signature=REDACTED&sig=REDACTED&model=gpt&page=1")


@pytest.mark.parametrize("library", LIBRARIES)
def test_headers_found_in_one_pass_are_what_headers_get_gives(library: str) -> None:
    httpx = importlib.import_module(library)
    read = {"content-type", "content-encoding",
            *(name for _, endpoint in ENDPOINTS for name, _, _ in endpoint.response_headers)}
    raw = [("Content-Type", "text/event-stream"), ("X-Request-ID", "req-1"), ("openai-processing-ms", "12"),
           ("Request-Id", "req_anthropic"), ("x-ratelimit-remaining-tokens", "9"), ("date", "today"),
           ("X-RateLimit-Remaining-Tokens", "8"), ("content-encoding", "identity"), ("Set-Cookie", "a=1")]
    headers = httpx.Response(200, headers=raw).headers
    expected = {name: headers.get(name) for name in read if headers.get(name) is not None}
    assert header_values(headers.raw) == expected
    assert {"x-request-id", "request-id", "x-ratelimit-remaining-tokens"} <= set(expected)  # (the case is not a test's)


@pytest.mark.parametrize("library", LIBRARIES)
def test_connection_error_marks_the_span(instrumented: Any, library: str) -> None:
    httpx = importlib.import_module(library)
    from nexent_autoinstrument.tools.net import free_port

    with pytest.raises(httpx.ConnectError), httpx.Client() as client:
        client.get(f"http://127.0.0.1:{free_port()}/")
    (span,) = http_spans(instrumented)
    assert span.status.status_code.name == "ERROR" and span.attributes["error.type"] == "ConnectError"


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_raw_llm_call_that_gets_no_response_is_an_error(instrumented: Any, library: str) -> None:
    """Not a caller that stopped reading: the call failed, with the error the caller got."""
    httpx = importlib.import_module(library)
    from nexent_autoinstrument.tools.net import free_port

    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{free_port()}/v1/chat/completions", json=CHAT)
    attrs = instrumented.llm_span().attributes
    assert attrs["llm.stream.outcome"] == "error" and attrs["error.type"] == "ConnectError"


def test_openai_span_is_the_parent_of_each_attempt_and_counts_once(instrumented: Any, mock_llm: Any) -> None:
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=2)
    client.chat.completions.create(**CHAT, extra_body={"mock_fail_attempts": 2})
    llm = instrumented.llm_span()
    attempts = http_spans(instrumented)
    assert len(attempts) == 3
    assert all(a.parent.span_id == llm.context.span_id for a in attempts)
    assert [a.attributes["http.response.status_code"] for a in attempts] == [503, 503, 200]
    assert llm.attributes["llm.request.retries"] == 2
    assert llm.attributes["openai.request.id"].startswith("req_")
    assert llm.attributes["openai.processing_ms"] == 7.0
    assert llm.attributes["openai.ratelimit.remaining_requests"] == 4999
    assert instrumented.value("llm_request_duration_seconds_count", model="mock-gpt", operation="chat",
                              outcome="completed") == 1
    _, headers, _ = mock_llm.requests[-1]  # (attempt spans are made at the end: the server joins the call)
    assert headers["traceparent"].split("-")[2] == format_span_id(llm.context.span_id)


def test_a_single_successful_attempt_has_no_span_of_its_own(instrumented: Any, mock_llm: Any) -> None:
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=2)
    client.chat.completions.create(**CHAT)
    list(client.chat.completions.create(**CHAT, stream=True))
    assert not http_spans(instrumented)  # the call's span says it all
    assert [s.attributes["http.response.status_code"] for s in instrumented.llm_spans()] == [200, 200]
    assert instrumented.value("http_client_request_duration_seconds_count", http_request_method="POST",
                              http_response_status_code="200", server_address="127.0.0.1") == 2
    _, headers, _ = mock_llm.requests[-1]
    assert headers["traceparent"].split("-")[2] == format_span_id(instrumented.llm_spans()[-1].context.span_id)


def test_every_attempt_has_a_span_on_request(harness_factory: Any, mock_llm: Any) -> None:
    harness = harness_factory(http_attempt_spans="all")  # LLM_HTTP_ATTEMPT_SPANS=all
    layers = [OpenAIInstrumentor(), HTTPXInstrumentor(), HTTPX2Instrumentor()]
    for layer in layers:
        layer.instrument(telemetry=harness.telemetry)
    try:
        client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
        stream = client.chat.completions.create(**CHAT, stream=True)
        assert not http_spans(harness)  # headers are in, the body is not
        list(stream)
    finally:
        for layer in layers:
            layer.uninstrument()
    (attempt,) = http_spans(harness)
    assert attempt.parent.span_id == harness.llm_span().context.span_id
    assert attempt.end_time >= harness.llm_span().start_time
    _, headers, _ = mock_llm.requests[-1]
    assert headers["traceparent"].split("-")[2] == format_span_id(attempt.context.span_id)


def _raw_stream(library: str, base_url: str, reader: str) -> Any:
    httpx = importlib.import_module(library)
    body = {**CHAT, "stream": True}
    with httpx.Client() as client, client.stream("POST", base_url + "/chat/completions", json=body) as response:
        if reader == "iter_lines":
            return list(response.iter_lines())
        if reader == "iter_text":
            return "".join(response.iter_text())
        if reader == "iter_bytes":
            return b"".join(response.iter_bytes())
        return response.read()


async def _raw_stream_async(library: str, base_url: str, reader: str) -> Any:
    httpx = importlib.import_module(library)
    body = {**CHAT, "stream": True}
    async with httpx.AsyncClient() as client, client.stream("POST", base_url + "/chat/completions",
                                                            json=body) as response:
        if reader == "iter_lines":
            return [line async for line in response.aiter_lines()]
        if reader == "iter_text":
            return "".join([text async for text in response.aiter_text()])
        if reader == "iter_bytes":
            return b"".join([part async for part in response.aiter_bytes()])
        return await response.aread()


def _normalize(value: Any) -> str:
    """Chat ids and timestamps differ per request; everything else must be identical."""
    import re

    if isinstance(value, list):
        value = "\n".join(value)
    text = value.decode() if isinstance(value, bytes) else value
    return re.sub(r'"id": ?"[^"]+"|"created": ?\d+', "", text)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("reader", ["iter_lines", "iter_text", "iter_bytes", "read"])
def test_raw_sse_call_is_measured_and_the_user_reads_identical_bytes(
        harness_factory: Any, mock_llm: Any, library: str, reader: str) -> None:
    bare = _raw_stream(library, mock_llm.base_url, reader)
    bare_async = asyncio.run(_raw_stream_async(library, mock_llm.base_url, reader))
    harness = harness_factory()
    instrumentor = HTTPXInstrumentor() if library == "httpx" else HTTPX2Instrumentor()
    instrumentor.instrument(telemetry=harness.telemetry)
    try:
        seen = _raw_stream(library, mock_llm.base_url, reader)
        seen_async = asyncio.run(_raw_stream_async(library, mock_llm.base_url, reader))
    finally:
        instrumentor.uninstrument()
    assert _normalize(seen) == _normalize(bare) and _normalize(seen_async) == _normalize(bare_async)
    assert type(seen) is type(bare)
    llm_spans = harness.llm_spans()
    assert len(llm_spans) == 2
    for span in llm_spans:
        attrs = span.attributes
        assert attrs["llm.stream.outcome"] == "completed" and attrs["llm.stream"] is True
        assert attrs["gen_ai.provider.name"] == "openai_compatible"
        assert len(decode_offsets(attrs["llm.token.offsets"])) == 10 and attrs["llm.time_to_first_token"] > 0
        assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
        assert attrs["http.response.status_code"] == 200
        assert not [s for s in harness.spans() if s.parent and s.parent.span_id == span.context.span_id]


@pytest.mark.parametrize("library", LIBRARIES)
def test_every_event_is_a_chunk_whether_read_from_its_bytes_or_parsed(instrumented: Any, mock_llm: Any,
                                                                      library: str) -> None:
    """Tokens a few ms apart come one read each: after the first, most are plain deltas that the
    byte path recognises without parsing them. Each is still a chunk, as the parsed ones are."""
    httpx = importlib.import_module(library)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "mock_tokens": 12,
            "mock_ttft": 0.01, "mock_itl": 0.005}  # (usage asked for: no text is kept, reads may be plain)
    with httpx.Client() as client, client.stream("POST", mock_llm.base_url + "/chat/completions",
                                                 json=body) as response:
        lines = list(response.iter_lines())
    events = [line for line in lines if line.startswith("data:") and "[DONE]" not in line]
    attrs = instrumented.llm_span().attributes
    assert attrs["llm.stream.chunks"] == len(events) > 12 and len(decode_offsets(attrs["llm.token.offsets"])) == 12


@pytest.mark.parametrize("library", LIBRARIES)
def test_with_content_captured_every_text_of_a_raw_stream_is_kept(harness_factory: Any, mock_llm: Any,
                                                                  library: str) -> None:
    """Where texts are kept, no read is taken whole as plain deltas (that keeps no text): the
    span's output is the whole answer the caller read, however the tokens came."""
    httpx = importlib.import_module(library)
    harness = harness_factory(capture_content=True)
    instrumentor = HTTPXInstrumentor() if library == "httpx" else HTTPX2Instrumentor()
    instrumentor.instrument(telemetry=harness.telemetry)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "mock_tokens": 12,
            "mock_ttft": 0.01, "mock_itl": 0.005}
    try:
        with httpx.Client() as client, client.stream("POST", mock_llm.base_url + "/chat/completions",
                                                     json=body) as response:
            lines = list(response.iter_lines())
    finally:
        instrumentor.uninstrument()
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    answer = "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])
    attrs = harness.llm_span().attributes
    assert len(decode_offsets(attrs["llm.token.offsets"])) == 12
    assert answer and attrs["gen_ai.output.messages"] == answer


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_a_stream_whose_type_says_nothing_is_read_in_its_protocols_framing(instrumented: Any,
                                                                           content_type: str) -> None:
    """A proxy that labels an SSE stream text/plain: the OpenAI protocol's framing (SSE) decides."""
    import httpx

    from scripted_server import Reply, ScriptedServer

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return b"data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode()

    events = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": f"w{i} "}) for i in range(3)),
              chunk({}, "stop"), b"data: [DONE]"]
    with ScriptedServer.running() as server:
        server.reply = Reply(200, content_type, [event + b"\n\n" for event in events], False)
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
        body = httpx.post(url, json={"model": "m", "stream": True, "messages": []}).content
    attrs = instrumented.llm_span().attributes
    assert body == b"".join(event + b"\n\n" for event in events)
    assert attrs["llm.stream.outcome"] == "completed" and len(decode_offsets(attrs["llm.token.offsets"])) == 3
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",) and attrs["llm.stream.chunks"] == 5


def test_a_read_of_many_events_is_read_in_one_pass(instrumented: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything already waiting (a buffering proxy, a fast local server): the server writes the
    whole stream at once, and a read holds all of it (or, as TCP cuts it, a few reads hold it).
    Each event is a chunk, and a read is looked at once to learn a plain delta from, not once per
    event (which made a read of n events cost n times its length); the plain deltas after it are
    told apart by the learned template of their data, each read's in one pass."""
    import httpx

    from nexent_autoinstrument.adapters.sse import PlainReads
    from nexent_autoinstrument.instrumentors.body import EventBody
    from scripted_server import Reply, ScriptedServer

    tries, sorted_events, reads = [], [], []
    learn, sort_events, feed = PlainReads.learn, PlainReads.sort_events, EventBody.feed
    monkeypatch.setattr(EventBody, "feed", lambda self, read: reads.append(len(read)) or feed(self, read))
    monkeypatch.setattr(PlainReads, "learn",
                        lambda self, read, data: tries.append(len(read)) or learn(self, read, data))
    monkeypatch.setattr(PlainReads, "sort_events", lambda self, region: sorted_events.append(sort_events(self, region))
                        or sorted_events[-1])
    event = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,%s}]}\n\n'
    events = [event % b'"delta":{"content":"w "},"finish_reason":null' for _ in range(400)]
    events.append(event % b'"delta":{},"finish_reason":"stop"')
    with ScriptedServer.running() as server:
        server.reply = Reply(200, "text/event-stream", [b"".join(events) + b"data: [DONE]\n\n"], False)
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
        httpx.post(url, json={"model": "m", "stream": True, "messages": []}).raise_for_status()
    attrs = instrumented.llm_span().attributes
    assert attrs["llm.stream.chunks"] == 401 and attrs["gen_ai.usage.output_tokens"] == 400
    assert len(decode_offsets(attrs["llm.token.offsets"])) == 400
    assert attrs["llm.stream.waiting_chunks"] >= 400 - len(reads)  # all but each read's first content
    assert len(tries) <= 1
    # (the plain deltas after the first two contents, which tell the response and the template: one
    # pass per read, none handed on to be parsed; a read that TCP left with one event takes the
    # one-event path)
    counted = sum(count for count, _ in sorted_events)
    assert 398 - len(reads) <= counted <= 398 and len(sorted_events) <= len(reads)
    assert b'"content":"w "' not in b"".join(others for _, others in sorted_events)


def read_raw_stream(reads: Iterator[bytes]) -> bytes:
    """A chat stream served from ``reads`` (each one network read) and read raw with httpx: what
    the caller got."""
    import httpx

    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=reads))
    with httpx.Client(transport=transport) as client, client.stream(
            "POST", "http://llm.test/v1/chat/completions", json={"model": "m", "stream": True}) as response:
        return b"".join(response.iter_raw())


def test_each_read_of_several_events_is_one_arrival(instrumented: Any) -> None:
    """A server (or proxy) that flushes four events at a time, each flush after a pause: the first
    content of each read arrived when the read returned, the rest of the read waited for it (in a
    read of plain deltas alone, and in one that also brings the stream's end)."""

    event = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,%s}]}\n\n'
    role = event % b'"delta":{"role":"assistant","content":""},"finish_reason":null'
    words = [event % b'"delta":{"content":"w%d "},"finish_reason":null' % i for i in range(20)]
    reads = [role, *(b"".join(words[i:i + 4]) for i in range(0, 16, 4)),
             b"".join(words[16:]) + event % b'"delta":{},"finish_reason":"stop"' + b"data: [DONE]\n\n"]

    def paced() -> Iterator[bytes]:
        for read in reads:
            time.sleep(0.02)  # (each read waits for its bytes: an arrival, however slow the machine)
            yield read

    assert read_raw_stream(paced()) == b"".join(reads)
    attrs = instrumented.llm_span().attributes
    assert attrs["llm.stream.chunks"] == 22 and len(decode_offsets(attrs["llm.token.offsets"])) == 20
    assert attrs["llm.stream.waiting_chunks"] == 15  # (five reads: five arrivals)


def test_a_template_of_several_data_lines_never_counts_a_line_alone(instrumented: Any) -> None:
    """A plain delta learned from an event of two data lines: a later event whose second line is
    the same bytes without ``data:`` is another field, its data the first line alone (no JSON),
    never a plain delta, however many come in one read."""

    head = b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"%s"},'
    tail = b'"logprobs":null,"finish_reason":null}]}\n\n'
    role = b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    learned = head % b"hi" + b"\ndata: " + tail
    lookalike = head % b"yo" + b"\n" + tail
    reads = [role, learned, lookalike * 2]
    assert read_raw_stream(iter(reads)) == b"".join(reads)
    attrs = instrumented.llm_span().attributes
    assert attrs["llm.stream.chunks"] == 4 and len(decode_offsets(attrs["llm.token.offsets"])) == 1


@pytest.mark.parametrize("field", [b"data: ", b"data:"], ids=["data-space", "data-no-space"])
def test_reads_of_one_event_after_a_read_of_many_are_recognised_whole(instrumented: Any, field: bytes,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream whose first read brings several events (a server that flushed late) and then one
    event per read: the events of the first read teach the template of an event's data (and of a
    read, as servers write one: ``data: `` and the data), and the first read of one event still
    teaches the template of a read as this server writes it, so the reads after it are
    recognised whole, without splitting them into events."""

    from nexent_autoinstrument.adapters.sse import PlainReads

    whole = []
    matches = PlainReads.matches
    monkeypatch.setattr(PlainReads, "matches", lambda self, read: whole.append(matches(self, read)) or whole[-1])
    event = field + b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,%s}]}'
    event += b"\n\n"
    role = event % b'"delta":{"role":"assistant","content":""},"finish_reason":null'
    words = [event % b'"delta":{"content":"w%d "},"finish_reason":null' % i for i in range(20)]
    reads = [role + b"".join(words[:4]), *words[4:], event % b'"delta":{},"finish_reason":"stop"',
             field + b"[DONE]\n\n"]
    assert read_raw_stream(iter(reads)) == b"".join(reads)  # (each piece of content: one read)
    attrs = instrumented.llm_span().attributes
    assert attrs["llm.stream.chunks"] == 22 and len(decode_offsets(attrs["llm.token.offsets"])) == 20
    assert whole.count(1) >= 15  # (the 16 reads of one content delta but the first, which is learned)


@pytest.mark.parametrize("library", LIBRARIES)
def test_raw_call_equals_what_the_openai_layer_measures(harness_factory: Any, mock_llm: Any, library: str) -> None:
    """The same stream measured by the two layers: same facts, from the same engine."""
    httpx = importlib.import_module(library)
    raw = harness_factory()
    instrumentor = HTTPXInstrumentor() if library == "httpx" else HTTPX2Instrumentor()
    instrumentor.instrument(telemetry=raw.telemetry)
    try:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.5}
        with httpx.Client() as client, client.stream("POST", mock_llm.base_url + "/chat/completions",
                                                     json=body) as response:
            for _ in response.iter_lines():
                pass
    finally:
        instrumentor.uninstrument()
    sdk = harness_factory()
    layers = [OpenAIInstrumentor(), HTTPXInstrumentor(), HTTPX2Instrumentor()]
    for layer in layers:
        layer.instrument(telemetry=sdk.telemetry)
    try:
        client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
        list(client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True},
                                            temperature=0.5))
    finally:
        for layer in layers:
            layer.uninstrument()
    raw_attrs = dict(raw.llm_span().attributes)
    sdk_attrs = {k: v for k, v in sdk.llm_span().attributes.items() if not k.startswith("openai.")}
    timing = {"llm.time_to_first_token", "llm.token_generation_rate", "llm.token.offsets", "server.port",
              "llm.inter_token_latency.p50", "llm.inter_token_latency.p99", "llm.inter_token_latency.max",
              "gen_ai.response.id", "llm.time_to_request_sent", "llm.server_time_to_first_token",
              "llm.time_to_response_headers", "llm.stream.reader_seconds", "llm.connection.reused",
              "gen_ai.response.time_to_first_chunk", "llm.stream.waiting_chunks", "llm.stream.reader_bound"}
    assert set(raw_attrs) ^ set(sdk_attrs) <= timing  # (a gap's figures only where some gap was timed)
    assert {k: v for k, v in raw_attrs.items() if k not in timing} == \
        {k: v for k, v in sdk_attrs.items() if k not in timing}
    assert len(decode_offsets(raw_attrs["llm.token.offsets"])) == 10
    assert len(decode_offsets(sdk_attrs["llm.token.offsets"])) == 10
    for name in ("llm_request_duration_seconds_count", "llm_time_to_first_token_seconds_count"):
        labels = {"model": "mock-gpt", "operation": "chat"}
        if name.startswith("llm_request"):
            labels["outcome"] = "completed"
        assert raw.value(name, **labels) == sdk.value(name, **labels) == 1


@pytest.mark.parametrize("library", LIBRARIES)
def test_raw_json_call_and_http_error(instrumented: Any, mock_llm: Any, library: str) -> None:
    httpx = importlib.import_module(library)
    with httpx.Client() as client:
        ok = client.post(mock_llm.base_url + "/chat/completions", json=CHAT)
        failed = client.post(mock_llm.base_url + "/chat/completions", json={**CHAT, "mock_error": 429})
    assert ok.json()["usage"]["completion_tokens"] == 10 and failed.status_code == 429
    spans = {s.attributes.get("llm.stream.outcome"): s for s in instrumented.llm_spans()}
    assert spans["completed"].attributes["gen_ai.usage.output_tokens"] == 10
    assert spans["error"].attributes["error.type"] == "429"
    assert instrumented.value("llm_error_count_total", model="mock-gpt", operation="chat", error_type="429") == 1


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_call_is_freed_when_the_caller_drops_it_without_the_collector(instrumented: Any, mock_llm: Any,
                                                                         library: str) -> None:
    """Once the caller has its answer and drops the response, what measured the call (its tracker,
    its span, its times, the body's reader) is freed by reference counting: no reference cycle of
    ours holds it for the garbage collector (and httpx's own cycles, a response and its stream,
    hold at most an ended exchange). SDK and raw calls, whole and streamed."""
    from nexent_autoinstrument.tracker import CallTracker

    httpx = importlib.import_module(library)
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test")

    def calls() -> None:
        client.chat.completions.create(**CHAT)
        for _ in client.chat.completions.create(**CHAT, stream=True):
            pass
        with httpx.Client() as raw:
            raw.post(mock_llm.base_url + "/chat/completions", json=CHAT).json()
            with raw.stream("POST", mock_llm.base_url + "/chat/completions", json={**CHAT, "stream": True}) as body:
                for _ in body.iter_lines():
                    pass

    def trackers() -> list[Any]:
        return [o for o in gc.get_objects() if isinstance(o, CallTracker)]

    calls()  # (warm: what is made once)
    gc.collect()
    gc.disable()
    try:
        alive = {id(tracker) for tracker in trackers()}  # (an earlier test's, still held: not these calls')
        calls()
        lifecycle.end_suspended()  # (the SDK's own close leaves its call there a moment, ended)
        left = [tracker for tracker in trackers() if id(tracker) not in alive]
    finally:
        gc.enable()
    assert len(instrumented.llm_spans()) == 8
    assert not left, [referrer for tracker in left for referrer in gc.get_referrers(tracker) if referrer is not left]


def _read_whole_transport(httpx: Any) -> Any:
    """A transport that answers as tests' mocks do: each body given whole, read before the client
    returns (``MockTransport`` with ``content``/``json``, as respx does)."""
    answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}}
    events = b"".join(b'data: {"id":"c2","object":"chat.completion.chunk","created":1,"model":"m","choices":'
                      b'[{"index":0,"delta":{"content":"%d"},"finish_reason":null}]}\n\n' % i for i in range(5))
    events += b"data: [DONE]\n\n"

    def answer_of(request: Any) -> Any:
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events)
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(answer_of)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_body_the_transport_read_whole_is_measured_as_it_comes(instrumented: Any, library: str) -> None:
    """A body read whole by the transport is never read through the agent: its call ends with the
    response, measured from that body, not later when the response is dropped (then as abandoned,
    with nothing read). Sync and async, a whole answer and a stream."""
    httpx = importlib.import_module(library)
    url = "http://llm.test/v1/chat/completions"
    with httpx.Client(transport=_read_whole_transport(httpx)) as client:
        whole = client.post(url, json=CHAT)
        with client.stream("POST", url, json={**CHAT, "stream": True}) as streamed:
            lines = [line for line in streamed.iter_lines() if line]

    async def read_async() -> Any:
        async with httpx.AsyncClient(transport=_read_whole_transport(httpx)) as client:
            response = await client.post(url, json=CHAT)
            async with client.stream("POST", url, json={**CHAT, "stream": True}) as streamed:
                return response, [line async for line in streamed.aiter_lines() if line]

    whole_async, lines_async = asyncio.run(read_async())
    spans = instrumented.llm_spans()  # (while the responses are still held)
    assert whole.json()["usage"]["completion_tokens"] == 7 and whole_async.json() == whole.json()
    assert len(lines) == len(lines_async) == 6
    assert sorted(s.attributes["llm.stream"] for s in spans) == [False, False, True, True]
    for span in spans:
        attributes = span.attributes
        assert attributes["llm.stream.outcome"] == "completed"
        if attributes["llm.stream"]:
            assert attributes["llm.stream.chunks"] == 5 and attributes["gen_ai.response.id"] == "c2"
            assert attributes["llm.stream.waiting_chunks"] == 5  # (all there with the headers: no arrival timed)
        else:
            assert attributes["gen_ai.usage.output_tokens"] == 7 and attributes["gen_ai.response.id"] == "c1"


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_body_a_response_hook_read_is_measured(instrumented: Any, mock_llm: Any, library: str) -> None:
    """A response event hook that reads the body (to log it, or before ``raise_for_status``) reads
    it inside ``send``, before the agent sees the response: the call is measured from that body."""
    httpx = importlib.import_module(library)
    with httpx.Client(event_hooks={"response": [lambda response: response.read()]}) as client:
        whole = client.post(mock_llm.base_url + "/chat/completions", json=CHAT)
        with client.stream("POST", mock_llm.base_url + "/chat/completions", json={**CHAT, "stream": True}) as body:
            lines = [line for line in body.iter_lines() if line.startswith("data: {")]
    spans = {s.attributes["llm.stream"]: s.attributes for s in instrumented.llm_spans()}
    assert whole.json()["usage"]["completion_tokens"] == 10
    assert len(lines) == 12  # (the role's chunk, ten tokens, the finish)
    assert spans[False]["gen_ai.usage.output_tokens"] == 10 and spans[False]["llm.stream.outcome"] == "completed"
    assert spans[True]["llm.stream.chunks"] == len(lines) and spans[True]["llm.stream.outcome"] == "completed"


def test_an_sdk_call_whose_body_the_transport_read_whole_ends_its_attempt_with_it(harness_factory: Any) -> None:
    """The SDK measures such a call from what it parses; the HTTP attempt ends with the response."""
    from openai import _base_client

    httpx = getattr(_base_client, "httpx2", None) or _base_client.httpx  # the SDK's own: httpx2 from openai 3.x
    harness = harness_factory(http_attempt_spans="all")
    layers = [OpenAIInstrumentor(), HTTPXInstrumentor(), HTTPX2Instrumentor()]
    for layer in layers:
        layer.instrument(telemetry=harness.telemetry)
    try:
        client = openai.OpenAI(base_url="http://llm.test/v1", api_key="sk-test",
                               http_client=httpx.Client(transport=_read_whole_transport(httpx)))
        answer = client.chat.completions.create(**CHAT)
        chunks = list(client.chat.completions.create(**CHAT, stream=True))
        attempts_at_return = len(http_spans(harness))
    finally:
        for layer in layers:
            layer.uninstrument()
    assert answer.usage is not None and answer.usage.completion_tokens == 7 and len(chunks) == 5
    assert attempts_at_return == 2
    whole, streamed = sorted(harness.llm_spans(), key=lambda s: s.attributes["llm.stream"])
    assert whole.attributes["gen_ai.usage.output_tokens"] == 7
    assert streamed.attributes["llm.stream.chunks"] == 5 and streamed.attributes["llm.stream.outcome"] == "completed"


@pytest.mark.parametrize("library", LIBRARIES)
def test_raw_stream_closed_early_and_dropped(instrumented: Any, mock_llm: Any, library: str) -> None:
    httpx = importlib.import_module(library)
    with httpx.Client() as client:
        with client.stream("POST", mock_llm.base_url + "/chat/completions",
                           json={**CHAT, "stream": True, "mock_tokens": 50}) as response:
            for line in response.iter_lines():
                if "the" in line:
                    break
        with pytest.raises(httpx.RemoteProtocolError), client.stream(
                "POST", mock_llm.base_url + "/chat/completions",
                json={**CHAT, "stream": True, "mock_drop_after": 2}) as response:
            for _ in response.iter_lines():
                pass
    outcomes = sorted(s.attributes["llm.stream.outcome"] for s in instrumented.llm_spans())
    assert outcomes == ["closed_early", "error"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_no_duplicate_http_spans_with_the_official_httpx_instrumentation(instrumented: Any, mock_llm: Any,
                                                                         plain_server: str, library: str) -> None:
    from opentelemetry.instrumentation import httpx as official_module

    httpx = importlib.import_module(library)
    official = getattr(official_module, {"httpx": "HTTPXClientInstrumentor",
                                         "httpx2": "HTTPX2ClientInstrumentor"}[library])()
    official.instrument(tracer_provider=instrumented.provider)
    try:
        with httpx.Client() as client:
            client.get(plain_server)
            with client.stream("POST", mock_llm.base_url + "/chat/completions",
                               json={**CHAT, "stream": True}) as response:
                response.read()
    finally:
        official.uninstrument()
    http = [s for s in instrumented.spans()
            if s.kind.name == "CLIENT" and not s.attributes.get("gen_ai.operation.name")]
    assert len(http) == 2  # one per request: theirs
    assert all("http.client.library" not in s.attributes for s in http)
    llm = instrumented.llm_span()
    assert llm.attributes["llm.stream.outcome"] == "completed"  # we still measure LLM calls
    assert [s.parent.span_id for s in http if s.parent] == [llm.context.span_id]  # theirs nests under it


def test_uninstrument_restores_send() -> None:
    import httpx
    import wrapt

    HTTPXInstrumentor().instrument()
    assert isinstance(httpx.Client.__dict__["send"], wrapt.FunctionWrapper)
    HTTPXInstrumentor().uninstrument()
    assert not isinstance(httpx.Client.__dict__["send"], wrapt.FunctionWrapper)
    assert not isinstance(httpx.AsyncClient.__dict__["send"], wrapt.FunctionWrapper)


def test_what_the_sdk_swallows_after_the_body_is_not_an_error(harness_factory: Any) -> None:
    """An async SDK stream over a transport that cannot be read twice (``MockTransport``): after
    ``[DONE]`` the SDK drains the body again and swallows the ``StreamConsumed`` that raises. The
    caller saw a clean stream, so the call and its HTTP attempt are clean too."""
    from openai import _base_client

    httpx = getattr(_base_client, "httpx2", None) or _base_client.httpx  # the SDK's own: httpx2 from openai 3.x
    events = [b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
              b'"delta":{"content":"x"},"finish_reason":null}]}\n\n'] * 3 + [b"data: [DONE]\n\n"]

    async def body() -> Any:
        for event in events:
            yield event

    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=body()))
    harness = harness_factory(http_attempt_spans="all")
    layers = [OpenAIInstrumentor(), HTTPXInstrumentor(), HTTPX2Instrumentor()]
    for layer in layers:
        layer.instrument(telemetry=harness.telemetry)
    try:
        async def consume() -> int:
            client = openai.AsyncOpenAI(base_url="http://mock.invalid/v1", api_key="sk-test",
                                        http_client=httpx.AsyncClient(transport=transport))
            return len([chunk async for chunk in await client.chat.completions.create(**CHAT, stream=True)])

        assert asyncio.run(consume()) == 3
    finally:
        for layer in layers:
            layer.uninstrument()
    (attempt,) = http_spans(harness)
    assert "error.type" not in attempt.attributes and attempt.status.status_code.name != "ERROR"
    span = harness.llm_span()
    assert span.attributes["llm.stream.outcome"] == "completed" and "error.type" not in span.attributes
    assert harness.value("nexent_autoinstrument_internal_errors_total") in (None, 0)


async def _read_one_and_stop(httpx: Any, reader: str, stop: str) -> list[str]:
    """What a caller sees when it reads one piece of a body and stops (``aclose``, or ``athrow``
    an error): the order in which the transport's reader and the response close."""
    seen: list[str] = []

    class Body(httpx.AsyncByteStream):  # type: ignore[name-defined,misc]
        async def __aiter__(self) -> Any:
            try:
                for index in range(5):
                    yield b'data: {"choices":[{"index":0,"delta":{"content":"%d"}}]}\n\n' % index
            finally:
                seen.append("transport reader closed")

        async def aclose(self) -> None:
            seen.append("body closed")

    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Body()))
    async with httpx.AsyncClient(transport=transport) as client, client.stream(
            "POST", "http://mock.invalid/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        pieces = response.stream.__aiter__() if reader == "stream" else getattr(response, reader)()
        await pieces.__anext__()
        seen.append("stopping")
        try:
            await (pieces.aclose() if stop == "aclose" else pieces.athrow(ValueError("stop")))
        except ValueError:
            seen.append("raised")
        seen.append("stopped")
    seen.append("response closed")
    await asyncio.sleep(0.01)  # (anything left to a finalizer has run by now)
    return seen


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(("reader", "stop"), [("aiter_raw", "aclose"), ("aiter_lines", "aclose"),
                                              ("aiter_raw", "athrow"), ("stream", "aclose"), ("stream", "athrow")])
def test_an_async_body_left_early_closes_what_it_read_when_it_would_without_the_agent(
        harness_factory: Any, library: str, reader: str, stop: str) -> None:
    """httpx2 closes the reader it got from the body as soon as its caller stops, and the reader
    closes the transport's own at once; httpx leaves them to the collector. Either way, the
    caller sees every close happen exactly when it happens without the agent, and the same error."""
    httpx = importlib.import_module(library)
    bare = asyncio.run(_read_one_and_stop(httpx, reader, stop))
    harness = harness_factory()
    instrumentor = HTTPXInstrumentor() if library == "httpx" else HTTPX2Instrumentor()
    instrumentor.instrument(telemetry=harness.telemetry)
    try:
        seen = asyncio.run(_read_one_and_stop(httpx, reader, stop))
    finally:
        instrumentor.uninstrument()
    assert seen == bare
    if library == "httpx2" and reader != "aiter_lines":
        assert bare.index("transport reader closed") < bare.index("stopped")  # (what the test is about)
    assert harness.llm_span().attributes["llm.stream.outcome"] == "closed_early"


@pytest.mark.parametrize("library", LIBRARIES)
def test_event_hooks_see_the_request_body_of_its_own_type(instrumented: Any, mock_llm: Any, library: str) -> None:
    """The agent watches an LLM request's body while it is written; a request hook sees it then,
    and it is still the library's ``ByteStream``, with the same bytes."""
    module = importlib.import_module(library)
    seen: list[Any] = []

    def hook(request: Any) -> None:
        seen.append((isinstance(request.stream, module.ByteStream), b"".join(request.stream)))

    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    with module.Client(event_hooks={"request": [hook]}) as client:
        client.post(mock_llm.base_url + "/chat/completions", json=body)
    assert seen == [(True, module.Request("POST", "http://x", json=body).content)]
    assert instrumented.llm_span().attributes["llm.stream.outcome"] == "completed"


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_custom_method_is_other_on_the_span(instrumented: Any, plain_server: str, library: str) -> None:
    """The conventions' known methods name a span; any other is ``_OTHER``, named ``HTTP``, with the
    original (bounded) beside it: a caller's custom methods make no attribute values of their own."""
    module = importlib.import_module(library)
    with module.Client() as client:
        client.request("PURGE", plain_server)
        client.request("GET", plain_server)
    (custom,) = [s for s in instrumented.spans() if s.name == "HTTP"]
    assert custom.attributes["http.request.method"] == "_OTHER"
    assert custom.attributes["http.request.method_original"] == "PURGE"
    assert [s.attributes["http.request.method"] for s in instrumented.spans() if s.name == "GET"] == ["GET"]


# -- compressed bodies -----------------------------------------------------------------------------


def gzip_member(events: list[bytes], name: bytes | None, comment: bytes | None, extra: bytes | None,
                header_crc: bool, crc: int | None = None) -> bytes:
    """A gzip member (RFC 1952) with the optional header fields given, its data flushed after each
    event as a streaming server flushes it, and its CRC-32 (``crc``, if given, instead)."""
    flags = (2 if header_crc else 0) | (4 if extra is not None else 0) | (8 if name is not None else 0) | (
        16 if comment is not None else 0)
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    if extra is not None:
        header += len(extra).to_bytes(2, "little") + extra
    header += b"".join(field + b"\0" for field in (name, comment) if field is not None)
    if header_crc:
        header += (zlib.crc32(header) & 0xFFFF).to_bytes(2, "little")
    packer = zlib.compressobj(wbits=-15)
    data = b"".join(packer.compress(event) + packer.flush(zlib.Z_SYNC_FLUSH) for event in events) + packer.flush()
    payload = b"".join(events)
    check = zlib.crc32(payload) if crc is None else crc
    return header + data + check.to_bytes(4, "little") + (len(payload) % 2**32).to_bytes(4, "little")


def inflated(encoding: str, body: bytes, cuts: list[int]) -> bytes:
    """``body`` decoded by the agent's ``Inflate``, read in the pieces ``cuts`` make."""
    inflate = Inflate(encoding)
    edges = [0, *sorted(cut % (len(body) + 1) for cut in cuts), len(body)]
    return b"".join(inflate.decompress(body[start:end]) for start, end in itertools.pairwise(edges))


_field = st.one_of(st.none(), st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"")))


@given(events=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=8), name=_field,
       comment=_field, extra=st.one_of(st.none(), st.binary(max_size=40)), header_crc=st.booleans(),
       cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=12))
def test_a_gzip_body_decodes_to_what_zlib_gives_in_any_reads(events: list[bytes], name: bytes | None,
                                                               comment: bytes | None, extra: bytes | None,
                                                               header_crc: bool, cuts: list[int]) -> None:
    """Every optional header field, the header cut anywhere (a body sent a byte per HTTP chunk)."""
    body = gzip_member(events, name, comment, extra, header_crc)
    assert inflated("gzip", body, cuts) == zlib.decompressobj(31).decompress(body) == b"".join(events)


def test_a_gzip_body_is_decoded_without_checking_its_crc_which_the_callers_library_checks() -> None:
    body = gzip_member([b"data: one\n\n", b"data: two\n\n"], b"name", None, None, False, crc=0)
    with pytest.raises(zlib.error):
        zlib.decompressobj(31).decompress(body)
    assert inflated("gzip", body, [3, 30]) == b"data: one\n\ndata: two\n\n"


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate"])
def test_what_is_no_gzip_member_is_left_to_zlib(encoding: str) -> None:
    """A header longer than the agent keeps is zlib's to read; a body of another format fails as zlib fails."""
    events = [b"data: x\n\n"] * 3
    long_name = gzip_member(events, b"n" * MAX_GZIP_HEADER, None, None, True)
    assert inflated(encoding, long_name, list(range(0, len(long_name), 4096))) == b"".join(events)
    deflated = zlib.compress(b"".join(events))
    if encoding == "deflate":
        assert inflated(encoding, deflated, [1]) == b"".join(events)
    else:
        with pytest.raises(zlib.error):
            inflated(encoding, deflated, [1])


def test_a_gzip_header_that_never_ends_is_not_kept() -> None:
    """A name field without its end, megabytes long: the agent keeps at most ``MAX_GZIP_HEADER``
    of it (zlib, which reads on, keeps none)."""
    inflate = Inflate("gzip")
    piece = b"n" * 2**16
    tracemalloc.start()
    try:
        assert inflate.decompress(b"\x1f\x8b\x08\x08\0\0\0\0\0\xff") == b""
        for _ in range(64):
            assert inflate.decompress(piece) == b""
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 16 * MAX_GZIP_HEADER  # (kept whole, it would be 64 times that; the margin is other threads')

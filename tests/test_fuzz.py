"""Property-based: whatever a server sends, the user sees exactly what they would see without the
agent (values, or exception type and message), through the openai SDK, bare httpx/httpx2 and
aiohttp, and botocore's Bedrock event streams."""

from __future__ import annotations

import contextlib
import importlib
import json
import random
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import examples
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.guard import internal_errors
from nexent_autoinstrument.instrumentors.otel import (
    AioHTTPInstrumentor,
    AnthropicInstrumentor,
    BedrockInstrumentor,
    HTTPX2Instrumentor,
    HTTPXInstrumentor,
    OpenAIInstrumentor,
)
from nexent_autoinstrument.tools.mock.bedrock import frame
from scripted_server import Reply, ScriptedServer


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ScriptedServer]:
    with ScriptedServer.running() as server:
        yield server


text = st.text(max_size=20)
usage = st.fixed_dictionaries({"prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**6),
                               "total_tokens": st.integers(0, 10**6)})
delta = st.one_of(
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.just("")}),
    st.fixed_dictionaries({"content": st.one_of(text, st.none())}),
    st.fixed_dictionaries({"tool_calls": st.lists(st.fixed_dictionaries({
        "index": st.integers(0, 2), "id": st.just("call_1"), "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.just("f"), "arguments": st.one_of(st.none(), text)})}),
        max_size=2)}),
    st.fixed_dictionaries({"refusal": text}),
    st.fixed_dictionaries({"reasoning_content": text}),
    st.just({}),
)
choice = st.fixed_dictionaries({"index": st.just(0), "delta": delta},
                               optional={"finish_reason": st.sampled_from([None, "stop", "length", "tool_calls"])})
chunk = st.fixed_dictionaries(
    {"id": st.just("chatcmpl-1"), "object": st.just("chat.completion.chunk"), "created": st.just(1),
     "model": st.just("m"), "choices": st.lists(choice, max_size=2)},
    optional={"usage": usage, "unexpected_field": text, "system_fingerprint": text})
compact = {"separators": (",", ":")}  # as OpenAI, vLLM and most servers write it (the agent's fast path)
data_line = st.one_of(
    chunk.map(json.dumps),
    chunk.map(lambda c: json.dumps(c, **compact)),
    chunk.map(lambda c: json.dumps(c, **compact)),
    st.fixed_dictionaries({"choices": st.just([]), "usage": usage}).map(json.dumps),  # usage only
    st.just('{"choices": [{"delta": {"content": "x"'),  # malformed JSON
    st.just('{"choices": "not a list", "usage": 5}'),  # wrong types
    text.map(lambda t: json.dumps({"choices": [{"index": 0, "delta": {"content": t * 500}}]})),  # huge
    st.just('{"error": {"message": "overloaded", "type": "server_error"}}'),
)


@st.composite
def sse_reply(draw: Any) -> Reply:
    lines = draw(st.lists(data_line, max_size=8))
    done_at = draw(st.one_of(st.none(), st.integers(0, len(lines))))  # [DONE] early, at the end, or missing
    if done_at is not None:
        lines.insert(done_at, "[DONE]")
    body = "".join(f"data: {line}\n\n" for line in lines).encode()
    cuts = sorted(draw(st.lists(st.integers(0, max(len(body), 1)), max_size=6)))  # split anywhere
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return Reply(200, "text/event-stream", pieces, draw(st.booleans()))


@st.composite
def json_reply(draw: Any) -> Reply:
    document = draw(st.one_of(
        st.fixed_dictionaries({"id": st.just("c"), "object": st.just("chat.completion"), "model": st.just("m"),
                               "choices": st.lists(st.fixed_dictionaries({
                                   "index": st.just(0), "message": st.fixed_dictionaries(
                                       {"role": st.just("assistant"), "content": st.one_of(text, st.none())}),
                                   "finish_reason": st.sampled_from(["stop", "length"])}), max_size=2)},
                              optional={"usage": usage, "extra": text}).map(json.dumps),
        st.just("{not json"), text, st.just('{"error": {"message": "bad request", "type": "invalid"}}')))
    status = draw(st.sampled_from([200, 200, 400, 429, 500]))
    return Reply(status, "application/json", [document.encode()], draw(st.booleans()))


def observe(call: Any) -> Any:
    """What user code sees: the values, or the exception's type and message."""
    try:
        return ("ok", call())
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


class Agent:
    """Toggles every layer of the agent on and off around one run."""

    def __init__(self, harness: Any) -> None:
        self.harness = harness
        self.layers = [OpenAIInstrumentor(), AnthropicInstrumentor(), HTTPXInstrumentor(), HTTPX2Instrumentor(),
                       AioHTTPInstrumentor(), BedrockInstrumentor()]

    def run(self, call: Any) -> tuple[Any, Any]:
        bare = observe(call)
        errors_before = dict(internal_errors)
        self.harness.exporter.clear()
        for layer in self.layers:
            layer.instrument(telemetry=self.harness.telemetry)
        try:
            return bare, observe(call)
        finally:
            for layer in self.layers:
                layer.uninstrument()
            # Whatever the server sent, the agent's own code did not fail (it swallows its errors,
            # so without this a broken decoder or reader would pass unnoticed).
            assert dict(internal_errors) == errors_before


FUZZ = settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


# The fuzzer sends a chunk with wrong types on purpose ({"choices": "not a list", "usage": 5}). The
# SDK builds its models from server data without validating them, with or without the agent, so
# the test's own model_dump() then warns that those fields do not serialize as declared. That
# warning, and only that one, is expected here: without the model_dump() no such warning appears,
# with or without the agent.
@pytest.mark.filterwarnings(r"ignore:Pydantic serializer warnings.\s+PydanticSerializationUnexpectedValue"
                            r"\(Expected .list\[Choice\].:UserWarning")
@FUZZ
@given(reply=sse_reply())
def test_openai_streams_are_unchanged(fuzz_server: ScriptedServer, harness: Any, reply: Reply) -> None:
    fuzz_server.reply = reply
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{fuzz_server.server_address[1]}/v1", api_key="sk-fuzz",
                           max_retries=0)

    def call() -> list[Any]:
        return [c.model_dump() for c in client.chat.completions.create(model="m", messages=[], stream=True)]

    bare, instrumented = Agent(harness).run(call)
    assert instrumented == bare


def content_chunks(reply: Reply) -> int:
    """How many events of an SSE body carry content: an oracle written apart from the agent."""
    count = 0
    for block in b"".join(reply.pieces).decode().split("\n\n"):
        data = block.lstrip("\n").removeprefix("data: ")  # (after blank lines that end no event)
        try:
            event = json.loads(data)
        except ValueError:
            continue
        choices = event.get("choices") if isinstance(event, dict) else None
        deltas = [c.get("delta") for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []
        keys = ("content", "tool_calls", "refusal", "function_call", "reasoning_content", "reasoning")
        count += any(isinstance(d, dict) and any(d.get(k) for k in keys) for d in deltas)
    return count


@FUZZ
@given(reply=json_reply())
def test_openai_json_bodies_are_unchanged(fuzz_server: ScriptedServer, harness: Any, reply: Reply) -> None:
    fuzz_server.reply = reply
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{fuzz_server.server_address[1]}/v1", api_key="sk-fuzz",
                           max_retries=0)
    bare, instrumented = Agent(harness).run(
        lambda: client.chat.completions.create(model="m", messages=[]).model_dump())
    assert instrumented == bare


@pytest.mark.parametrize("library", ["httpx", "httpx2"])
@FUZZ
@given(reply=st.one_of(sse_reply(), json_reply()), reader=st.sampled_from(["iter_lines", "iter_text", "read"]))
def test_bare_http_bodies_are_unchanged(fuzz_server: ScriptedServer, harness: Any, library: str, reply: Reply,
                                        reader: str) -> None:
    fuzz_server.reply = reply
    httpx = importlib.import_module(library)
    url = f"http://127.0.0.1:{fuzz_server.server_address[1]}/v1/chat/completions"

    def call() -> Any:
        with httpx.Client() as client, client.stream("POST", url, json={"model": "m", "stream": True}) as response:
            body = getattr(response, reader)()
            if reader == "iter_text":  # its pieces follow the network reads, which differ between any two runs
                body = "".join(body)
            return (response.status_code, body if isinstance(body, (bytes, str)) else list(body))

    bare, instrumented = Agent(harness).run(call)
    assert instrumented == bare
    if reply.content_type == "text/event-stream" and not reply.cut:  # and it measured what was there
        span = harness.llm_span()
        assert len(decode_offsets(span.attributes.get("llm.token.offsets", ""))) == content_chunks(reply)


@FUZZ
@given(reply=st.one_of(sse_reply(), json_reply()), reader=st.sampled_from(["lines", "iter_any", "read"]))
def test_aiohttp_bodies_are_unchanged(fuzz_server: ScriptedServer, harness: Any, reply: Reply, reader: str) -> None:
    """The same through aiohttp, whose reads the agent times as they arrive: the server's pieces, cut
    anywhere, some of them arriving with the headers, before the agent has chosen the body's reader."""
    import asyncio

    import aiohttp

    fuzz_server.reply = reply
    url = f"http://127.0.0.1:{fuzz_server.server_address[1]}/v1/chat/completions"

    async def read() -> Any:
        async with aiohttp.ClientSession() as session, \
                session.post(url, json={"model": "m", "stream": True}) as response:
            if reader == "read":
                body = await response.read()
            elif reader == "iter_any":  # (its pieces follow the network reads: joined)
                body = b"".join([piece async for piece in response.content.iter_any()])
            else:
                body = [line async for line in response.content]
            return (response.status, body)

    bare, instrumented = Agent(harness).run(lambda: asyncio.run(read()))
    assert instrumented == bare
    if reply.content_type == "text/event-stream" and not reply.cut:  # and it measured what was there
        span = harness.llm_span()
        assert len(decode_offsets(span.attributes.get("llm.token.offsets", ""))) == content_chunks(reply)


@settings(max_examples=examples(150), deadline=None)
@given(event=chunk, spacing=st.sampled_from([compact, {}]))
def test_a_skimmed_event_is_a_plain_content_delta(event: dict[str, Any], spacing: dict[str, Any]) -> None:
    """Whenever the byte skim lets an event through unparsed, parsing it would have told nothing
    but one content chunk: no finish reason, no usage, no error."""
    from nexent_autoinstrument.adapters.openai import read_chat_event, skim_chat_event

    data = json.dumps(event, **spacing).encode()
    if not skim_chat_event(data):
        return
    recorded: list[tuple[str, Any]] = []

    class Recorder:
        response_id = "known"

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: recorded.append((name, args))

    read_chat_event(Recorder(), json.loads(data))  # type: ignore[arg-type]
    assert [name for name, _ in recorded] == ["content"]
    assert recorded[0][1][0]  # with non-empty text


def plain_delta(content: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}]}


@settings(max_examples=examples(200), deadline=None)
@given(learned=text.filter(bool), other=st.one_of(text.map(plain_delta), chunk), spacing=st.sampled_from([compact, {}]),
       ascii_only=st.booleans())
def test_a_read_recognised_without_decoding_is_the_learned_delta_with_other_text(
        learned: str, other: dict[str, Any], spacing: dict[str, Any], ascii_only: bool) -> None:
    """A network read, or an event's data, that ``PlainReads`` recognises from its bytes decodes to
    exactly the event it learned, but for a non-empty content text: nothing else to read in it.
    And a plain delta like the learned one, as servers write them (compact), is recognised: the
    fast path engages."""
    from nexent_autoinstrument.adapters.openai import skim_chat_event
    from nexent_autoinstrument.adapters.sse import PlainReads, SSEDecoder

    def read(event: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(event, ensure_ascii=ascii_only, **spacing).encode() + b"\n\n"

    plain, in_a_burst = PlainReads(b'"content":"'), PlainReads(b'"content":"')
    first = read(plain_delta(learned))
    if skim_chat_event(first[6:-2]):
        plain.learn(first, first[6:-2])
        in_a_burst.learn(b"", first[6:-2])
    second = read(other)
    [data] = SSEDecoder().feed(second)
    assert plain.matches_data(data) is in_a_burst.matches_data(data)  # (the same template, learned either way)
    if plain.matches_data(data):
        decoded = json.loads(data)
        content = decoded["choices"][0]["delta"]["content"]
        assert content and decoded == plain_delta(content)
    if plain.matches(second):
        assert plain.matches_data(data)
    elif spacing is compact:
        content = json.loads(second[6:-2])["choices"][0]["delta"].get("content") if other["choices"] else None
        assert not (content and other == plain_delta(content))  # only an empty text is left to the decoder


@settings(max_examples=examples(200), deadline=None)
@given(learned=text.filter(bool), events=st.lists(st.one_of(text.map(plain_delta), text.map(plain_delta), chunk),
                                                  max_size=10),
       raw_texts=st.lists(st.one_of(st.binary(max_size=6), st.lists(  # (bytes that matter in a JSON string)
           st.sampled_from([b'"', b"\\", b"a", b"\n", b"\r", b"}", b"\\n"]), min_size=1, max_size=4).map(b"".join)),
           max_size=3),
       others=st.lists(st.sampled_from([b": keep-alive", b"event: ping\ndata: {}", b"data: a\ndata: b", b"id: 7"]),
                       max_size=2),
       spacing=st.sampled_from([compact, {}]), ascii_only=st.booleans(), order=st.randoms(use_true_random=False),
       copies=st.sampled_from([1, 1, 4]), odd_ones=st.sampled_from(["anywhere", "first", "last"]))
# (always: a read of many events led by ones that are no plain delta, which those set aside must keep)
@example(learned="w", events=[{"choices": [], "usage": {"completion_tokens": 3}}, *map(plain_delta, "abc")],
         raw_texts=[], others=[], spacing=compact, ascii_only=True, order=random.Random(0), copies=4, odd_ones="first")
# (always: a few events, one of them the template's with a text that has an escape and a bare quote)
@example(learned="w", events=[plain_delta("a")], raw_texts=[b'\\n"'], others=[], spacing=compact, ascii_only=True,
         order=random.Random(0), copies=1, odd_ones="anywhere")
# (always: a read of two plain deltas but for the second's empty text, which is no plain delta)
@example(learned="w", events=[plain_delta("a")], raw_texts=[b""], others=[], spacing=compact, ascii_only=True,
         order=random.Random(0), copies=1, odd_ones="last")
def test_plain_deltas_told_apart_at_once_are_those_told_apart_one_by_one(
        learned: str, events: list[dict[str, Any]], raw_texts: list[bytes], others: list[bytes],
        spacing: dict[str, Any], ascii_only: bool, order: Any, copies: int, odd_ones: str) -> None:
    """A read of several events: the plain deltas ``PlainReads.sort_events`` counts are exactly
    those ``matches_data`` recognises one by one in events of one data line, and the others'
    bytes hold the other events, in order: for a few events (checked one by one) and for many
    (``copies``: checked together, the odd ones at either end set aside, wherever they are).
    ``matches`` takes the read whole exactly when all of them are plain deltas."""
    from nexent_autoinstrument.adapters.openai import skim_chat_event
    from nexent_autoinstrument.adapters.sse import PlainReads, events_of

    def dumps(event: dict[str, Any]) -> bytes:
        return json.dumps(event, ensure_ascii=ascii_only, **spacing).encode()

    plain = PlainReads(b'"content":"')
    first = dumps(plain_delta(learned))
    if not skim_chat_event(first):
        return
    plain.learn(b"", first)
    blocks = [b"data: " + dumps(event) for event in events]
    blocks += [b"data: " + plain.data_prefix + text + plain.data_suffix for text in raw_texts]
    blocks += others

    def one_by_one(block: bytes) -> bool:
        return block.startswith(b"data: ") and b"\n" not in block and plain.matches_data(block[6:])

    blocks *= copies
    order.shuffle(blocks)
    if odd_ones != "anywhere":  # (first or last, as a response's first event and its end are)
        blocks.sort(key=one_by_one, reverse=odd_ones == "last")
    region = b"".join(block + b"\n\n" for block in blocks)
    # A network read of exactly these events is taken whole only when every one is a plain delta.
    assert plain.matches(region) == (len(blocks) if all(map(one_by_one, blocks)) else 0)
    result = plain.sort_events(region)
    if result is not None:  # the events handed on are all the others, in order, and maybe some plain ones
        count, rest = result
        handed_on, counted, position = events_of(rest), [], 0
        for data in events_of(region):
            if position < len(handed_on) and handed_on[position] == data:
                position += 1
            else:
                counted.append(data)
        assert position == len(handed_on)  # (in their order)
        assert len(counted) == count and all(map(plain.matches_data, counted))
        if not others:  # (next to other lines a plain delta may be handed on; else each is counted)
            assert count == sum(map(one_by_one, blocks))
    elif not raw_texts and not others and spacing is compact and any(map(one_by_one, blocks)):
        raise AssertionError("a stream as servers write it was not told apart")  # (it never gives up on one)


@settings(max_examples=examples(200), deadline=None)
@given(learned=text.filter(bool), texts=st.lists(st.one_of(
           text.map(lambda t: json.dumps(t)[1:-1].encode()),  # (a JSON string's body, escapes and all)
           st.binary(max_size=6), st.lists(st.sampled_from([b'"', b"\\", b"a", b"\n", b"\r", b"\\n"]),
                                           min_size=1, max_size=4).map(b"".join)), max_size=30),
       trims=st.lists(st.sampled_from(["both", "both", "both", "head", "tail", "none"]), max_size=30))
def test_plain_deltas_checked_together_are_those_matches_data_takes(learned: str, texts: list[bytes],
                                                                   trims: list[str]) -> None:
    """``PlainReads._all_plain``, the check of many events at once, says yes exactly when
    ``matches_data`` takes the data line of every one of them: any text between the template's
    bytes, or an event that lacks them at either end."""
    from nexent_autoinstrument.adapters.sse import PlainReads

    plain = PlainReads(b'"content":"')
    plain.learn(b"", json.dumps(plain_delta(learned), separators=(",", ":")).encode())
    prefix, suffix = plain.data_prefix, plain.data_suffix
    assert prefix and suffix
    shapes = {"both": lambda t: prefix + t + suffix, "head": lambda t: prefix + t, "tail": lambda t: t + suffix,
              "none": lambda t: t}
    pieces = [shapes[trim](t) for t, trim in zip(texts, trims + ["both"] * len(texts), strict=False)]
    assert plain._all_plain([b"data: " + piece for piece in pieces]) is all(map(plain.matches_data, pieces))


def steady_events(middle: list[Any], tail: list[Any]) -> list[bytes]:
    """The data of a stream's events as servers write them: a role delta, ``middle``, a finish,
    ``tail`` and ``[DONE]``."""
    role = {**plain_delta(""), "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}]}
    finish = {**plain_delta(""), "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    return [json.dumps(event, **compact).encode() for event in [role, *middle, finish, *tail]] + [b"[DONE]"]


#: An odd run of line ends after the first event, read alone: what that read completes ends in a
#: line end that ends no event, before any template is known.
ODD_LINE_ENDS = Reply(200, "text/event-stream", [
    b"data: " + event + end for event, end in zip(steady_events([plain_delta("a")], []),
                                                  [b"\n\n\n", b"\n\n", b"\n\n", b"\n\n"], strict=True)], False)


@st.composite
def steady_sse_reply(draw: Any) -> Reply:
    """A stream as servers write it: a role delta, many plain deltas like one another, with now and
    then another chunk, a finish and maybe usage, read all at once, an event per read, or cut
    anywhere (reads of many events go through ``PlainReads.sort_events``)."""
    middle = draw(st.lists(st.one_of(text.map(plain_delta), text.map(plain_delta), chunk), max_size=30))
    tail = [{"id": "chatcmpl-1", "choices": [], "usage": draw(usage)}] if draw(st.booleans()) else []
    events = steady_events(middle, tail)
    # (mostly one blank line after each, as servers write them; now and then more, or a comment)
    ends = draw(st.lists(st.sampled_from([b"\n\n"] * 6 + [b"\n\n\n", b"\n\n\n\n", b"\n\n: ping\n\n"]),
                         min_size=len(events), max_size=len(events)))
    written = [b"data: " + event + end for event, end in zip(events, ends, strict=True)]
    body = b"".join(written)
    how = draw(st.sampled_from(["whole", "per event", "cut"]))
    if how == "whole":
        pieces = [body]
    elif how == "per event":
        pieces = written
    else:
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=8)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return Reply(200, "text/event-stream", pieces, False)


@FUZZ
@given(reply=steady_sse_reply())
@example(reply=ODD_LINE_ENDS)
def test_a_steady_stream_is_measured_alike_however_it_is_read(fuzz_server: ScriptedServer, harness: Any,
                                                               reply: Reply) -> None:
    """Every event is a chunk and every content event one content chunk, whether the plain deltas
    came one per read or many (told apart in one pass), and the caller's lines are unchanged."""
    import httpx

    fuzz_server.reply = reply
    url = f"http://127.0.0.1:{fuzz_server.server_address[1]}/v1/chat/completions"

    def call() -> list[str]:
        with httpx.Client() as client, client.stream("POST", url, json={"model": "m", "stream": True}) as response:
            return list(response.iter_lines())

    bare, instrumented = Agent(harness).run(call)
    assert instrumented == bare
    attributes = harness.llm_span().attributes
    events = b"".join(reply.pieces).count(b"\ndata: ")  # (every event but the first, and [DONE])
    assert attributes["llm.stream.chunks"] == events
    assert len(decode_offsets(attributes.get("llm.token.offsets", ""))) == content_chunks(reply)
    assert attributes["gen_ai.response.finish_reasons"][-1:] == ("stop",)
    assert attributes["llm.stream.outcome"] == "completed"


# -- the other providers' protocols ---------------------------------------------------------------

count_value = st.one_of(st.integers(-3, 10**6), st.none(), st.just("7"), st.floats(allow_nan=False))
anthropic_delta = st.one_of(
    st.fixed_dictionaries({"type": st.just("text_delta"), "text": st.one_of(text, st.none(), st.integers())}),
    st.fixed_dictionaries({"type": st.just("input_json_delta"), "partial_json": text}),
    st.fixed_dictionaries({"type": st.just("thinking_delta"), "thinking": text}),
    st.fixed_dictionaries({"type": st.just("signature_delta"), "signature": text}),
    st.just({}), st.just("not a delta"))
anthropic_event = st.one_of(
    st.fixed_dictionaries({"type": st.just("message_start"), "message": st.fixed_dictionaries({
        "id": st.just("msg_1"), "type": st.just("message"), "role": st.just("assistant"), "model": st.just("m"),
        "content": st.just([]), "stop_reason": st.none(),
        "usage": st.fixed_dictionaries({"input_tokens": count_value, "output_tokens": count_value},
                                       optional={"cache_read_input_tokens": count_value})})}),
    st.fixed_dictionaries({"type": st.just("content_block_start"), "index": st.just(0),
                           "content_block": st.just({"type": "text", "text": ""})}),
    st.fixed_dictionaries({"type": st.just("content_block_delta"), "index": st.just(0), "delta": anthropic_delta}),
    st.fixed_dictionaries({"type": st.just("content_block_stop"), "index": st.just(0)}),
    st.fixed_dictionaries({"type": st.just("message_delta"), "delta": st.fixed_dictionaries({
        "stop_reason": st.sampled_from([None, "end_turn", "max_tokens", "tool_use", 3])}),
        "usage": st.one_of(st.none(), st.fixed_dictionaries({"output_tokens": count_value}))}),
    st.just({"type": "message_stop"}), st.just({"type": "ping"}),
    st.fixed_dictionaries({"type": st.just("error"), "error": st.fixed_dictionaries({"type": text})}),
    st.just({"type": 5}), st.just({"type": ["content_block_delta"]}), st.just([]))


@st.composite
def anthropic_reply(draw: Any) -> Reply:
    events = draw(st.lists(anthropic_event, max_size=8))
    spacing = draw(st.sampled_from([compact, {}]))
    body = "".join(f"event: {e.get('type') if isinstance(e, dict) and isinstance(e.get('type'), str) else 'x'}\n"
                   f"data: {json.dumps(e, **spacing)}\n\n" for e in events).encode()
    cuts = sorted(draw(st.lists(st.integers(0, max(len(body), 1)), max_size=6)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return Reply(200, "text/event-stream", pieces, draw(st.booleans()))


ollama_line = st.one_of(
    st.fixed_dictionaries({"model": st.just("m"), "done": st.sampled_from([False, True, "true", None])},
                          optional={"message": st.fixed_dictionaries({}, optional={
                              "content": st.one_of(text, st.none(), st.integers()), "thinking": text,
                              "tool_calls": st.just([{"function": {"name": "f", "arguments": {"done": True}}}])}),
                              "response": st.one_of(text, st.none()), "done_reason": text,
                              "eval_count": count_value, "prompt_eval_count": count_value,
                              "eval_duration": count_value, "load_duration": count_value}),
    st.fixed_dictionaries({"error": text}), st.just([1, 2]), st.just("null"))
gemini_part = st.one_of(
    st.fixed_dictionaries({"text": st.one_of(text, st.integers())}, optional={"thought": st.booleans()}),
    st.just({"functionCall": {"name": "f", "args": {}}}), st.just("part"))
gemini_chunk = st.one_of(
    st.fixed_dictionaries({}, optional={
        "candidates": st.one_of(st.lists(st.fixed_dictionaries({}, optional={
            "content": st.one_of(st.fixed_dictionaries({"parts": st.lists(gemini_part, max_size=3)}), st.just(None)),
            "finishReason": st.sampled_from(["STOP", "MAX_TOKENS", None, 4]), "index": st.just(0)}), max_size=2),
            st.just("x")),
        "usageMetadata": st.one_of(st.fixed_dictionaries({}, optional={
            "promptTokenCount": count_value, "candidatesTokenCount": count_value, "thoughtsTokenCount": count_value}),
            st.just([])),
        "modelVersion": st.just("g"), "responseId": st.just("r1"),
        "error": st.fixed_dictionaries({"code": st.just(503), "status": text})}),
    st.just([]))

cohere_message = st.one_of(st.fixed_dictionaries({}, optional={
    "content": st.one_of(st.fixed_dictionaries({}, optional={"text": st.one_of(text, st.none(), st.integers()),
                                                             "thinking": text}), st.just([{"text": "x"}])),
    "tool_plan": st.one_of(text, st.none()),
    "tool_calls": st.fixed_dictionaries({}, optional={"function": st.fixed_dictionaries({}, optional={
        "name": text, "arguments": st.one_of(text, st.none())})})}), st.just("message"))
cohere_event = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["content-delta", "tool-plan-delta", "tool-call-delta",
                                                    "content-start", "tool-call-start"])},
                          optional={"index": st.just(0), "delta": st.one_of(
                              st.fixed_dictionaries({"message": cohere_message}), st.just(None), st.just(3))}),
    st.fixed_dictionaries({"type": st.just("message-start")}, optional={"id": st.one_of(text, st.integers())}),
    st.fixed_dictionaries({"type": st.just("message-end"), "delta": st.one_of(st.fixed_dictionaries({}, optional={
        "finish_reason": st.sampled_from(["COMPLETE", "MAX_TOKENS", "TOOL_CALL", None, 4]),
        "error": st.one_of(text, st.none()),
        "usage": st.fixed_dictionaries({}, optional={
            "tokens": st.fixed_dictionaries({}, optional={"input_tokens": count_value, "output_tokens": count_value}),
            "billed_units": st.fixed_dictionaries({}, optional={"input_tokens": count_value,
                                                                "output_tokens": count_value})})}),
        st.just("end"))}),
    st.just({"type": ["content-delta"]}), st.just({"type": {"a": 1}}), st.just({}), st.just([]))


@st.composite
def lines_reply(draw: Any, documents: Any, content_type: str, separator: str) -> Reply:
    lines = [json.dumps(d, **draw(st.sampled_from([compact, {}]))) for d in draw(st.lists(documents, max_size=8))]
    body = "".join((f"data: {line}{separator}" if content_type == "text/event-stream" else line + separator)
                   for line in lines).encode()
    cuts = sorted(draw(st.lists(st.integers(0, max(len(body), 1)), max_size=6)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return Reply(200, content_type, pieces, draw(st.booleans()))


def documents(reply: Reply) -> list[Any]:
    """The JSON documents of an SSE or NDJSON body (an oracle apart from the agent's decoders)."""
    text = b"".join(reply.pieces).decode()
    if reply.content_type == "application/x-ndjson":
        blocks = text.split("\n")
    else:
        blocks = [block.rpartition("data: ")[2] for block in text.replace("\r\n", "\n").split("\n\n")]
    found = []
    for block in blocks:
        with contextlib.suppress(ValueError):
            found.append(json.loads(block))
    return found


def anthropic_content(event: Any) -> bool:
    delta = event.get("delta") if isinstance(event, dict) and event.get("type") == "content_block_delta" else None
    field = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}.get(
        delta.get("type") if isinstance(delta, dict) else None)
    return bool(field and delta[field])


def ollama_content(line: Any) -> bool:
    if not isinstance(line, dict):
        return False
    piece = line.get("message") if isinstance(line.get("message"), dict) else line
    text = piece.get("content" if piece is not line else "response")
    return bool(text or piece.get("thinking") or piece.get("tool_calls"))


def cohere_content(event: Any) -> bool:
    """From the v2 Chat API's reference: text, thinking, a tool plan or a tool call's arguments."""
    if not isinstance(event, dict) or event.get("type") not in ("content-delta", "tool-plan-delta", "tool-call-delta"):
        return False
    delta = event.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    if not isinstance(message, dict):
        return False
    if event["type"] == "tool-plan-delta":
        return bool(message.get("tool_plan"))
    if event["type"] == "tool-call-delta":
        call = message.get("tool_calls")
        function = call.get("function") if isinstance(call, dict) else None
        return bool(isinstance(function, dict) and function.get("arguments"))
    content = message.get("content")
    return isinstance(content, dict) and bool(content.get("text") or content.get("thinking"))


def gemini_content(chunk: Any) -> bool:
    candidates = chunk.get("candidates") if isinstance(chunk, dict) else None
    return any(isinstance(part, dict) and (part.get("text") or part.get("functionCall"))
               for candidate in (candidates if isinstance(candidates, list) else ()) if isinstance(candidate, dict)
               for part in ((candidate.get("content") or {}).get("parts") or ()))


CONTENT = {"anthropic": anthropic_content, "ollama": ollama_content, "gemini": gemini_content,
           "cohere": cohere_content}

PROTOCOLS = {
    "anthropic": ("/v1/messages", anthropic_reply()),
    "ollama": ("/api/chat", lines_reply(ollama_line, "application/x-ndjson", "\n")),
    "gemini": ("/v1beta/models/g:streamGenerateContent?alt=sse",
               lines_reply(gemini_chunk, "text/event-stream", "\r\n\r\n")),
    "cohere": ("/v2/chat", lines_reply(cohere_event, "text/event-stream", "\n\n")),
}


def test_every_protocol_of_the_registry_is_fuzzed() -> None:
    """A new protocol needs its bodies here (openai's are fuzzed above, through its SDK and raw)."""
    from nexent_autoinstrument.adapters.endpoints import PROTOCOLS as REGISTRY

    assert {protocol.name for protocol in REGISTRY} == {"openai", *PROTOCOLS} == {"openai", *CONTENT}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@FUZZ
@given(data=st.data(), reader=st.sampled_from(["iter_lines", "iter_bytes", "read"]))
def test_other_protocols_bodies_are_unchanged(fuzz_server: ScriptedServer, harness: Any, protocol: str, data: Any,
                                              reader: str) -> None:
    """Anthropic SSE, Ollama NDJSON, Gemini SSE and Cohere SSE read raw: the same bytes with and without the
    agent, whatever they hold, and the readers never fail on them."""
    import httpx

    path, replies = PROTOCOLS[protocol]
    fuzz_server.reply = data.draw(st.one_of(replies, json_reply()))
    url = f"http://127.0.0.1:{fuzz_server.server_address[1]}{path}"

    def call() -> Any:
        with httpx.Client() as client, client.stream("POST", url, json={"model": "m", "stream": True}) as response:
            body = getattr(response, reader)()  # (the pieces of iter_bytes follow the network reads: joined)
            return (response.status_code, body if isinstance(body, bytes) else list(body) if reader == "iter_lines"
                    else b"".join(body))

    bare, instrumented = Agent(harness).run(call)
    assert instrumented == bare
    reply = fuzz_server.reply
    if reply.status == 200 and reply.content_type != "application/json" and not reply.cut:  # and measured it
        expected = sum(CONTENT[protocol](document) for document in documents(reply))
        assert len(decode_offsets(harness.llm_span().attributes.get("llm.token.offsets", ""))) == expected


@FUZZ
@given(reply=anthropic_reply())
def test_anthropic_streams_are_unchanged(fuzz_server: ScriptedServer, harness: Any, reply: Reply) -> None:
    import anthropic

    fuzz_server.reply = reply
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{fuzz_server.server_address[1]}", api_key="sk-fuzz",
                                 max_retries=0)

    def call() -> list[Any]:
        stream = client.messages.create(model="m", max_tokens=5, messages=[], stream=True)
        return [repr(event) for event in stream]

    bare, instrumented = Agent(harness).run(call)
    assert instrumented == bare


@settings(max_examples=examples(150), deadline=None)
@given(event=anthropic_event, spacing=st.sampled_from([compact, {}]))
def test_a_skimmed_anthropic_event_is_a_plain_text_delta(event: Any, spacing: dict[str, Any]) -> None:
    """Whenever Anthropic's byte skim lets an event through unparsed, parsing it would have told
    nothing but one content chunk, with text."""
    from nexent_autoinstrument.adapters.anthropic import read_event, skim_event

    data = json.dumps(event, **spacing).encode()
    if not skim_event(data):
        return
    recorded: list[tuple[str, Any]] = []

    class Recorder:
        response_id = "known"
        texts = None

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: recorded.append((name, args))

    read_event(Recorder(), json.loads(data))  # type: ignore[arg-type]
    assert [name for name, _ in recorded] == ["content"]
    assert recorded[0][1][0]


# -- Bedrock: AWS event-stream frames, decoded by botocore's own parser ----------------------------------

bedrock_delta = st.one_of(st.fixed_dictionaries({"text": text}),
                          st.fixed_dictionaries({"toolUse": st.fixed_dictionaries({"input": text})}),
                          st.fixed_dictionaries({"reasoningContent": st.fixed_dictionaries({"text": text})}))
bedrock_event = st.one_of(
    st.tuples(st.just("messageStart"), st.fixed_dictionaries({"role": st.just("assistant")})),
    st.tuples(st.just("contentBlockDelta"), st.fixed_dictionaries({"contentBlockIndex": st.integers(0, 2),
                                                                   "delta": bedrock_delta})),
    st.tuples(st.just("contentBlockStop"), st.fixed_dictionaries({"contentBlockIndex": st.integers(0, 2)})),
    st.tuples(st.just("messageStop"), st.fixed_dictionaries({"stopReason": st.sampled_from(
        ["end_turn", "max_tokens", "tool_use", "odd_reason"])})),
    st.tuples(st.just("metadata"), st.fixed_dictionaries(
        {"usage": st.fixed_dictionaries({"inputTokens": st.integers(0, 10**6), "outputTokens": st.integers(0, 10**6),
                                         "totalTokens": st.integers(0, 10**6)}),
         "metrics": st.fixed_dictionaries({"latencyMs": st.integers(0, 10**6)})})),
    st.tuples(st.just("someFutureEvent"), st.fixed_dictionaries({"x": text})),
)


def bedrock_content(kind: str, payload: dict[str, Any]) -> bool:
    """A delta that carries text, tool input or reasoning text is content (an empty piece of tool
    input, or a reasoning signature alone, is none)."""
    delta = payload.get("delta") or {}
    tool, reasoning = delta.get("toolUse") or {}, delta.get("reasoningContent") or {}
    return kind == "contentBlockDelta" and bool(delta.get("text") or tool.get("input") or reasoning.get("text"))


@st.composite
def bedrock_reply(draw: Any) -> tuple[Reply, int | None]:
    """Frames split anywhere, maybe one byte flipped (a bad checksum) or ending with an exception;
    and how many content events the caller gets when nothing is wrong (else None)."""
    events = draw(st.lists(bedrock_event, max_size=8))
    frames = [frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                    json.dumps(payload).encode()) for kind, payload in events]
    failing = draw(st.booleans())
    if failing:
        frames.append(frame({":exception-type": "throttlingException", ":content-type": "application/json",
                             ":message-type": "exception"}, b'{"message": "slow down"}'))
    body = bytearray(b"".join(frames))
    flipped = draw(st.one_of(st.none(), st.integers(0, len(body) - 1))) if body else None
    if flipped is not None:
        body[flipped] ^= 0x01
    cuts = sorted(draw(st.lists(st.integers(0, max(len(body), 1)), max_size=6)))
    pieces = [bytes(body[a:b]) for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    cut = draw(st.booleans())
    clean = not (failing or cut or flipped is not None)
    return (Reply(200, "application/vnd.amazon.eventstream", pieces, cut),
            sum(bedrock_content(kind, payload) for kind, payload in events) if clean else None)


@FUZZ
@given(drawn=bedrock_reply())
def test_bedrock_event_streams_are_unchanged(fuzz_server: ScriptedServer, harness: Any,
                                             drawn: tuple[Reply, int | None]) -> None:
    """``converse_stream`` read to its end: the same events, or the same error (a bad checksum, a
    truncated frame, an exception frame), with and without the agent; every content event counted."""
    import boto3
    from botocore.config import Config

    fuzz_server.reply, contents = drawn
    client = boto3.client("bedrock-runtime", region_name="us-east-1",
                          endpoint_url=f"http://127.0.0.1:{fuzz_server.server_address[1]}",
                          aws_access_key_id="AKIDFUZZ", aws_secret_access_key="fuzz",
                          config=Config(retries={"max_attempts": 1}))

    def call() -> list[Any]:
        return list(client.converse_stream(modelId="m", messages=[])["stream"])

    bare, instrumented = Agent(harness).run(call)
    assert instrumented == bare
    if contents is not None:  # and it measured what was there
        assert len(decode_offsets(harness.llm_span().attributes.get("llm.token.offsets", ""))) == contents

"""The other LLM SDKs over httpx: anthropic (patched, like openai), ollama, google-genai and cohere
(measured by the httpx layer alone), and their protocols read raw. What the caller sees must not
change."""

from __future__ import annotations

import contextlib
import functools
import importlib
from typing import Any

from kit import ANY, MOCK_ROOT, TOKENS, Seen, Unsupported, case, plain

MESSAGES = [{"role": "user", "content": "hello"}]
LONG = {"mock_tokens": 30}
ANTHROPIC_SPAN = "anthropic.messages.create"  # (the SDK's own span, from anthropic 1.x, which the agent adopts)
anthropic_case = functools.partial(case, sdk_span=ANTHROPIC_SPAN)
EARLY = {"outcome": "closed_early", "ttft": True}


def sdk(name: str) -> Any:
    """The SDK's module; the case is skipped where it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as missing:
        raise Unsupported(f"{name} is not installed") from missing


def anthropic_client(**options: Any) -> Any:
    anthropic = sdk("anthropic")
    options.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=MOCK_ROOT, api_key="sk-ant-conformance", **options)


def message_args(stream: bool = False, mock: dict[str, Any] | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"model": "claude-test", "max_tokens": 256, "messages": MESSAGES}
    if stream:
        args["stream"] = True
    if mock:
        args["extra_body"] = mock
    return args


def leave_early(seen: Seen, stream: Any) -> None:
    """A few events, then break (past the first content: Anthropic's first events carry none)."""
    seen.items("events", stream, limit=4)


# -- anthropic ----------------------------------------------------------------------------------------

@anthropic_case(outcome="completed", ttft=False, usage="api", output_tokens=TOKENS, finish_reasons=["end_turn"])
def anthropic_create(seen: Seen) -> None:
    """anthropic messages.create, a whole Message."""
    seen.obj("message", anthropic_client().messages.create(**message_args()))


@anthropic_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS, finish_reasons=["end_turn"])
def anthropic_stream_consumed(seen: Seen) -> None:
    """anthropic messages.create(stream=True), read to the end."""
    stream = anthropic_client().messages.create(**message_args(stream=True))
    seen.obj("stream", stream)
    seen.items("events", stream)
    seen("closed", stream.response.is_closed)


@anthropic_case(**EARLY)
def anthropic_stream_break_then_close(seen: Seen) -> None:
    """anthropic stream: break, then close()."""
    stream = anthropic_client().messages.create(**message_args(stream=True, mock=LONG))
    leave_early(seen, stream)
    stream.close()
    seen("closed", stream.response.is_closed)


@anthropic_case(**EARLY)
def anthropic_stream_break_inside_with(seen: Seen) -> None:
    """anthropic stream: break inside its with block."""
    with anthropic_client().messages.create(**message_args(stream=True, mock=LONG)) as stream:
        leave_early(seen, stream)
    seen("closed", stream.response.is_closed)


@anthropic_case(**EARLY)
def anthropic_stream_exception_in_the_loop(seen: Seen) -> None:
    """anthropic stream: the caller's own exception inside the for loop."""
    stream = anthropic_client().messages.create(**message_args(stream=True, mock=LONG))
    with contextlib.suppress(ValueError):
        for index, event in enumerate(stream):
            seen("event", event)
            if index == 3:
                raise ValueError("the caller's bug")


@anthropic_case(outcome="abandoned", ttft=False)
def anthropic_stream_dropped_unread(seen: Seen) -> None:
    """anthropic stream made and dropped without reading it."""
    seen.obj("stream", anthropic_client().messages.create(**message_args(stream=True)))


@anthropic_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS, finish_reasons=["end_turn"])
def anthropic_helper_text_stream(seen: Seen) -> None:
    """anthropic messages.stream(): text_stream, then get_final_message()."""
    with anthropic_client().messages.stream(**message_args()) as stream:
        seen.obj("helper", stream)
        seen.items("text", stream.text_stream)
        seen("final", stream.get_final_message())


@anthropic_case(**EARLY)
def anthropic_helper_break(seen: Seen) -> None:
    """anthropic messages.stream(): break inside the with block."""
    with anthropic_client().messages.stream(**message_args(mock=LONG)) as stream:
        leave_early(seen, stream)


@anthropic_case(outcome="completed", ttft=False, usage="api", output_tokens=TOKENS)
def anthropic_with_raw_response(seen: Seen) -> None:
    """anthropic messages.with_raw_response.create, then parse()."""
    raw = anthropic_client().messages.with_raw_response.create(**message_args())
    seen.obj("raw", raw)
    seen("parsed", raw.parse())


@anthropic_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS)
def anthropic_with_streaming_response_lines(seen: Seen) -> None:
    """anthropic messages.with_streaming_response.create(stream=True), read with iter_lines()."""
    with anthropic_client().messages.with_streaming_response.create(**message_args(stream=True)) as response:
        seen.joined("lines", response.iter_lines())


@anthropic_case(outcome="completed", ttft=True, usage="api", finish_reasons=["tool_use"])
def anthropic_stream_thinking_and_tool_use(seen: Seen) -> None:
    """anthropic stream with a thinking block and a tool_use block (input_json deltas)."""
    stream = anthropic_client().messages.create(**message_args(stream=True, mock={
        "mock_reasoning": "let me look that up", "mock_tool_call": True}))
    seen.items("events", stream)


@anthropic_case(outcome="completed", ttft=False, usage="api")
def anthropic_retried(seen: Seen) -> None:
    """anthropic call answered 503 once, retried by the SDK: one call."""
    seen("message", anthropic_client(max_retries=1).messages.create(**message_args(mock={"mock_fail_attempts": 1})))


@anthropic_case(outcome="error", ttft=False, usage="absent", error_type=ANY)
def anthropic_error_429(seen: Seen) -> None:
    """anthropic call answered 429: RateLimitError."""
    seen.call("create", lambda: anthropic_client().messages.create(**message_args(mock={"mock_error": 429})))


@anthropic_case(outcome="error", ttft=True, error_type=ANY)
def anthropic_error_event_mid_stream(seen: Seen) -> None:
    """anthropic stream with an error event after three tokens."""
    stream = anthropic_client().messages.create(**message_args(stream=True, mock={"mock_error_event": 3}))
    seen.call("events", lambda: [plain(event) for event in stream])


@anthropic_case(outcome="error", ttft=True, error_type=ANY)
def anthropic_connection_dropped_mid_stream(seen: Seen) -> None:
    """anthropic stream whose connection drops after three tokens."""
    stream = anthropic_client().messages.create(**message_args(stream=True, mock={"mock_drop_after": 3}))
    seen.call("events", lambda: [plain(event) for event in stream])


@anthropic_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS)
async def anthropic_async_stream(seen: Seen) -> None:
    """anthropic AsyncAnthropic stream, async for to the end."""
    client = sdk("anthropic").AsyncAnthropic(base_url=MOCK_ROOT, api_key="sk-ant-conformance", max_retries=0)
    stream = await client.messages.create(**message_args(stream=True))
    seen.obj("stream", stream)
    await seen.aitems("events", stream)


@anthropic_case(**EARLY)
async def anthropic_async_break_then_close(seen: Seen) -> None:
    """anthropic AsyncAnthropic stream: break, then close()."""
    client = sdk("anthropic").AsyncAnthropic(base_url=MOCK_ROOT, api_key="sk-ant-conformance", max_retries=0)
    stream = await client.messages.create(**message_args(stream=True, mock=LONG))
    await seen.aitems("events", stream, limit=4)
    await stream.close()


@case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS, finish_reasons=["end_turn"])
def anthropic_raw_httpx_sse(seen: Seen) -> None:
    """The Messages API read with plain httpx (SSE lines), no SDK."""
    import httpx

    with httpx.Client() as client, client.stream("POST", MOCK_ROOT + "/v1/messages",
                                                 json=message_args(stream=True)) as response:
        seen.joined("lines", response.iter_lines())


# -- ollama (no patch: the httpx layer reads its NDJSON) --------------------------------------------

def ollama_client() -> Any:
    return sdk("ollama").Client(host=MOCK_ROOT)


@case(outcome="completed", ttft=False, usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
def ollama_chat(seen: Seen) -> None:
    """ollama chat, a whole answer."""
    seen.obj("response", ollama_client().chat(model="llama-test", messages=MESSAGES))


@case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
def ollama_chat_stream(seen: Seen) -> None:
    """ollama chat(stream=True), read to the end."""
    seen.items("parts", ollama_client().chat(model="llama-test", messages=MESSAGES, stream=True))


@case(op="text_completion", outcome="completed", ttft=True, usage="api", output_tokens=TOKENS)
def ollama_generate_stream(seen: Seen) -> None:
    """ollama generate(stream=True), read to the end."""
    seen.items("parts", ollama_client().generate(model="llama-test", prompt="hello", stream=True))


@case(**EARLY)
def ollama_stream_break(seen: Seen) -> None:
    """ollama chat stream: break, and the generator is dropped."""
    seen.items("parts", ollama_client().chat(model="llama-test", messages=MESSAGES, stream=True, options=LONG),
               limit=3)


@case(**EARLY)
def ollama_stream_exception_in_the_loop(seen: Seen) -> None:
    """ollama chat stream: the caller's own exception inside the for loop."""
    parts = ollama_client().chat(model="llama-test", messages=MESSAGES, stream=True, options=LONG)
    with contextlib.suppress(ValueError):
        for index, part in enumerate(parts):
            seen("part", part)
            if index == 2:
                raise ValueError("the caller's bug")


@case(outcome="error", ttft=False, error_type="404")
def ollama_error_404(seen: Seen) -> None:
    """ollama chat answered 404 (no such model): ResponseError."""
    seen.call("chat", lambda: ollama_client().chat(model="nope", messages=MESSAGES, options={"mock_error": 404}))


@case(outcome="error", ttft=True, error_type="stream_error")
def ollama_error_line_mid_stream(seen: Seen) -> None:
    """ollama chat stream with an error line after two parts: ResponseError."""
    parts = ollama_client().chat(model="llama-test", messages=MESSAGES, stream=True, options={"mock_error_event": 2})
    seen.call("parts", lambda: [plain(part) for part in parts])


@case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS)
async def ollama_async_chat_stream(seen: Seen) -> None:
    """ollama AsyncClient chat(stream=True), async for to the end."""
    client = sdk("ollama").AsyncClient(host=MOCK_ROOT)
    await seen.aitems("parts", await client.chat(model="llama-test", messages=MESSAGES, stream=True))


# -- google-genai (no patch either) ---------------------------------------------------------------

def gemini_client() -> Any:
    genai, types = sdk("google.genai"), sdk("google.genai.types")
    return genai.Client(api_key="conformance", http_options=types.HttpOptions(base_url=MOCK_ROOT,
                                                                             api_version="v1beta"))


def gemini_config(**mock: Any) -> Any:
    types = sdk("google.genai.types")
    return types.GenerateContentConfig(http_options=types.HttpOptions(extra_body=mock))


gemini_case = functools.partial(case, op="generate_content")


@gemini_case(outcome="completed", ttft=False, usage="api", output_tokens=TOKENS, finish_reasons=["STOP"])
def gemini_generate_content(seen: Seen) -> None:
    """google-genai models.generate_content, a whole answer."""
    client = gemini_client()  # (held: a dropped client closes its connections, even under a call)
    response = client.models.generate_content(model="gemini-test", contents="hello")
    seen("text", response.text)
    seen("usage", response.usage_metadata)


@gemini_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS, finish_reasons=["STOP"])
def gemini_stream(seen: Seen) -> None:
    """google-genai models.generate_content_stream, read to the end."""
    client = gemini_client()
    seen("texts", [chunk.text for chunk in client.models.generate_content_stream(model="gemini-test",
                                                                                 contents="hello")])


@gemini_case(**EARLY)
def gemini_stream_break(seen: Seen) -> None:
    """google-genai stream: break after three chunks."""
    client = gemini_client()
    stream = client.models.generate_content_stream(model="gemini-test", contents="hello", config=gemini_config(**LONG))
    seen("texts", [chunk.text for chunk, _ in zip(stream, range(3), strict=False)])
    stream.close()


@gemini_case(outcome="error", ttft=False, error_type="429")
def gemini_error_429(seen: Seen) -> None:
    """google-genai call answered 429: ClientError."""
    client = gemini_client()
    seen.call("generate", lambda: client.models.generate_content(model="gemini-test", contents="hello",
                                                                 config=gemini_config(mock_error=429)))


@gemini_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS)
async def gemini_async_stream(seen: Seen) -> None:
    """google-genai aio generate_content_stream, async for to the end."""
    client = gemini_client()
    stream = await client.aio.models.generate_content_stream(model="gemini-test", contents="hello")
    seen("texts", [chunk.text async for chunk in stream])


# -- cohere (no patch: the httpx layer reads the v2 Chat API's SSE) --------------------------------

def cohere_client() -> Any:
    return sdk("cohere").ClientV2(api_key="conformance", base_url=MOCK_ROOT)


def cohere_options(**mock: Any) -> dict[str, Any]:
    return {"additional_body_parameters": mock, "max_retries": 0}


cohere_case = functools.partial(case, response_model=False)  # (the v2 Chat API's answers do not name it)


@cohere_case(outcome="completed", ttft=False, usage="api", output_tokens=TOKENS, finish_reasons=["COMPLETE"])
def cohere_chat(seen: Seen) -> None:
    """cohere ClientV2.chat, a whole answer."""
    seen.obj("response", cohere_client().chat(model="command-test", messages=MESSAGES))


@cohere_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS, finish_reasons=["COMPLETE"])
def cohere_chat_stream(seen: Seen) -> None:
    """cohere ClientV2.chat_stream, read to the end."""
    seen.items("events", cohere_client().chat_stream(model="command-test", messages=MESSAGES))


@cohere_case(outcome="completed", ttft=True, usage="api", finish_reasons=["TOOL_CALL"])
def cohere_chat_stream_tool_call(seen: Seen) -> None:
    """cohere chat_stream answered with a tool plan and a tool call."""
    seen.items("events", cohere_client().chat_stream(
        model="command-test", messages=MESSAGES,
        request_options=cohere_options(mock_tool_call=True, mock_reasoning="look it up")))


@cohere_case(**EARLY)
def cohere_stream_break(seen: Seen) -> None:
    """cohere chat_stream: break after four events, and the generator is closed."""
    events = cohere_client().chat_stream(model="command-test", messages=MESSAGES,
                                         request_options=cohere_options(**LONG))
    seen.items("events", events, limit=4)
    events.close()


@cohere_case(**EARLY)
def cohere_stream_exception_in_the_loop(seen: Seen) -> None:
    """cohere chat_stream: the caller's own exception inside the for loop."""
    events = cohere_client().chat_stream(model="command-test", messages=MESSAGES,
                                         request_options=cohere_options(**LONG))
    with contextlib.suppress(ValueError):
        for index, event in enumerate(events):
            seen("event", event)
            if index == 3:
                raise ValueError("the caller's bug")


@cohere_case(outcome="error", ttft=False, error_type="429")
def cohere_error_429(seen: Seen) -> None:
    """cohere chat answered 429: TooManyRequestsError."""
    seen.call("chat", lambda: cohere_client().chat(model="command-test", messages=MESSAGES,
                                                   request_options=cohere_options(mock_error=429)))


@cohere_case(outcome="error", ttft=True, error_type="stream_error")
def cohere_error_event_mid_stream(seen: Seen) -> None:
    """cohere chat_stream whose message-end reports an error after two deltas."""
    events = cohere_client().chat_stream(model="command-test", messages=MESSAGES,
                                         request_options=cohere_options(mock_error_event=2))
    seen.call("events", lambda: [plain(event) for event in events])


@cohere_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS)
async def cohere_async_chat_stream(seen: Seen) -> None:
    """cohere AsyncClientV2.chat_stream, async for to the end."""
    client = sdk("cohere").AsyncClientV2(api_key="conformance", base_url=MOCK_ROOT)
    await seen.aitems("events", client.chat_stream(model="command-test", messages=MESSAGES))

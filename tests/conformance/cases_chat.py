"""Chat completions: create, parse and the stream() helper, sync and async, and what answers carry."""

from __future__ import annotations

import copy
import pickle

import openai
import pydantic
from kit import TOKENS, Seen, aclient, case, chat_args, client

STREAMED = {"outcome": "completed", "ttft": True, "usage": "estimated", "finish_reasons": ["stop"]}
ANSWERED = {"outcome": "completed", "usage": "api", "output_tokens": TOKENS, "finish_reasons": ["stop"]}
STREAM_ATTRIBUTES = ("close", "aclose", "response", "__iter__", "__next__", "__aiter__", "__anext__", "__enter__",
                     "__exit__", "__aenter__", "__aexit__", "until_done", "get_final_completion")


class Answer(pydantic.BaseModel):
    answer: str


class GetWeather(pydantic.BaseModel):
    city: str
    unit: str


# -- create -----------------------------------------------------------------------------------------

@case(**ANSWERED)
def chat_create(seen: Seen) -> None:
    """A non-streamed chat completion."""
    seen.obj("completion", client().chat.completions.create(**chat_args()))


@case(**ANSWERED)
async def chat_create_async(seen: Seen) -> None:
    """A non-streamed chat completion, async."""
    seen.obj("completion", await aclient().chat.completions.create(**chat_args()))


@case(**STREAMED, injected_usage="api", output_tokens=TOKENS)
def chat_stream(seen: Seen) -> None:
    """create(stream=True) consumed to the end with a for loop."""
    stream = seen.obj("stream", client().chat.completions.create(**chat_args(stream=True)))
    seen("attributes", [hasattr(stream, name) for name in STREAM_ATTRIBUTES])
    seen.items("chunks", stream)


@case(**STREAMED, injected_usage="api", output_tokens=TOKENS)
async def chat_stream_async(seen: Seen) -> None:
    """create(stream=True) consumed to the end with async for."""
    stream = seen.obj("stream", await aclient().chat.completions.create(**chat_args(stream=True)))
    seen("attributes", [hasattr(stream, name) for name in STREAM_ATTRIBUTES])
    await seen.aitems("chunks", stream)


@case(**STREAMED)
def chat_stream_with(seen: Seen) -> None:
    """A stream consumed to the end inside its with block."""
    with client().chat.completions.create(**chat_args(stream=True)) as stream:
        seen.obj("entered", stream)
        seen.items("chunks", stream)
    seen("closed", stream.response.is_closed)


@case(**STREAMED)
async def chat_stream_async_with(seen: Seen) -> None:
    """An async stream consumed to the end inside async with."""
    async with await aclient().chat.completions.create(**chat_args(stream=True)) as stream:
        seen.obj("entered", stream)
        await seen.aitems("chunks", stream)
    seen("closed", stream.response.is_closed)


@case(**STREAMED)
def chat_stream_response_attributes(seen: Seen) -> None:
    """The stream's httpx response: status, headers, type, before and after consumption."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    seen.obj("response", stream.response)
    seen("status", stream.response.status_code)
    seen("headers", stream.response.headers.get("content-type"))
    seen.items("chunks", stream)
    seen("closed", stream.response.is_closed)


@case(**STREAMED)
def chat_stream_copy_and_pickle(seen: Seen) -> None:
    """copy.copy() of a stream, and what pickling it raises."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    seen.call("copy", lambda: type(copy.copy(stream)))
    seen.call("pickle", lambda: pickle.dumps(stream))
    seen.items("chunks", stream)


@case(**STREAMED)
async def chat_stream_copy_and_pickle_async(seen: Seen) -> None:
    """copy.copy() and pickling of an async stream."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True))
    seen.call("copy", lambda: type(copy.copy(stream)))
    seen.call("pickle", lambda: pickle.dumps(stream))
    await seen.aitems("chunks", stream)


@case(**STREAMED)
def chat_stream_next_calls(seen: Seen) -> None:
    """A stream read with next() until StopIteration, then next() again."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    for index in range(TOKENS + 3):
        seen.call(f"next {index}", lambda: next(stream))
    seen.call("after the end", lambda: next(stream))


@case(**STREAMED)
async def chat_stream_anext_calls(seen: Seen) -> None:
    """An async stream read with __anext__() until StopAsyncIteration."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True))
    for index in range(TOKENS + 4):
        try:
            seen(f"anext {index}", await stream.__anext__())
        except StopAsyncIteration as stop:
            seen(f"anext {index}", stop)


@case(**STREAMED)
def chat_stream_iterated_twice(seen: Seen) -> None:
    """A second for loop over a consumed stream."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    seen.items("first", stream)
    seen.items("second", stream)


@case(**STREAMED)
def chat_stream_iter_identity(seen: Seen) -> None:
    """iter(stream): its type, and whether it is the stream itself."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    iterator = iter(stream)
    seen.obj("iter", iterator)
    seen("is the stream", iterator is stream)
    seen.items("chunks", iterator)


# -- choices, tools, refusals, reasoning ------------------------------------------------------------

@case(outcome="completed", usage="api", output_tokens=2 * TOKENS, finish_reasons=["stop", "stop"])
def chat_n2(seen: Seen) -> None:
    """n=2: two choices, a finish reason each."""
    seen.obj("completion", client().chat.completions.create(**chat_args(n=2)))


@case(outcome="completed", ttft=True, usage="estimated", injected_usage="api", output_tokens=2 * TOKENS,
      finish_reasons=["stop", "stop"])
def chat_n2_stream(seen: Seen) -> None:
    """n=2 streamed: chunks of both choices interleaved."""
    seen.items("chunks", client().chat.completions.create(**chat_args(stream=True, n=2)))


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["stop", "length", "stop"])
async def chat_n3_stream_async(seen: Seen) -> None:
    """n=3 streamed async, with a different finish reason per choice."""
    stream = await aclient().chat.completions.create(
        **chat_args(stream=True, n=3, mock={"mock_finish_reason": ["stop", "length", "stop"]}))
    await seen.aitems("chunks", stream)


@case(outcome="completed", usage="api", finish_reasons=["tool_calls"])
def chat_tool_call(seen: Seen) -> None:
    """A non-streamed tool call."""
    seen.obj("completion", client().chat.completions.create(**chat_args(mock={"mock_tool_call": True})))


@case(outcome="completed", ttft=True, usage="estimated", injected_usage="api", finish_reasons=["tool_calls"])
def chat_tool_call_stream(seen: Seen) -> None:
    """Streamed tool-call deltas (the arguments count as content)."""
    seen.items("chunks", client().chat.completions.create(**chat_args(stream=True, mock={"mock_tool_call": True})))


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["tool_calls"])
async def chat_tool_call_stream_async(seen: Seen) -> None:
    """Streamed tool-call deltas, async."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock={"mock_tool_call": True}))
    await seen.aitems("chunks", stream)


@case(outcome="completed", usage="api", finish_reasons=["stop"])
def chat_refusal(seen: Seen) -> None:
    """A refusal instead of content."""
    seen.obj("completion", client().chat.completions.create(**chat_args(mock={"mock_refusal": "I cannot help."})))


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["stop"])
def chat_refusal_stream(seen: Seen) -> None:
    """Streamed refusal deltas (they count as content)."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock={"mock_refusal": "I cannot help."}))
    seen.items("chunks", stream)


@case(outcome="completed", usage="api", finish_reasons=["stop"])
def chat_reasoning(seen: Seen) -> None:
    """reasoning_content next to the answer."""
    answer = client().chat.completions.create(**chat_args(mock={"mock_reasoning": "Let me think it over."}))
    seen.obj("completion", answer)
    seen("reasoning", answer.choices[0].message.reasoning_content)  # type: ignore[attr-defined]


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["stop"])
def chat_reasoning_stream(seen: Seen) -> None:
    """Streamed reasoning_content deltas before the answer."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock={"mock_reasoning": "Let me think."}))
    seen.items("chunks", stream)


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["stop"])
async def chat_reasoning_stream_async(seen: Seen) -> None:
    """Streamed reasoning_content deltas, async."""
    stream = await aclient().chat.completions.create(
        **chat_args(stream=True, mock={"mock_reasoning": "Let me think."}))
    await seen.aitems("chunks", stream)


@case(outcome="completed", usage="api", finish_reasons=["length"])
def chat_finish_length(seen: Seen) -> None:
    """finish_reason "length" on a plain create() is not an error."""
    seen.obj("completion", client().chat.completions.create(**chat_args(mock={"mock_finish_reason": "length"})))


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["content_filter"])
def chat_finish_content_filter_stream(seen: Seen) -> None:
    """finish_reason "content_filter" at the end of a stream."""
    stream = client().chat.completions.create(
        **chat_args(stream=True, mock={"mock_finish_reason": "content_filter"}))
    seen.items("chunks", stream)


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["stop"])
def chat_unicode_stream(seen: Seen) -> None:
    """Non-ASCII and multi-byte content, exact text."""
    stream = client().chat.completions.create(
        **chat_args(stream=True, mock={"mock_content": ["héllo ", "wörld ", "😄", " 你好", "\n"]}))
    seen.items("chunks", stream)


@case(outcome="completed", usage="api", output_tokens=0, finish_reasons=["stop"])
def chat_empty_answer(seen: Seen) -> None:
    """An empty answer."""
    seen.obj("completion", client().chat.completions.create(**chat_args(mock={"mock_content": ""})))


@case(outcome="completed", usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
def chat_stream_server_sends_usage(seen: Seen) -> None:
    """A server that sends a usage chunk without being asked (as DeepSeek does)."""
    seen.items("chunks", client().chat.completions.create(**chat_args(stream=True, mock={"mock_stream_usage": True})))


# -- parse ------------------------------------------------------------------------------------------

@case(**ANSWERED)
def chat_parse(seen: Seen) -> None:
    """parse() with a pydantic response_format."""
    seen.obj("parsed", client().chat.completions.parse(**chat_args(response_format=Answer)))


@case(**ANSWERED)
async def chat_parse_async(seen: Seen) -> None:
    """parse() with a pydantic response_format, async."""
    seen.obj("parsed", await aclient().chat.completions.parse(**chat_args(response_format=Answer)))


@case(outcome="completed", usage="api", finish_reasons=["tool_calls"])
def chat_parse_tool_call(seen: Seen) -> None:
    """parse() of a strict function tool call into its pydantic model."""
    parsed = client().chat.completions.parse(**chat_args(
        tools=[openai.pydantic_function_tool(GetWeather)], mock={"mock_tool_call": {"name": "GetWeather"}}))
    seen.obj("parsed", parsed)


@case(outcome="error", error_type="ValidationError", usage="api", output_tokens=2, finish_reasons=["stop"])
def chat_parse_invalid(seen: Seen) -> None:
    """parse() of content that fails validation: the caller gets pydantic's error."""
    client().chat.completions.parse(**chat_args(response_format=Answer,
                                                mock={"mock_content": '{"wrong": 1}'}))


@case(outcome="error", error_type="ValidationError", usage="api", output_tokens=2, finish_reasons=["stop"])
async def chat_parse_invalid_async(seen: Seen) -> None:
    """parse() of content that fails validation, async."""
    await aclient().chat.completions.parse(**chat_args(response_format=Answer,
                                                       mock={"mock_content": '{"wrong": 1}'}))


@case(outcome="error", error_type="LengthFinishReasonError", usage="api", output_tokens=TOKENS,
      finish_reasons=["length"])
def chat_parse_length(seen: Seen) -> None:
    """parse() of an answer cut by the length limit raises LengthFinishReasonError."""
    client().chat.completions.parse(**chat_args(response_format=Answer, mock={"mock_finish_reason": "length"}))


@case(outcome="error", error_type="LengthFinishReasonError", usage="api", output_tokens=TOKENS,
      finish_reasons=["length"])
async def chat_parse_length_async(seen: Seen) -> None:
    """parse() cut by the length limit, async."""
    await aclient().chat.completions.parse(**chat_args(response_format=Answer, mock={"mock_finish_reason": "length"}))


# -- the stream() helper ----------------------------------------------------------------------------

@case(**STREAMED, injected_usage="api", output_tokens=TOKENS)
def chat_helper_stream(seen: Seen) -> None:
    """chat.completions.stream(): every event, then the final completion."""
    manager = seen.obj("manager", client().chat.completions.stream(**chat_args()))
    with manager as stream:
        seen.obj("stream", stream)
        seen.items("events", stream)
        seen("final", stream.get_final_completion())


@case(**STREAMED, injected_usage="api", output_tokens=TOKENS)
async def chat_helper_stream_async(seen: Seen) -> None:
    """chat.completions.stream() async: every event, then the final completion."""
    async with aclient().chat.completions.stream(**chat_args()) as stream:
        seen.obj("stream", stream)
        await seen.aitems("events", stream)
        seen("final", await stream.get_final_completion())


@case(**STREAMED)
def chat_helper_stream_final_only(seen: Seen) -> None:
    """chat.completions.stream() with get_final_completion() and no loop of our own."""
    with client().chat.completions.stream(**chat_args()) as stream:
        seen("final", stream.get_final_completion())


@case(**STREAMED)
def chat_helper_stream_parsed(seen: Seen) -> None:
    """chat.completions.stream() with a response_format: the parsed final completion."""
    with client().chat.completions.stream(**chat_args(response_format=Answer)) as stream:
        seen.items("events", stream)
        seen("final", stream.get_final_completion())


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["tool_calls"])
async def chat_helper_stream_tool_call_async(seen: Seen) -> None:
    """chat.completions.stream() of a strict tool call, async: parsed arguments at the end."""
    async with aclient().chat.completions.stream(**chat_args(
            tools=[openai.pydantic_function_tool(GetWeather)], mock={"mock_tool_call": {"name": "GetWeather"}})) as s:
        await seen.aitems("events", s)
        seen("final", await s.get_final_completion())

"""The Responses API: create (streamed and not), parse and the stream() helper, sync and async."""

from __future__ import annotations

import functools

import pydantic
from kit import MODEL, TOKENS, Seen, aclient, case, client

responses_case = functools.partial(case, op="generate_content")
ANSWERED = {"outcome": "completed", "usage": "api", "output_tokens": TOKENS}
STREAMED = {"outcome": "completed", "ttft": True, "usage": "api", "output_tokens": TOKENS}


class Answer(pydantic.BaseModel):
    answer: str


def response_args(stream: bool = False, **extra: object) -> dict[str, object]:
    return {"model": MODEL, "input": "hello", **({"stream": True} if stream else {}), **extra}


@responses_case(**ANSWERED)
def responses_create(seen: Seen) -> None:
    """responses.create(), not streamed; output_text too."""
    response = seen.obj("response", client().responses.create(**response_args()))
    seen("output_text", response.output_text)


@responses_case(**ANSWERED)
async def responses_create_async(seen: Seen) -> None:
    """responses.create(), not streamed, async."""
    seen.obj("response", await aclient().responses.create(**response_args()))


@responses_case(**STREAMED, injected_usage="api")
def responses_create_stream(seen: Seen) -> None:
    """responses.create(stream=True) consumed to the end."""
    stream = seen.obj("stream", client().responses.create(**response_args(stream=True)))
    seen.items("events", stream)


@responses_case(**STREAMED)
async def responses_create_stream_async(seen: Seen) -> None:
    """responses.create(stream=True) consumed to the end, async."""
    stream = seen.obj("stream", await aclient().responses.create(**response_args(stream=True)))
    await seen.aitems("events", stream)


@responses_case(**STREAMED)
def responses_create_stream_with(seen: Seen) -> None:
    """responses.create(stream=True) consumed inside its with block."""
    with client().responses.create(**response_args(stream=True)) as stream:
        seen.items("events", stream)


@responses_case(**STREAMED)
def responses_helper_stream(seen: Seen) -> None:
    """responses.stream(): every event, then the final response."""
    manager = seen.obj("manager", client().responses.stream(**response_args()))
    with manager as stream:
        seen.obj("stream", stream)
        seen.items("events", stream)
        seen("final", stream.get_final_response())


@responses_case(**STREAMED)
async def responses_helper_stream_async(seen: Seen) -> None:
    """responses.stream() async: every event, then the final response."""
    async with aclient().responses.stream(**response_args()) as stream:
        seen.obj("stream", stream)
        await seen.aitems("events", stream)
        seen("final", await stream.get_final_response())


@responses_case(**STREAMED)
def responses_helper_until_done(seen: Seen) -> None:
    """responses.stream() with until_done() and no loop of our own."""
    with client().responses.stream(**response_args()) as stream:
        seen("final", stream.until_done().get_final_response())


@responses_case(**ANSWERED)
def responses_parse(seen: Seen) -> None:
    """responses.parse() with a pydantic text_format."""
    parsed = seen.obj("parsed", client().responses.parse(**response_args(text_format=Answer)))
    seen("output_parsed", parsed.output_parsed)


@responses_case(**ANSWERED)
async def responses_parse_async(seen: Seen) -> None:
    """responses.parse() with a pydantic text_format, async."""
    seen.obj("parsed", await aclient().responses.parse(**response_args(text_format=Answer)))


@responses_case(outcome="error", error_type="ValidationError", usage="api")
def responses_parse_invalid(seen: Seen) -> None:
    """responses.parse() of text that fails validation: the caller gets pydantic's error."""
    client().responses.parse(**response_args(text_format=Answer, extra_body={"mock_content": '{"wrong": 1}'}))


@responses_case(**STREAMED)
def responses_helper_stream_parsed(seen: Seen) -> None:
    """responses.stream() with a text_format: the parsed final response."""
    with client().responses.stream(**response_args(text_format=Answer)) as stream:
        seen.items("events", stream)
        seen("final", stream.get_final_response().output_parsed)


@responses_case(outcome="completed", usage="api")
def responses_tool_call(seen: Seen) -> None:
    """A function call answered by responses.create()."""
    seen.obj("response", client().responses.create(**response_args(extra_body={"mock_tool_call": True})))


@responses_case(outcome="completed", ttft=True, usage="api")
def responses_tool_call_stream(seen: Seen) -> None:
    """A streamed function call: argument deltas."""
    stream = client().responses.create(**response_args(stream=True, extra_body={"mock_tool_call": True}))
    seen.items("events", stream)


@responses_case(outcome="completed", ttft=True, usage="api")
async def responses_tool_call_helper_stream_async(seen: Seen) -> None:
    """responses.stream() of a function call, async: the final response."""
    async with aclient().responses.stream(**response_args(extra_body={"mock_tool_call": True})) as stream:
        await seen.aitems("events", stream)
        seen("final", await stream.get_final_response())


@responses_case(outcome="closed_early", ttft=True)
def responses_stream_break(seen: Seen) -> None:
    """A Responses stream left after four events, then closed."""
    stream = client().responses.create(**response_args(stream=True))
    seen.items("events", stream, limit=4)
    stream.close()


@responses_case(outcome="closed_early", ttft=True)
def responses_helper_stream_break(seen: Seen) -> None:
    """responses.stream(): break inside the with block."""
    with client().responses.stream(**response_args()) as stream:
        seen.items("events", stream, limit=4)


@responses_case(outcome="closed_early", ttft=True)
async def responses_stream_break_async(seen: Seen) -> None:
    """An async Responses stream left after four events, then closed."""
    stream = await aclient().responses.create(**response_args(stream=True))
    await seen.aitems("events", stream, limit=4)
    await stream.close()

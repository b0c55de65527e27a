"""Raw access: with_raw_response, with_streaming_response and ``stream.response``, read every public way.

On the async client ``with_raw_response`` gives a LegacyAPIResponse whose parse() is synchronous
(and returns an AsyncStream for a stream); ``with_streaming_response`` gives an AsyncAPIResponse
whose parse() and readers are async. The agent never injects stream usage into these calls.
"""

from __future__ import annotations

import functools

import pydantic
from kit import MODEL, TOKENS, Seen, aclient, case, chat_args, client, headers

ANSWERED = {"outcome": "completed", "usage": "api", "output_tokens": TOKENS, "finish_reasons": ["stop"]}
# Read to the end through a raw accessor: TTFT and usage too, and never an injected usage chunk.
RAW_STREAMED = {"outcome": "completed", "ttft": True, "usage": "estimated", "injected_usage": "estimated",
                "finish_reasons": ["stop"]}
PARSED_STREAM = RAW_STREAMED
UNREAD = {"outcome": "closed_early", "ttft": False}
responses_case = functools.partial(case, op="generate_content")


class Answer(pydantic.BaseModel):
    answer: str


def see_raw(seen: Seen, raw: object) -> None:
    """The raw response object and its metadata."""
    seen.obj("raw", raw)
    seen("status", raw.status_code)  # type: ignore[attr-defined]
    seen("headers", headers(raw.headers))  # type: ignore[attr-defined]
    seen.obj("http_response", raw.http_response)  # type: ignore[attr-defined]


# -- with_raw_response, sync ------------------------------------------------------------------------

@case(**ANSWERED)
def raw_chat_create(seen: Seen) -> None:
    """with_raw_response: metadata, parse(), and parse() is parse()."""
    raw = client().chat.completions.with_raw_response.create(**chat_args())
    see_raw(seen, raw)
    parsed = seen.obj("parsed", raw.parse())
    seen("same object", raw.parse() is parsed)


@case(**ANSWERED)
def raw_chat_create_content(seen: Seen) -> None:
    """with_raw_response: content, text and http_response.json()."""
    raw = client().chat.completions.with_raw_response.create(**chat_args())
    seen("content", raw.content)
    seen("text", raw.text)
    seen("json", raw.http_response.json())


@case(**ANSWERED)
def raw_chat_parse_method(seen: Seen) -> None:
    """with_raw_response.parse() with a response_format: raw.parse() gives the parsed completion."""
    raw = client().chat.completions.with_raw_response.parse(**chat_args(response_format=Answer))
    seen.obj("parsed", raw.parse())


@case(**PARSED_STREAM)
def raw_chat_stream_parse(seen: Seen) -> None:
    """with_raw_response of a stream: parse() gives a Stream (the same one twice); iterate it."""
    raw = client().chat.completions.with_raw_response.create(**chat_args(stream=True))
    see_raw(seen, raw)
    stream = seen.obj("stream", raw.parse())
    seen("same object", raw.parse() is stream)
    seen.items("chunks", stream)


@case(outcome="closed_early", ttft=True)
def raw_chat_stream_parse_break(seen: Seen) -> None:
    """with_raw_response of a stream: parse(), three chunks, close()."""
    stream = client().chat.completions.with_raw_response.create(**chat_args(stream=True)).parse()
    seen.items("chunks", stream, limit=3)
    stream.close()


@case(**RAW_STREAMED)
def raw_chat_stream_http_lines(seen: Seen) -> None:
    """with_raw_response of a stream read as raw SSE lines through http_response.iter_lines()."""
    raw = client().chat.completions.with_raw_response.create(**chat_args(stream=True))
    seen("lines", list(raw.http_response.iter_lines()))


@case(**RAW_STREAMED)
def raw_chat_stream_http_bytes(seen: Seen) -> None:
    """with_raw_response of a stream read through http_response.iter_bytes()."""
    raw = client().chat.completions.with_raw_response.create(**chat_args(stream=True))
    seen.joined("bytes", raw.http_response.iter_bytes())


@case(**RAW_STREAMED)
def raw_chat_stream_http_read(seen: Seen) -> None:
    """with_raw_response of a stream read whole through http_response.read()."""
    raw = client().chat.completions.with_raw_response.create(**chat_args(stream=True))
    seen("body", raw.http_response.read())


@case(**RAW_STREAMED)
def raw_chat_stream_read_then_text(seen: Seen) -> None:
    """with_raw_response of a stream: http_response.read(), then the .text and .content properties."""
    raw = client().chat.completions.with_raw_response.create(**chat_args(stream=True))
    raw.http_response.read()
    seen("text", raw.text)
    seen("content", raw.content)


@case(**UNREAD)
def raw_chat_stream_content_unread(seen: Seen) -> None:
    """with_raw_response of a stream: .content before reading raises; then http_response.close()."""
    raw = client().chat.completions.with_raw_response.create(**chat_args(stream=True))
    seen.call("content", lambda: raw.content)
    raw.http_response.close()
    seen("closed", raw.is_closed)


# -- with_raw_response, async -----------------------------------------------------------------------

@case(**ANSWERED)
async def raw_chat_create_async(seen: Seen) -> None:
    """with_raw_response on the async client: a LegacyAPIResponse with a synchronous parse()."""
    raw = await aclient().chat.completions.with_raw_response.create(**chat_args())
    see_raw(seen, raw)
    parsed = seen.obj("parsed", raw.parse())
    seen("same object", raw.parse() is parsed)


@case(**PARSED_STREAM)
async def raw_chat_stream_parse_async(seen: Seen) -> None:
    """with_raw_response of an async stream: parse() (sync) gives an AsyncStream; async for over it."""
    raw = await aclient().chat.completions.with_raw_response.create(**chat_args(stream=True))
    see_raw(seen, raw)
    stream = seen.obj("stream", raw.parse())
    seen("same object", raw.parse() is stream)
    await seen.aitems("chunks", stream)


@case(**RAW_STREAMED)
async def raw_chat_stream_http_lines_async(seen: Seen) -> None:
    """with_raw_response of an async stream read through http_response.aiter_lines()."""
    raw = await aclient().chat.completions.with_raw_response.create(**chat_args(stream=True))
    seen("lines", [line async for line in raw.http_response.aiter_lines()])


@case(**RAW_STREAMED)
async def raw_chat_stream_http_read_async(seen: Seen) -> None:
    """with_raw_response of an async stream read whole through http_response.aread()."""
    raw = await aclient().chat.completions.with_raw_response.create(**chat_args(stream=True))
    seen("body", await raw.http_response.aread())


# -- with_raw_response, other endpoints -------------------------------------------------------------

@case(op="text_completion", **ANSWERED)
def raw_completions_create(seen: Seen) -> None:
    """with_raw_response of a text completion."""
    raw = client().completions.with_raw_response.create(model=MODEL, prompt="Say hello")
    see_raw(seen, raw)
    seen.obj("parsed", raw.parse())


@case(op="text_completion", **PARSED_STREAM)
def raw_completions_stream_parse(seen: Seen) -> None:
    """with_raw_response of a text completion stream, parsed and iterated."""
    raw = client().completions.with_raw_response.create(model=MODEL, prompt="Say hello", stream=True)
    seen.items("chunks", raw.parse())


@case(op="embeddings", outcome="completed")
def raw_embeddings_create(seen: Seen) -> None:
    """with_raw_response of embeddings."""
    raw = client().embeddings.with_raw_response.create(model="mock-embed", input="hello")
    see_raw(seen, raw)
    seen.obj("parsed", raw.parse())


@responses_case(outcome="completed", usage="api", output_tokens=TOKENS)
def raw_responses_create(seen: Seen) -> None:
    """with_raw_response of responses.create()."""
    raw = client().responses.with_raw_response.create(model=MODEL, input="hello")
    see_raw(seen, raw)
    seen.obj("parsed", raw.parse())


@responses_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS)
async def raw_responses_stream_parse_async(seen: Seen) -> None:
    """with_raw_response of an async Responses stream, parsed and iterated."""
    raw = await aclient().responses.with_raw_response.create(model=MODEL, input="hello", stream=True)
    await seen.aitems("events", raw.parse())


# -- with_streaming_response, sync ------------------------------------------------------------------

@case(**ANSWERED)
def streaming_chat_parse(seen: Seen) -> None:
    """with_streaming_response: metadata, parse(), and parse() is parse()."""
    with client().chat.completions.with_streaming_response.create(**chat_args()) as response:
        see_raw(seen, response)
        parsed = seen.obj("parsed", response.parse())
        seen("same object", response.parse() is parsed)


@case(**ANSWERED)
def streaming_chat_read(seen: Seen) -> None:
    """with_streaming_response of a completion, read()."""
    with client().chat.completions.with_streaming_response.create(**chat_args()) as response:
        seen("body", response.read())


@case(**ANSWERED)
def streaming_chat_text(seen: Seen) -> None:
    """with_streaming_response of a completion, text()."""
    with client().chat.completions.with_streaming_response.create(**chat_args()) as response:
        seen("text", response.text())


@case(**ANSWERED)
def streaming_chat_json(seen: Seen) -> None:
    """with_streaming_response of a completion, json()."""
    with client().chat.completions.with_streaming_response.create(**chat_args()) as response:
        seen("json", response.json())


@case(**ANSWERED)
def streaming_chat_iter_bytes(seen: Seen) -> None:
    """with_streaming_response of a completion, iter_bytes()."""
    with client().chat.completions.with_streaming_response.create(**chat_args()) as response:
        seen.joined("bytes", response.iter_bytes())


@case(**UNREAD)
def streaming_chat_unread(seen: Seen) -> None:
    """with_streaming_response of a completion, left without reading the body."""
    with client().chat.completions.with_streaming_response.create(**chat_args()) as response:
        seen("status", response.status_code)


@case(**PARSED_STREAM)
def streaming_chat_stream_parse(seen: Seen) -> None:
    """with_streaming_response of a stream: parse() gives a Stream; iterate it."""
    with client().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        see_raw(seen, response)
        stream = seen.obj("stream", response.parse())
        seen("same object", response.parse() is stream)
        seen.items("chunks", stream)


@case(**RAW_STREAMED)
def streaming_chat_stream_iter_lines(seen: Seen) -> None:
    """with_streaming_response of a stream read with iter_lines()."""
    with client().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen("lines", list(response.iter_lines()))


@case(**RAW_STREAMED)
def streaming_chat_stream_iter_bytes(seen: Seen) -> None:
    """with_streaming_response of a stream read with iter_bytes()."""
    with client().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen.joined("bytes", response.iter_bytes())


@case(**RAW_STREAMED)
def streaming_chat_stream_iter_text(seen: Seen) -> None:
    """with_streaming_response of a stream read with iter_text()."""
    with client().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen.joined("text", response.iter_text())


@case(**RAW_STREAMED)
def streaming_chat_stream_read(seen: Seen) -> None:
    """with_streaming_response of a stream read whole with read()."""
    with client().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen("body", response.read())


@case(**RAW_STREAMED)
def streaming_chat_stream_text(seen: Seen) -> None:
    """with_streaming_response of a stream read whole with text()."""
    with client().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen("text", response.text())


@case(**UNREAD)
def streaming_chat_stream_unread(seen: Seen) -> None:
    """with_streaming_response of a stream, left without reading the body."""
    with client().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen("status", response.status_code)


@case(outcome="closed_early", ttft=True)
def streaming_chat_stream_lines_break(seen: Seen) -> None:
    """with_streaming_response of a stream: three SSE lines, then leave the with block."""
    with client().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen.items("lines", response.iter_lines(), limit=3)


# -- with_streaming_response, async -----------------------------------------------------------------

@case(**ANSWERED)
async def astreaming_chat_parse(seen: Seen) -> None:
    """async with_streaming_response: metadata and await parse()."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args()) as response:
        see_raw(seen, response)
        seen.obj("parsed", await response.parse())


@case(**ANSWERED)
async def astreaming_chat_read(seen: Seen) -> None:
    """async with_streaming_response of a completion, await read()."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args()) as response:
        seen("body", await response.read())


@case(**ANSWERED)
async def astreaming_chat_text(seen: Seen) -> None:
    """async with_streaming_response of a completion, await text()."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args()) as response:
        seen("text", await response.text())


@case(**ANSWERED)
async def astreaming_chat_json(seen: Seen) -> None:
    """async with_streaming_response of a completion, await json()."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args()) as response:
        seen("json", await response.json())


@case(**PARSED_STREAM)
async def astreaming_chat_stream_parse(seen: Seen) -> None:
    """async with_streaming_response of a stream: await parse() gives an AsyncStream; async for."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        see_raw(seen, response)
        stream = seen.obj("stream", await response.parse())
        await seen.aitems("chunks", stream)


@case(**RAW_STREAMED)
async def astreaming_chat_stream_iter_lines(seen: Seen) -> None:
    """async with_streaming_response of a stream read with iter_lines()."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen("lines", [line async for line in response.iter_lines()])


@case(**RAW_STREAMED)
async def astreaming_chat_stream_iter_bytes(seen: Seen) -> None:
    """async with_streaming_response of a stream read with iter_bytes()."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        await seen.ajoined("bytes", response.iter_bytes())


@case(**RAW_STREAMED)
async def astreaming_chat_stream_iter_text(seen: Seen) -> None:
    """async with_streaming_response of a stream read with iter_text()."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        await seen.ajoined("text", response.iter_text())


@case(**RAW_STREAMED)
async def astreaming_chat_stream_read(seen: Seen) -> None:
    """async with_streaming_response of a stream read whole with await read()."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen("body", await response.read())


@case(**UNREAD)
async def astreaming_chat_stream_unread(seen: Seen) -> None:
    """async with_streaming_response of a stream, left without reading the body."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen("status", response.status_code)


# -- with_streaming_response, other endpoints -------------------------------------------------------

@case(op="text_completion", **RAW_STREAMED)
def streaming_completions_stream_iter_lines(seen: Seen) -> None:
    """with_streaming_response of a text completion stream read with iter_lines()."""
    with client().completions.with_streaming_response.create(model=MODEL, prompt="Say hello",
                                                              stream=True) as response:
        seen("lines", list(response.iter_lines()))


@case(op="embeddings", outcome="completed")
def streaming_embeddings_json(seen: Seen) -> None:
    """with_streaming_response of embeddings, json()."""
    with client().embeddings.with_streaming_response.create(model="mock-embed", input="hello") as response:
        seen("json", response.json())


@responses_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS)
def streaming_responses_stream_iter_lines(seen: Seen) -> None:
    """with_streaming_response of a Responses stream read with iter_lines()."""
    with client().responses.with_streaming_response.create(model=MODEL, input="hello", stream=True) as response:
        seen("lines", list(response.iter_lines()))


@responses_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS)
async def astreaming_responses_stream_parse(seen: Seen) -> None:
    """async with_streaming_response of a Responses stream: await parse(), async for."""
    async with aclient().responses.with_streaming_response.create(model=MODEL, input="hello",
                                                                   stream=True) as response:
        await seen.aitems("events", await response.parse())


# -- stream.response after create(stream=True) ------------------------------------------------------

@case(outcome="completed", ttft=True, usage="estimated", injected_usage="api", finish_reasons=["stop"])
def stream_response_iter_lines(seen: Seen) -> None:
    """create(stream=True), then the body read as raw lines through stream.response.iter_lines()."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    seen("lines", list(stream.response.iter_lines()))


@case(outcome="completed", ttft=True, usage="estimated", injected_usage="api", finish_reasons=["stop"])
def stream_response_read(seen: Seen) -> None:
    """create(stream=True), then stream.response.read()."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    seen("body", stream.response.read())


@case(outcome="completed", ttft=True, usage="estimated", injected_usage="api", finish_reasons=["stop"])
def stream_response_iter_bytes(seen: Seen) -> None:
    """create(stream=True), then stream.response.iter_bytes()."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    seen.joined("bytes", stream.response.iter_bytes())


@case(outcome="completed", ttft=True, usage="estimated", injected_usage="api", finish_reasons=["stop"])
async def stream_response_iter_lines_async(seen: Seen) -> None:
    """async create(stream=True), then stream.response.aiter_lines()."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True))
    seen("lines", [line async for line in stream.response.aiter_lines()])


# -- the parse() methods through raw access ---------------------------------------------------------

@case(**ANSWERED)
def streaming_chat_parse_method(seen: Seen) -> None:
    """with_streaming_response.parse() with a response_format: the parsed completion."""
    with client().chat.completions.with_streaming_response.parse(**chat_args(response_format=Answer)) as response:
        seen.obj("parsed", response.parse())


@case(**ANSWERED)
async def astreaming_chat_parse_method_json(seen: Seen) -> None:
    """async with_streaming_response.parse() read as plain JSON."""
    async with aclient().chat.completions.with_streaming_response.parse(
            **chat_args(response_format=Answer)) as response:
        seen("json", await response.json())


@responses_case(outcome="completed", usage="api", output_tokens=TOKENS)
def raw_responses_parse(seen: Seen) -> None:
    """responses.with_raw_response.parse() with a text_format: raw.parse() gives the parsed response."""
    raw = client().responses.with_raw_response.parse(model=MODEL, input="hello", text_format=Answer)
    seen.obj("parsed", raw.parse())

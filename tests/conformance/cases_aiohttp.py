"""LLM calls sent with aiohttp's ``ClientSession``, no SDK: the OpenAI, Anthropic and Ollama
protocols read every public way (lines, ``iter_any``, ``iter_chunked``, ``read``, ``json``), and
every way a caller leaves a body. What the caller sees must not change; aiohttp's own buffering
decides nothing of what the agent reports."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from typing import Any

from kit import CLOSED_URL, MOCK_ROOT, MOCK_URL, TOKENS, Seen, Unsupported, case

MESSAGES = [{"role": "user", "content": "hello"}]
STREAMED = {"outcome": "completed", "ttft": True, "usage": "estimated", "finish_reasons": ["stop"]}
#: A stream that pauses for 3 s after its third token: the caller leaves (by the third) while the
#: server is still sending, however late a loaded machine runs it (aiohttp reads ahead of its
#: caller, so a stream whose every byte has arrived is complete).
LONG = {"mock_tokens": 12, "mock_stall_at": 3, "mock_stall": 3.0}
EARLY = {"outcome": "closed_early", "ttft": True}


def session(**options: Any) -> Any:
    try:
        import aiohttp
    except ImportError as missing:
        raise Unsupported("aiohttp is not installed") from missing
    return aiohttp.ClientSession(**options)


def chat(stream: bool = True, **mock: Any) -> dict[str, Any]:
    return {"model": "mock-gpt", "messages": MESSAGES, "stream": stream, **mock}


async def aenumerate(lines: Any) -> Any:
    index = 0
    async for line in lines:
        yield index, line
        index += 1


def see_response(seen: Seen, response: Any) -> None:
    seen("status", response.status)
    seen("content type", response.headers.get("Content-Type"))


@case(**STREAMED)
async def aiohttp_openai_stream_lines(seen: Seen) -> None:
    """OpenAI chat stream, ``async for line in response.content`` to the end."""
    async with session() as client, client.post(MOCK_URL + "/chat/completions", json=chat()) as response:
        see_response(seen, response)
        await seen.ajoined("lines", response.content)


@case(**STREAMED)
async def aiohttp_openai_stream_iter_any(seen: Seen) -> None:
    """OpenAI chat stream, ``iter_any()`` to the end, the body sent as bytes."""
    async with session() as client, client.post(MOCK_URL + "/chat/completions",
                                                data=b'{"model": "mock-gpt", "stream": true, "messages": []}',
                                                headers={"Content-Type": "application/json"}) as response:
        await seen.ajoined("bytes", response.content.iter_any())


@case(**STREAMED)
async def aiohttp_openai_stream_iter_chunked(seen: Seen) -> None:
    """OpenAI chat stream, ``iter_chunked(7)`` (events cut across pieces) to the end."""
    async with session() as client, client.post(MOCK_URL + "/chat/completions", json=chat()) as response:
        await seen.ajoined("bytes", response.content.iter_chunked(7))


@case(**STREAMED)
async def aiohttp_openai_stream_read_whole(seen: Seen) -> None:
    """OpenAI chat stream, read whole with ``await response.text()``."""
    async with session() as client, client.post(MOCK_URL + "/chat/completions", json=chat()) as response:
        seen("text", await response.text())


@case(**STREAMED)
async def aiohttp_openai_stream_gzip(seen: Seen) -> None:
    """OpenAI chat stream sent gzip-encoded, which aiohttp decodes before anyone reads it."""
    async with session() as client, client.post(MOCK_URL + "/chat/completions",
                                                json=chat(mock_dialect="gzip")) as response:
        see_response(seen, response)
        await seen.ajoined("lines", response.content)


@case(**STREAMED)
async def aiohttp_openai_stream_gzip_undecoded(seen: Seen) -> None:
    """The same with ``auto_decompress=False``: the caller reads the gzip bytes, the agent decodes its own copy."""
    async with session(auto_decompress=False) as client, client.post(
            MOCK_URL + "/chat/completions", json=chat(mock_dialect="gzip")) as response:
        seen("text", gzip.decompress(await response.read()).decode())


@case(outcome="completed", ttft=False, usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
async def aiohttp_openai_create_json(seen: Seen) -> None:
    """OpenAI chat, a whole answer, ``await response.json()`` through the module-level ``aiohttp.request``."""
    import aiohttp

    async with aiohttp.request("POST", MOCK_URL + "/chat/completions", json=chat(stream=False)) as response:
        see_response(seen, response)
        seen("answer", await response.json())


@case(**EARLY)
async def aiohttp_openai_stream_break(seen: Seen) -> None:
    """OpenAI chat stream: six lines (three events), then ``break`` inside ``async with`` (the response is released)."""
    async with session() as client, client.post(MOCK_URL + "/chat/completions", json=chat(**LONG)) as response:
        await seen.aitems("lines", response.content, limit=6)


@case(**EARLY)
async def aiohttp_openai_stream_exception_in_the_loop(seen: Seen) -> None:
    """OpenAI chat stream: the caller's own exception inside the loop."""
    with contextlib.suppress(ValueError):
        async with session() as client, client.post(MOCK_URL + "/chat/completions", json=chat(**LONG)) as response:
            async for index, line in aenumerate(response.content):
                seen("line", line)
                if index == 5:  # (past the first content: an event and its blank line per token)
                    raise ValueError("the caller's bug")


@case(**EARLY)
async def aiohttp_openai_stream_closed(seen: Seen) -> None:
    """OpenAI chat stream without ``async with``: a few pieces, then ``response.close()``."""
    async with session() as client:
        response = await client.post(MOCK_URL + "/chat/completions", json=chat(**LONG))
        await seen.aitems("lines", response.content, limit=6)
        response.close()


@case(outcome="cancelled", ttft=True)
async def aiohttp_openai_stream_cancelled(seen: Seen) -> None:
    """OpenAI chat stream whose reading task is cancelled after the first content."""
    async with session() as client:
        async def read() -> None:
            async with client.post(MOCK_URL + "/chat/completions", json=chat(**LONG)) as response:
                async for index, line in aenumerate(response.content):
                    if index == 5:
                        seen("past the first content", line)
                        await asyncio.sleep(10)

        task = asyncio.ensure_future(read())
        await asyncio.sleep(0)
        while not seen.entries:
            await asyncio.sleep(0.005)
        task.cancel()
        seen("cancelled", (await asyncio.gather(task, return_exceptions=True))[0].__class__.__name__)


@case(outcome="error", ttft=False, error_type="429")
async def aiohttp_openai_error_429(seen: Seen) -> None:
    """OpenAI chat answered 429, read as JSON."""
    async with session() as client, client.post(MOCK_URL + "/chat/completions",
                                                json=chat(stream=False, mock_error=429)) as response:
        see_response(seen, response)
        seen("error", await response.json())


@case(outcome="error", ttft=False, error_type="ClientResponseError")
async def aiohttp_openai_raise_for_status(seen: Seen) -> None:
    """OpenAI chat answered 500 on a session with ``raise_for_status=True``: the caller gets ClientResponseError."""
    async with session(raise_for_status=True) as client:
        try:
            await client.post(MOCK_URL + "/chat/completions", json=chat(stream=False, mock_error=500))
        except Exception as error:
            seen("raised", [type(error).__name__, getattr(error, "status", None)])


@case(outcome="error", ttft=True, error_type="ClientPayloadError")
async def aiohttp_openai_connection_dropped_mid_stream(seen: Seen) -> None:
    """OpenAI chat stream whose connection drops after three tokens."""
    async with session() as client, client.post(MOCK_URL + "/chat/completions",
                                                json=chat(mock_drop_after=3)) as response:
        try:
            async for line in response.content:
                seen("line", line)
        except Exception as error:
            seen("raised", type(error).__name__)


@case(outcome="error", ttft=False, error_type="ClientConnectorError")
async def aiohttp_connection_refused(seen: Seen) -> None:
    """OpenAI chat to a port nobody listens on."""
    async with session() as client:
        try:
            await client.post(CLOSED_URL + "/chat/completions", json=chat())
        except Exception as error:
            seen("raised", type(error).__name__)


@case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS, finish_reasons=["end_turn"])
async def aiohttp_anthropic_stream(seen: Seen) -> None:
    """The Messages API stream, read with aiohttp's lines."""
    body = {"model": "claude-test", "max_tokens": 256, "messages": MESSAGES, "stream": True}
    async with session(base_url=MOCK_ROOT) as client, client.post("/v1/messages", json=body) as response:
        await seen.ajoined("lines", response.content)


@case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
async def aiohttp_ollama_stream(seen: Seen) -> None:
    """Ollama chat, NDJSON lines, read with aiohttp."""
    async with session() as client, client.post(MOCK_ROOT + "/api/chat", json={
            "model": "llama-test", "messages": MESSAGES}) as response:
        await seen.ajoined("lines", response.content)

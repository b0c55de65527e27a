"""Real recorded answers (cassettes/, see its NOTICE.md) replayed through the SDK, bare and under the agent.

The span must carry the recording's own model, response id, usage and finish reasons.
"""

from __future__ import annotations

import functools

from kit import REPLAY_URL, Seen, aclient, case, client

recorded = functools.partial(case, outcome="completed")
JOKE = [{"role": "user", "content": "Tell me a joke about opentelemetry"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


def replay(name: str) -> str:
    return f"{REPLAY_URL}/{name}/v1"


@recorded(recorded="chat", usage="api")
def recorded_chat(seen: Seen) -> None:
    """A recorded chat completion (gzip-encoded)."""
    seen.obj("completion", client(replay("chat")).chat.completions.create(model="gpt-3.5-turbo", messages=JOKE))


@recorded(recorded="chat", usage="api")
async def recorded_chat_async(seen: Seen) -> None:
    """A recorded chat completion, async."""
    completion = await aclient(replay("chat")).chat.completions.create(model="gpt-3.5-turbo", messages=JOKE)
    seen.obj("completion", completion)


@recorded(recorded="chat", usage="api")
def recorded_chat_raw_response(seen: Seen) -> None:
    """A recorded chat completion through with_raw_response: headers, body, parse()."""
    raw = client(replay("chat")).chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=JOKE)
    seen("headers", sorted(raw.headers.keys()))
    seen("content", raw.content)
    seen.obj("parsed", raw.parse())


@recorded(recorded="chat_stream", ttft=True, usage="estimated")
def recorded_chat_stream(seen: Seen) -> None:
    """A recorded chat stream (with OpenAI's obfuscation field) consumed to the end."""
    stream = client(replay("chat_stream")).chat.completions.create(model="gpt-3.5-turbo", messages=JOKE, stream=True)
    seen.items("chunks", stream)


@recorded(recorded="chat_stream", ttft=True, usage="estimated")
async def recorded_chat_stream_async(seen: Seen) -> None:
    """A recorded chat stream, async for to the end."""
    stream = await aclient(replay("chat_stream")).chat.completions.create(model="gpt-3.5-turbo", messages=JOKE,
                                                                         stream=True)
    await seen.aitems("chunks", stream)


@recorded(recorded="chat_stream", ttft=True, usage="estimated")
def recorded_chat_stream_lines(seen: Seen) -> None:
    """A recorded chat stream read as raw lines through with_streaming_response."""
    with client(replay("chat_stream")).chat.completions.with_streaming_response.create(
            model="gpt-3.5-turbo", messages=JOKE, stream=True) as response:
        seen("lines", list(response.iter_lines()))


@recorded(recorded="chat_stream_usage_deepseek", ttft=True, usage="api")
def recorded_chat_stream_with_usage(seen: Seen) -> None:
    """A recorded DeepSeek stream whose last chunk carries usage next to the finish reason."""
    stream = client(replay("chat_stream_usage_deepseek")).chat.completions.create(
        model="deepseek-chat", messages=JOKE, stream=True)
    seen.items("chunks", stream)


@recorded(recorded="chat_tool_call_stream", ttft=True, usage="estimated")
def recorded_tool_call_stream(seen: Seen) -> None:
    """A recorded stream of tool-call deltas, through the stream() helper."""
    with client(replay("chat_tool_call_stream")).chat.completions.stream(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": "What's the weather like in San Francisco?"}],
            tools=[WEATHER_TOOL]) as stream:  # type: ignore[list-item]
        seen.items("events", stream)
        seen("final", stream.get_final_completion())


@recorded(recorded="embeddings", op="embeddings")
def recorded_embeddings(seen: Seen) -> None:
    """Recorded base64 embeddings, decoded by the SDK."""
    embeddings = client(replay("embeddings")).embeddings.create(
        model="text-embedding-ada-002", input="Tell me a joke about opentelemetry")
    seen.obj("embeddings", embeddings)


@recorded(recorded="embeddings", op="embeddings")
async def recorded_embeddings_async(seen: Seen) -> None:
    """Recorded base64 embeddings, async."""
    embeddings = await aclient(replay("embeddings")).embeddings.create(
        model="text-embedding-ada-002", input="Tell me a joke about opentelemetry")
    seen.obj("embeddings", embeddings)


@recorded(recorded="responses_stream", op="generate_content", ttft=True, usage="api")
def recorded_responses_stream(seen: Seen) -> None:
    """A recorded Responses stream consumed to the end."""
    stream = client(replay("responses_stream")).responses.create(model="gpt-4.1-nano", input="What is 2+2?",
                                                                 stream=True)
    seen.items("events", stream)


@recorded(recorded="responses_stream", op="generate_content", ttft=True, usage="api")
async def recorded_responses_helper_stream_async(seen: Seen) -> None:
    """A recorded Responses stream through responses.stream(), async."""
    async with aclient(replay("responses_stream")).responses.stream(model="gpt-4.1-nano",
                                                                    input="What is 2+2?") as stream:
        await seen.aitems("events", stream)
        seen("final", await stream.get_final_response())

"""LLM_INJECT_STREAM_USAGE: these cases also run with it on, where the caller must still see exactly
what it sees bare (no extra usage chunk, no extra bytes), and the span gets the API's usage."""

from __future__ import annotations

import functools
import json
import os
import urllib.request
from typing import Any

from kit import MOCK_URL, MODEL, REJECTING_URL, TOKENS, Seen, aclient, case, chat_args, client

INJECTED = {"outcome": "completed", "ttft": True, "usage": "estimated", "injected_usage": "api",
            "output_tokens": TOKENS, "finish_reasons": ["stop"]}
USERS_OWN = {"outcome": "completed", "ttft": True, "usage": "api", "injected_usage": "api",
             "output_tokens": TOKENS, "finish_reasons": ["stop"]}
NOT_INJECTED = {"outcome": "completed", "ttft": True, "usage": "estimated", "injected_usage": "estimated",
                "finish_reasons": ["stop"]}
text_case = functools.partial(case, op="text_completion")


@case(**INJECTED)
def inject_chat_stream(seen: Seen) -> None:
    """A plain stream: no usage chunk reaches the caller, whatever the agent asked for."""
    stream = seen.obj("stream", client().chat.completions.create(**chat_args(stream=True)))
    seen.items("chunks", stream)


@case(**INJECTED)
async def inject_chat_stream_async(seen: Seen) -> None:
    """A plain async stream, async for to the end."""
    await seen.aitems("chunks", await aclient().chat.completions.create(**chat_args(stream=True)))


@case(**INJECTED)
def inject_chat_stream_next_calls(seen: Seen) -> None:
    """A plain stream read with next() until StopIteration."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    for index in range(TOKENS + 3):
        seen.call(f"next {index}", lambda: next(stream))


@case(**INJECTED)
def inject_chat_stream_with(seen: Seen) -> None:
    """A plain stream inside its with block."""
    with client().chat.completions.create(**chat_args(stream=True)) as stream:
        seen.items("chunks", stream)


@case(outcome="completed", ttft=True, usage="estimated", injected_usage="api", output_tokens=2 * TOKENS,
      finish_reasons=["stop", "stop"])
def inject_chat_stream_n2(seen: Seen) -> None:
    """n=2: the usage of both choices, and still no usage chunk for the caller."""
    seen.items("chunks", client().chat.completions.create(**chat_args(stream=True, n=2)))


@case(outcome="completed", ttft=True, usage="estimated", injected_usage="api", finish_reasons=["tool_calls"])
def inject_tool_call_stream(seen: Seen) -> None:
    """Streamed tool-call deltas."""
    seen.items("chunks", client().chat.completions.create(**chat_args(stream=True, mock={"mock_tool_call": True})))


@case(**INJECTED)
def inject_helper_stream(seen: Seen) -> None:
    """chat.completions.stream(): the same events and the same final completion (usage None)."""
    with client().chat.completions.stream(**chat_args()) as stream:
        seen.items("events", stream)
        seen("final", stream.get_final_completion())


@text_case(**INJECTED)
def inject_completions_stream(seen: Seen) -> None:
    """A plain text completion stream."""
    seen.items("chunks", client().completions.create(model=MODEL, prompt="Say hello", stream=True))


@case(**USERS_OWN)
def inject_user_include_usage(seen: Seen) -> None:
    """The caller asks for usage in stream_options: it gets its usage-only chunk, as bare."""
    stream = client().chat.completions.create(**chat_args(stream=True, stream_options={"include_usage": True}))
    seen.items("chunks", stream)


@case(**USERS_OWN)
async def inject_user_include_usage_async(seen: Seen) -> None:
    """The caller asks for usage in stream_options, async."""
    stream = await aclient().chat.completions.create(
        **chat_args(stream=True, stream_options={"include_usage": True}))
    await seen.aitems("chunks", stream)


@case(**USERS_OWN)
def inject_user_include_usage_extra_body(seen: Seen) -> None:
    """The caller asks for usage through extra_body: it gets its usage-only chunk, as bare."""
    stream = client().chat.completions.create(
        **chat_args(stream=True, extra_body={"stream_options": {"include_usage": True}}))
    seen.items("chunks", stream)


@case(**NOT_INJECTED)
def inject_user_include_usage_false(seen: Seen) -> None:
    """The caller sets stream_options itself without usage: the agent leaves it alone."""
    stream = client().chat.completions.create(**chat_args(stream=True, stream_options={"include_usage": False}))
    seen.items("chunks", stream)


@case(**NOT_INJECTED)
def inject_raw_response_lines(seen: Seen) -> None:
    """with_raw_response of a stream read as raw lines: exactly the bare lines."""
    raw = client().chat.completions.with_raw_response.create(**chat_args(stream=True))
    seen("lines", list(raw.http_response.iter_lines()))


@case(**NOT_INJECTED)
def inject_raw_response_parse(seen: Seen) -> None:
    """with_raw_response of a stream, parsed and iterated: the same chunks."""
    stream = client().chat.completions.with_raw_response.create(**chat_args(stream=True)).parse()
    seen.items("chunks", stream)


@case(**NOT_INJECTED)
def inject_streaming_response_bytes(seen: Seen) -> None:
    """with_streaming_response of a stream read as bytes: exactly the bare bytes."""
    with client().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        seen.joined("bytes", response.iter_bytes())


@case(**NOT_INJECTED)
async def inject_streaming_response_parse_async(seen: Seen) -> None:
    """async with_streaming_response of a stream, parsed and iterated: the same chunks."""
    async with aclient().chat.completions.with_streaming_response.create(**chat_args(stream=True)) as response:
        await seen.aitems("chunks", await response.parse())


@case(**INJECTED)
def inject_stream_response_lines(seen: Seen) -> None:
    """create(stream=True) read through stream.response.iter_lines(): exactly the bare lines."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    seen("lines", list(stream.response.iter_lines()))


@case(**INJECTED)
async def inject_stream_response_read_async(seen: Seen) -> None:
    """async create(stream=True) read through stream.response.aread(): exactly the bare bytes."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True))
    seen("body", await stream.response.aread())


@case(outcome="closed_early", ttft=True, usage="estimated", injected_usage="estimated")
def inject_stream_break(seen: Seen) -> None:
    """A stream left after three chunks: the usage chunk never came, so the usage is estimated."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock={"mock_tokens": 30}))
    seen.items("chunks", stream, limit=3)
    stream.close()


@case(outcome="completed", usage="api", injected_usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
def inject_not_streamed(seen: Seen) -> None:
    """A non-streamed call is left as it is."""
    seen.obj("completion", client().chat.completions.create(**chat_args()))


@case(op="generate_content", outcome="completed", ttft=True, usage="api", injected_usage="api",
      output_tokens=TOKENS)
def inject_responses_stream(seen: Seen) -> None:
    """A Responses stream (which reports usage by itself) is left as it is."""
    seen.items("events", client().responses.create(model=MODEL, input="hello", stream=True))


# -- a server that rejects stream_options (last: the agent may remember it) -------------------------

@case(**NOT_INJECTED)
def inject_server_rejects_stream_options(seen: Seen) -> None:
    """A server that answers 400 to stream_options: the call succeeds exactly as bare."""
    stream = seen.obj("stream", client(REJECTING_URL).chat.completions.create(**chat_args(stream=True)))
    seen.items("chunks", stream)


@case(**NOT_INJECTED)
async def inject_server_rejects_stream_options_async(seen: Seen) -> None:
    """A server that answers 400 to stream_options, async."""
    stream = await aclient(REJECTING_URL).chat.completions.create(**chat_args(stream=True))
    await seen.aitems("chunks", stream)


@case(outcome="error", ttft=False, usage="absent", injected_usage="absent", error_type="BadRequestError")
def inject_user_stream_options_rejected(seen: Seen) -> None:
    """The caller's own stream_options rejected by the server: the same 400 as bare."""
    client(REJECTING_URL).chat.completions.create(**chat_args(stream=True, stream_options={"include_usage": True}))


@case(**INJECTED)
def inject_after_another_server_rejected(seen: Seen) -> None:
    """After another server (same host, another port) rejected stream_options, this one still gets them."""
    seen.items("chunks", client().chat.completions.create(**chat_args(stream=True)))


# -- what the server and the client's event hooks see: one request, as bare ---------------------------

def _counting_client(base_url: str = "") -> tuple[Any, dict[str, int]]:
    """A client whose httpx event hooks count the requests and responses they see."""
    import openai

    counts = {"request": 0, "response": 0}

    def count(kind: str) -> Any:
        return lambda _: counts.__setitem__(kind, counts[kind] + 1)

    hooks = {"request": [count("request")], "response": [count("response")]}
    return openai.OpenAI(base_url=base_url or MOCK_URL, api_key="sk-conformance", max_retries=0,
                         http_client=openai.DefaultHttpxClient(event_hooks=hooks)), counts


def _server_saw(label: str, base_url: str = "") -> int:
    """How many requests labelled ``label`` the mock LLM at ``base_url`` received."""
    root = (base_url or MOCK_URL).removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/mock/requests/{label}", timeout=10) as answer:
        return int(json.load(answer)["count"])


@case(outcome="error", ttft=False, usage="absent", injected_usage="absent", error_type="BadRequestError")
def inject_unrelated_400(seen: Seen) -> None:
    """A 400 about something else than stream_options: the caller's own answer, sent once (the
    server sees one request, the event hooks fire once each), even with usage injected."""
    label = f"unrelated-400-{os.getpid()}"
    chat, counts = _counting_client()
    try:
        chat.chat.completions.create(**chat_args(stream=True, mock={"mock_error": 400, "mock_label": label}))
    finally:
        seen("hooks", counts)
        seen("server saw", _server_saw(label))


@case(**NOT_INJECTED)
def inject_refused_once_unseen(seen: Seen) -> None:
    """A server that refuses stream_options: with usage injected it gets the request once more,
    without the option, below the client's event hooks (they fire once), and the call succeeds as bare."""
    label = f"refused-{os.getpid()}"
    chat, counts = _counting_client(REJECTING_URL)
    stream = chat.chat.completions.create(**chat_args(stream=True, mock={"mock_label": label}))
    seen.items("chunks", stream)
    seen("hooks", counts)
    seen("server saw at most one more", _server_saw(label, REJECTING_URL) <= 2)

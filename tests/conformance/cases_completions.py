"""Legacy text completions and embeddings, sync and async."""

from __future__ import annotations

import functools

from kit import MODEL, TOKENS, Seen, aclient, case, client

text_case = functools.partial(case, op="text_completion")
embeddings_case = functools.partial(case, op="embeddings", outcome="completed")
STREAMED = {"outcome": "completed", "ttft": True, "usage": "estimated", "finish_reasons": ["stop"]}


def completion_args(stream: bool = False, **extra: object) -> dict[str, object]:
    return {"model": MODEL, "prompt": "Say hello", **({"stream": True} if stream else {}), **extra}


def embedding_args(**extra: object) -> dict[str, object]:
    return {"model": "mock-embed", "input": ["first text", "second text"], **extra}


# -- completions ------------------------------------------------------------------------------------

@text_case(outcome="completed", usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
def completions_create(seen: Seen) -> None:
    """A non-streamed text completion."""
    seen.obj("completion", client().completions.create(**completion_args()))


@text_case(outcome="completed", usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
async def completions_create_async(seen: Seen) -> None:
    """A non-streamed text completion, async."""
    seen.obj("completion", await aclient().completions.create(**completion_args()))


@text_case(**STREAMED, injected_usage="api", output_tokens=TOKENS)
def completions_stream(seen: Seen) -> None:
    """A streamed text completion consumed to the end."""
    stream = seen.obj("stream", client().completions.create(**completion_args(stream=True)))
    seen.items("chunks", stream)


@text_case(**STREAMED, injected_usage="api", output_tokens=TOKENS)
async def completions_stream_async(seen: Seen) -> None:
    """A streamed text completion consumed to the end, async."""
    stream = seen.obj("stream", await aclient().completions.create(**completion_args(stream=True)))
    await seen.aitems("chunks", stream)


@text_case(**STREAMED)
def completions_stream_with(seen: Seen) -> None:
    """A streamed text completion inside its with block."""
    with client().completions.create(**completion_args(stream=True)) as stream:
        seen.items("chunks", stream)


@text_case(outcome="completed", usage="api", output_tokens=2 * TOKENS, finish_reasons=["stop", "length"])
def completions_n2(seen: Seen) -> None:
    """n=2 text completions with a finish reason each."""
    seen.obj("completion", client().completions.create(
        **completion_args(n=2, extra_body={"mock_finish_reason": ["stop", "length"]})))


@text_case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["stop", "stop"])
def completions_n2_stream(seen: Seen) -> None:
    """n=2 streamed text completions."""
    seen.items("chunks", client().completions.create(**completion_args(stream=True, n=2)))


@text_case(outcome="completed", ttft=True, usage="api", output_tokens=TOKENS, injected_usage="api",
           finish_reasons=["stop"])
def completions_stream_user_include_usage(seen: Seen) -> None:
    """The caller asks for the usage chunk of a text completion stream and gets it."""
    stream = client().completions.create(**completion_args(stream=True, stream_options={"include_usage": True}))
    seen.items("chunks", stream)


@text_case(outcome="closed_early", ttft=True)
def completions_stream_break(seen: Seen) -> None:
    """A text completion stream left after three chunks, then closed."""
    stream = client().completions.create(**completion_args(stream=True))
    seen.items("chunks", stream, limit=3)
    stream.close()


# -- embeddings -------------------------------------------------------------------------------------

@embeddings_case()
def embeddings_create(seen: Seen) -> None:
    """Embeddings of two texts (the SDK asks for base64 and decodes)."""
    seen.obj("embeddings", client().embeddings.create(**embedding_args()))


@embeddings_case()
async def embeddings_create_async(seen: Seen) -> None:
    """Embeddings, async."""
    seen.obj("embeddings", await aclient().embeddings.create(**embedding_args()))


@embeddings_case()
def embeddings_float_format(seen: Seen) -> None:
    """Embeddings with encoding_format="float"."""
    seen.obj("embeddings", client().embeddings.create(**embedding_args(encoding_format="float")))


@embeddings_case()
def embeddings_single_input(seen: Seen) -> None:
    """Embeddings of one string."""
    seen.obj("embeddings", client().embeddings.create(model="mock-embed", input="just one"))

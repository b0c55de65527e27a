"""Failures: HTTP 4xx and 5xx, retries, a closed port, read timeouts; the caller gets the SDK's exception."""

from __future__ import annotations

import functools

from kit import CLOSED_URL, MODEL, RAISED, TOKENS, Seen, aclient, case, chat_args, client

failed = functools.partial(case, outcome="error", ttft=False, usage="absent")


def see_error(seen: Seen, error: Exception) -> None:
    """The exception's type and message, status, body and the response headers that matter."""
    seen("error", error)
    seen("body", getattr(error, "body", None))
    response = getattr(error, "response", None)
    if response is not None:
        seen("retry-after", [response.headers.get("retry-after"), response.headers.get("retry-after-ms")])


def create_failing(seen: Seen, status: int, **options: object) -> None:
    try:
        client(**options).chat.completions.create(**chat_args(mock={"mock_error": status}))
    except Exception as error:
        see_error(seen, error)
        raise


# -- HTTP errors ------------------------------------------------------------------------------------

@failed(error_type="BadRequestError")
def error_400(seen: Seen) -> None:
    """HTTP 400 answers BadRequestError."""
    create_failing(seen, 400)


@failed(error_type="AuthenticationError")
def error_401(seen: Seen) -> None:
    """HTTP 401 answers AuthenticationError."""
    create_failing(seen, 401)


@failed(error_type="NotFoundError")
def error_404(seen: Seen) -> None:
    """HTTP 404 answers NotFoundError."""
    create_failing(seen, 404)


@failed(error_type="RateLimitError")
def error_429_with_retry_after(seen: Seen) -> None:
    """HTTP 429 with retry-after, no retries left: RateLimitError, the header readable."""
    create_failing(seen, 429)


@failed(error_type="InternalServerError")
def error_500_retries_exhausted(seen: Seen) -> None:
    """HTTP 500 on every attempt of three: one call, one error."""
    create_failing(seen, 500, max_retries=2)


@failed(error_type="BadRequestError")
def error_400_stream(seen: Seen) -> None:
    """HTTP 400 on create(stream=True): raised by create(), before any stream exists."""
    client().chat.completions.create(**chat_args(stream=True, mock={"mock_error": 400}))


@failed(error_type="BadRequestError")
def error_400_with_raw_response(seen: Seen) -> None:
    """HTTP 400 through with_raw_response."""
    client().chat.completions.with_raw_response.create(**chat_args(mock={"mock_error": 400}))


@failed(error_type="BadRequestError")
def error_400_with_streaming_response(seen: Seen) -> None:
    """HTTP 400 through with_streaming_response: raised when the with block is entered."""
    with client().chat.completions.with_streaming_response.create(**chat_args(mock={"mock_error": 400})) as r:
        seen("unreachable", r.status_code)


@failed(error_type="UnprocessableEntityError")
def error_422_parse(seen: Seen) -> None:
    """HTTP 422 on parse()."""
    client().chat.completions.parse(**chat_args(mock={"mock_error": 422}))


@failed(error_type="BadRequestError", op="embeddings")
def error_400_embeddings(seen: Seen) -> None:
    """HTTP 400 on embeddings."""
    client().embeddings.create(model="mock-embed", input="x", extra_body={"mock_error": 400})


@failed(error_type="InternalServerError", op="text_completion")
def error_500_completions_stream(seen: Seen) -> None:
    """HTTP 500 on a streamed text completion."""
    client().completions.create(model=MODEL, prompt="x", stream=True, extra_body={"mock_error": 500})


@failed(error_type="BadRequestError", op="generate_content")
def error_400_responses_stream(seen: Seen) -> None:
    """HTTP 400 on responses.stream(): raised entering the with block."""
    with client().responses.stream(model=MODEL, input="x", extra_body={"mock_error": 400}) as stream:
        seen("unreachable", stream)


@failed(error_type="BadRequestError")
async def error_400_async(seen: Seen) -> None:
    """HTTP 400, async."""
    await aclient().chat.completions.create(**chat_args(mock={"mock_error": 400}))


@failed(error_type="RateLimitError")
async def error_429_stream_async(seen: Seen) -> None:
    """HTTP 429 on an async create(stream=True)."""
    await aclient().chat.completions.create(**chat_args(stream=True, mock={"mock_error": 429}))


@failed(error_type="InternalServerError")
async def error_500_retries_exhausted_async(seen: Seen) -> None:
    """HTTP 500 on every attempt of three, async: one call, one error."""
    await aclient(max_retries=2).chat.completions.create(**chat_args(mock={"mock_error": 500}))


@failed(error_type="BadRequestError")
async def error_400_async_streaming_response(seen: Seen) -> None:
    """HTTP 400 through async with_streaming_response."""
    async with aclient().chat.completions.with_streaming_response.create(
            **chat_args(stream=True, mock={"mock_error": 400})) as response:
        seen("unreachable", response.status_code)


# -- retries that succeed ---------------------------------------------------------------------------

@case(outcome="completed", usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
def retry_503_then_success(seen: Seen) -> None:
    """Two 503s, then an answer: one call, completed."""
    seen.obj("completion", client(max_retries=2).chat.completions.create(
        **chat_args(mock={"mock_fail_attempts": 2})))


@case(outcome="completed", usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
def retry_429_then_success(seen: Seen) -> None:
    """A 429 with retry-after, then an answer: one call, completed."""
    seen.obj("completion", client(max_retries=1).chat.completions.create(
        **chat_args(mock={"mock_fail_attempts": 1, "mock_fail_status": 429})))


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["stop"])
def retry_503_then_stream(seen: Seen) -> None:
    """Two 503s, then a stream consumed to the end: one call."""
    stream = client(max_retries=2).chat.completions.create(**chat_args(stream=True, mock={"mock_fail_attempts": 2}))
    seen.items("chunks", stream)


@case(outcome="completed", ttft=True, usage="estimated", finish_reasons=["stop"])
async def retry_503_then_stream_async(seen: Seen) -> None:
    """Two 503s, then an async stream consumed to the end: one call."""
    stream = await aclient(max_retries=2).chat.completions.create(
        **chat_args(stream=True, mock={"mock_fail_attempts": 2}))
    await seen.aitems("chunks", stream)


@case(outcome="completed", usage="api", output_tokens=TOKENS, finish_reasons=["stop"])
def retry_503_then_raw_response(seen: Seen) -> None:
    """Two 503s, then an answer through with_raw_response."""
    raw = client(max_retries=2).chat.completions.with_raw_response.create(**chat_args(mock={"mock_fail_attempts": 2}))
    seen.obj("parsed", raw.parse())


# -- no answer at all -------------------------------------------------------------------------------

@failed(error_type="APIConnectionError")
def error_connection_refused(seen: Seen) -> None:
    """A port nobody listens on: APIConnectionError."""
    client(CLOSED_URL).chat.completions.create(**chat_args())


@failed(error_type="APIConnectionError")
def error_connection_refused_stream(seen: Seen) -> None:
    """A port nobody listens on, create(stream=True)."""
    client(CLOSED_URL).chat.completions.create(**chat_args(stream=True))


@failed(error_type="APIConnectionError")
async def error_connection_refused_async(seen: Seen) -> None:
    """A port nobody listens on, async."""
    await aclient(CLOSED_URL).chat.completions.create(**chat_args())


@failed(error_type="APITimeoutError")
def error_read_timeout(seen: Seen) -> None:
    """A client timeout shorter than the server's time to first token: APITimeoutError."""
    client(timeout=0.2).chat.completions.create(**chat_args(mock={"mock_ttft": 1.5}))


@failed(error_type=RAISED)
async def error_read_timeout_stream_async(seen: Seen) -> None:
    """An async stream whose first token comes later than the client's read timeout."""
    stream = await aclient(timeout=0.2).chat.completions.create(**chat_args(stream=True, mock={"mock_ttft": 1.5}))
    await seen.aitems("chunks", stream)


@case(outcome="error", error_type=RAISED, ttft=True)
def error_read_timeout_mid_stream(seen: Seen) -> None:
    """The server stalls mid-stream longer than the client's read timeout."""
    stream = client(timeout=0.3).chat.completions.create(
        **chat_args(stream=True, mock={"mock_stall_at": 3, "mock_stall": 1.5}))
    seen.items("chunks", stream)

"""Names that dashboards, alerts and users depend on: metric names, buckets, span attributes.

Changing any name here is a breaking change (see DESIGN.md, "The contract").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import sub
from typing import Any

# Prometheus exposition names (counters are declared without ``_total``; the client adds it).
TTFT = "llm_time_to_first_token_seconds"
TOKEN_RATE = "llm_token_generation_rate"
REQUEST_DURATION = "llm_request_duration_seconds"
INTER_TOKEN_LATENCY = "llm_inter_token_latency_seconds"
TOTAL_TOKENS = "llm_total_tokens"
ERROR_COUNT = "llm_error_count"
SLOW_REQUESTS = "llm_slow_requests"
TIME_TO_REQUEST_SENT = "llm_time_to_request_sent_seconds"
#: USD, at the price of the call's provider and model (``cost.py``). The GenAI conventions name no
#: cost yet (a ``gen_ai.usage.cost.*`` proposal is open), so this is the agent's own namespace.
COST = "llm_cost_usd"
#: Always 1, labelled with the ``service.name`` and ``service.version`` the process's spans carry:
#: the dashboard finds a scrape target's traces by it (its ``service`` label is the target's).
SERVICE_INFO = "llm_service_info"

# Latencies from about 10 ms to minutes.
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
                   7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# Gaps between tokens: from a millisecond to a stall.
GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25,
               0.5, 1.0, 2.0, 5.0, 10.0)
# Decode rates from 1 to several thousand tokens per second.
RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0,
                500.0, 750.0, 1000.0, 1500.0, 2500.0, 5000.0)


# The OpenTelemetry HTTP client duration (semantic conventions), exposed for Prometheus too.
HTTP_CLIENT_DURATION = "http.client.request.duration"
HTTP_CLIENT_DURATION_PROMETHEUS = "http_client_request_duration_seconds"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
#: The methods the HTTP semantic conventions call known (RFC 9110, PATCH from RFC 5789, QUERY from
#: httpbis-safe-method-w-body); any other is recorded as ``HTTP_METHOD_OTHER``.
HTTP_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"})
HTTP_METHOD_OTHER = "_OTHER"


@dataclass(frozen=True)
class MetricSpec:
    """One instrument of the contract."""

    name: str
    kind: str  # "histogram" or "counter"
    description: str
    unit: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(TTFT, "histogram", "Time from the call to the first content token", "s",
               ("model", "operation"), SECONDS_BUCKETS),
    MetricSpec(TOKEN_RATE, "histogram", "Decode rate: output tokens per second after the first token",
               "{token}/s", ("model", "operation"), RATE_BUCKETS),
    MetricSpec(REQUEST_DURATION, "histogram", "Time from the call to the end of the response", "s",
               ("model", "operation", "outcome"), SECONDS_BUCKETS),
    MetricSpec(INTER_TOKEN_LATENCY, "histogram", "Gap between consecutive content tokens", "s",
               ("model", "operation"), GAP_BUCKETS),
    MetricSpec(TOTAL_TOKENS, "counter", "Tokens consumed and produced", "{token}",
               ("model", "operation", "type")),
    MetricSpec(ERROR_COUNT, "counter", "LLM calls that failed", "{request}",
               ("model", "operation", "error_type")),
    MetricSpec(SLOW_REQUESTS, "counter", "LLM calls slower than the configured thresholds", "{request}",
               ("model", "operation", "reason")),
    MetricSpec(TIME_TO_REQUEST_SENT, "histogram", "Client time from the call to the request fully sent: the part "
               "of the time to first token that is the client's (SDK preparation, connection, TLS)", "s",
               ("model", "operation"), SECONDS_BUCKETS),
    MetricSpec(COST, "counter", "What the calls cost, at the price of their provider and model (genai-prices, or "
               "LLM_PRICES_FILE); calls with no known price are not counted", "USD", ("model", "provider")),
)

# The GenAI semantic-convention client metrics (OpenTelemetry side only; same names as in
# opentelemetry-semantic-conventions, checked by a test). Buckets as the conventions advise.
GENAI_DURATION = "gen_ai.client.operation.duration"
GENAI_TOKEN_USAGE = "gen_ai.client.token.usage"
GENAI_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
GENAI_TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"
GENAI_SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
GENAI_TOKEN_BUCKETS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                       4194304.0, 16777216.0, 67108864.0)
GENAI_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(GENAI_DURATION, "histogram", "GenAI operation duration.", "s", (), GENAI_SECONDS_BUCKETS),
    MetricSpec(GENAI_TOKEN_USAGE, "histogram", "Number of input and output tokens used.", "{token}", (),
               GENAI_TOKEN_BUCKETS),
    MetricSpec(GENAI_TIME_TO_FIRST_CHUNK, "histogram", "Time to receive the first chunk (with content) of a "
               "streamed response.", "s", (), GENAI_SECONDS_BUCKETS),
    MetricSpec(GENAI_TIME_PER_OUTPUT_CHUNK, "histogram", "Time per output chunk after the first one.", "s", (),
               GAP_BUCKETS),
)

# Outcomes of a call (span attribute ``llm.stream.outcome`` and the ``outcome`` label).
COMPLETED = "completed"  # the response was read to its end
CLOSED_EARLY = "closed_early"  # the caller stopped reading: break, close(), leaving ``with``, its own exception
ERROR = "error"  # the API, the connection or a timeout failed the call
CANCELLED = "cancelled"  # asyncio cancellation (not a timeout), KeyboardInterrupt, SystemExit
ABANDONED = "abandoned"  # the stream was garbage-collected unfinished, with no break before
INTERRUPTED = "interrupted"  # the process exited while the call was still being read
OUTCOMES = (COMPLETED, CLOSED_EARLY, ERROR, CANCELLED, ABANDONED, INTERRUPTED)


def encode_offsets(offsets: Sequence[int], max_length: int | None = None) -> tuple[str, bool]:
    """``llm.token.offsets``: integer microseconds joined by commas, the first from the call's
    start to the first content chunk, each next one the gap since the chunk before it. A person
    reads it as "first token after N µs, then these gaps" (a stall is the large number), and it
    exports as one string instead of an array of values, each of which OTLP encodes on its own.
    Cut at a comma to fit ``max_length`` (an attribute length limit), never inside a number.
    Returns the text and whether it was cut."""
    text = ",".join(map(str, map(sub, offsets, chain((0,), offsets))))  # (C-level: no Python step per offset)
    if max_length is None or len(text) <= max_length:
        return text, False
    return text[:text.rfind(",", 0, max_length + 1)] if "," in text[:max_length + 1] else "", True


def decode_offsets(text: str) -> list[int]:
    """The offsets (microseconds from the call's start) that ``encode_offsets`` wrote."""
    offsets, at = [], 0
    for delta in text.split(",") if text else ():
        at += int(delta)
        offsets.append(at)
    return offsets


def outcome_of(exc: BaseException | None) -> str:
    """How a call ended, from the exception that ended it (None: it completed). An exception
    that is not an ``Exception`` stops the program's flow rather than reporting a failure:
    asyncio's and trio's cancellations, a killed greenlet, ``KeyboardInterrupt``, ``SystemExit``."""
    if exc is None:
        return COMPLETED
    if isinstance(exc, GeneratorExit):
        return CLOSED_EARLY
    if isinstance(exc, Exception):
        return ERROR
    return CANCELLED

# Span attributes: GenAI semantic conventions plus our token-level measurements.
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_CACHE_WRITE_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
GEN_AI_INPUT = "gen_ai.input.messages"
GEN_AI_OUTPUT = "gen_ai.output.messages"
LLM_TTFT = "llm.time_to_first_token"
LLM_TIME_TO_REQUEST_SENT = "llm.time_to_request_sent"
LLM_TIME_TO_RESPONSE_HEADERS = "llm.time_to_response_headers"
LLM_SERVER_TTFT = "llm.server_time_to_first_token"
LLM_CONNECTION_REUSED = "llm.connection.reused"
LLM_READER_BOUND = "llm.stream.reader_bound"
LLM_READER_SECONDS = "llm.stream.reader_seconds"
LLM_WAITING_CHUNKS = "llm.stream.waiting_chunks"
LLM_RATE = "llm.token_generation_rate"
LLM_ITL_P50 = "llm.inter_token_latency.p50"
LLM_ITL_P99 = "llm.inter_token_latency.p99"
LLM_ITL_MAX = "llm.inter_token_latency.max"
#: Each content chunk's arrival, delta-encoded in one string (``encode_offsets``).
LLM_OFFSETS = "llm.token.offsets"
LLM_OFFSETS_TRUNCATED = "llm.token.offsets_truncated"
LLM_STREAM = "llm.stream"
LLM_STREAM_CHUNKS = "llm.stream.chunks"
LLM_STREAM_OUTCOME = "llm.stream.outcome"
#: Seconds the caller kept a stream open after the last item it took, for a call that ended early.
LLM_STREAM_HELD = "llm.stream.held_seconds"
LLM_USAGE_SOURCE = "llm.usage.source"
# What the call cost (``cost.py``): set when its token counts are known. ``matched`` says whether a
# price was found; without one there is no cost, never a zero.
LLM_COST_USD = "llm.cost.usd"
LLM_COST_MATCHED = "llm.cost.matched"
LLM_COST_MODEL = "llm.cost.model"  # genai-prices' "provider:model" id, or the price file's model name
LLM_COST_SOURCE = "llm.cost.source"  # "genai-prices" or "LLM_PRICES_FILE"
LLM_COST_ESTIMATED = "llm.cost.estimated"  # true when the token counts were estimated (llm.usage.source)
# What the server reports about its own work (Ollama, Bedrock), beside what the agent measured: a ground truth.
LLM_SERVER_RATE = "llm.server.token_generation_rate"  # tokens/s: the server's output tokens over its decode time
LLM_SERVER_LOAD = "llm.server.load_duration"  # s: loading the model
LLM_SERVER_PROMPT_EVAL = "llm.server.prompt_eval_duration"  # s: reading the prompt (prefill)
LLM_SERVER_EVAL = "llm.server.eval_duration"  # s: generating the output
LLM_SERVER_TOTAL = "llm.server.total_duration"  # s: the whole request, as the server timed it
LLM_SERVER_FIRST_BYTE = "llm.server.first_byte_duration"  # s: until its first byte, as the server timed it (Bedrock)
EVENT_STALL = "llm.stream.stall"
EVENT_SLOW_REQUEST = "llm.slow_request"
EVENT_SLOW_TOKEN_RATE = "llm.slow_token_rate"

#: The provider's own code for an error (``invalid_api_key``, ``rate_limit_error``...), when it is one.
LLM_ERROR_CODE = "llm.error.code"

#: Captured prompts and completions (only with content capture on) are cut to this many characters.
CONTENT_LIMIT = 4096
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def identifier(value: object) -> str | None:
    """``value`` if it is a short code (letters, digits, ``_.:-``; at most 64), else None: what an
    outside server sends may go into span attributes and labels as a code, never as free text."""
    return value if isinstance(value, str) and _IDENTIFIER.fullmatch(value) else None


def provider_error_code(error: BaseException) -> str | None:
    """The provider's code for ``error`` (an SDK's API error: ``code``, else its type), if it is one."""
    for field in ("code", "error_code", "type"):
        code = identifier(getattr(error, field, None))
        if code is not None:
            return code
    return None


def record_error(span: Any, error: BaseException) -> None:
    """An ``exception`` event on ``span``, with the exception's type only: an API error's message
    (and so its stack trace) quotes the server's error body, which may echo the prompt or the key,
    whatever content capture says."""
    span.add_event("exception", {"exception.type": type(error).__qualname__})


def bounded_text(text: str) -> str:
    """``text`` cut to ``CONTENT_LIMIT`` characters."""
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "…"

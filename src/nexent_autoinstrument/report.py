"""A finished call's result -> its span and its metrics: the one place they are written.

``CallTracker.finish`` measures a call into an immutable ``CallResult``; ``emit`` turns that result
into the span's attributes, events and status, the contract metrics and the slow-call warning.
Nothing here runs per chunk.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry.trace import Status, StatusCode

from . import conventions as names
from .guard import report_internal_error

if TYPE_CHECKING:
    from .cost import Cost, PriceBook
    from .metrics import LLMMetrics
    from .settings import Settings

logger = logging.getLogger("nexent_autoinstrument")


class CallResult(NamedTuple):
    """What one call measured, once it ended: its span and its metrics are made of this alone.
    Times are in seconds from the call's start, unless said otherwise; None: not measured.
    (Immutable, and a tuple: made on every call's end, where a frozen dataclass costs four
    times as much to build.)"""

    operation: str
    model: str
    provider: str
    stream: bool
    server: tuple[str, int] | None
    outcome: str
    duration: float
    ttft: float | None
    #: The server's share of the TTFT: from the request on the wire to the first content, when
    #: that content's arrival was timed.
    server_ttft: float | None
    #: Decode rate (tokens/s) over the gaps between timed arrivals; None without two of them.
    rate: float | None
    #: Gaps between consecutive timed content chunks (within the offsets cap), ascending.
    gaps: tuple[float, ...]
    itl_p50: float | None
    itl_p99: float | None
    itl_max: float | None  # (also counts gaps past the offsets cap)
    #: Each content chunk's arrival, microseconds from the start (up to the cap), and whether
    #: there were more chunks than that.
    offsets: tuple[int, ...]
    offsets_truncated: bool
    chunks: int
    content_chunks: int
    waiting_chunks: int
    #: Read slower than it came: the rate and gaps rest on the few chunks that were timed.
    reader_bound: bool
    #: The caller's own time between reads, when the HTTP layer timed them.
    reader_seconds: float | None
    input_tokens: int | None
    output_tokens: int | None
    #: Of the input tokens: read from the prompt cache, and written to it (None: not reported).
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    usage_source: str | None  # "api", "estimated", or None without a count
    response_model: str | None
    response_id: str | None
    finish_reasons: tuple[str, ...]
    error_type: str | None
    time_to_request_sent: float | None
    time_to_response_headers: float | None
    connection_reused: bool | None
    #: (chunk index, gap, seconds from the start to the chunk) of each stall, capped.
    stalls: tuple[tuple[int, float, float], ...]
    #: Why the call is slow ("duration", "token_rate"), if it is.
    slow: tuple[str, ...]
    #: The generated text, only with content capture on.
    output_text: str | None


def emit(result: CallResult, span: Any, writer: Any, start_ns: int, ended_early: bool,
         annotations: dict[str, Any] | None, metrics: LLMMetrics | None, settings: Settings,
         prices: PriceBook | None = None) -> None:
    """Write ``result``: the span's attributes, events and status (``writer``: the span, or the
    adoption of an SDK's span), its end (at the result's duration when ``ended_early``), then the
    metrics and the slow-call warning (none when ``metrics`` is None: a delegated call, whose
    call inside records them). ``prices``: what calls cost, if any price is known."""
    cost, priced = None, False
    if prices is not None and result.input_tokens is not None:
        cost, priced = price_of(result, prices, start_ns), True
    if span.is_recording():
        attributes = span_attributes(result, getattr(getattr(span, "_attributes", None), "max_value_len", None))
        if priced:
            attributes.update(cost_attributes(result, cost))
        if writer is span:
            if annotations:  # (set first: the end's own win a name they share, and take its place)
                attributes = {**{k: v for k, v in annotations.items() if k not in attributes}, **attributes}
            set_valid_attributes(span, attributes)
        else:  # (an adoption keeps the first value of a name: the annotations' win there, as on the span)
            if annotations:
                writer.set_attributes(annotations)
            writer.set_attributes(attributes)
        for index, gap, at in result.stalls:
            span.add_event(names.EVENT_STALL, {"llm.stall.gap_seconds": gap, "llm.stall.chunk_index": index},
                           timestamp=start_ns + int(at * 1e9))
        if "duration" in result.slow:
            span.add_event(names.EVENT_SLOW_REQUEST, {"llm.duration_seconds": result.duration})
        if "token_rate" in result.slow:
            span.add_event(names.EVENT_SLOW_TOKEN_RATE, {"llm.token_generation_rate": result.rate or 0.0})
        if result.error_type is not None:
            span.set_status(Status(StatusCode.ERROR, result.error_type))
    writer.end(end_time=start_ns + int(result.duration * 1e9) if ended_early else None)
    if metrics is None:
        return
    timed = not result.reader_bound  # (a reader-bound call's rate and gaps stay out of the histograms)
    metrics.record(
        model=result.model, operation=result.operation, outcome=result.outcome, duration=result.duration,
        ttft=result.ttft, rate=result.rate if timed else None, gaps=result.gaps if timed else (), gaps_sorted=True,
        input_tokens=result.input_tokens, output_tokens=result.output_tokens, error_type=result.error_type,
        slow_reasons=result.slow, time_to_request_sent=result.time_to_request_sent, provider=result.provider,
        response_model=result.response_model, server=result.server, stream=result.stream,
        cost=None if cost is None else cost.usd, span=span)
    if result.slow:
        logger.warning(
            "nexent-autoinstrument: slow LLM call %s %s: %.3f s%s (thresholds %.1f s, %.1f tokens/s)",
            result.operation, result.model, result.duration,
            f", {result.rate:.1f} tokens/s" if result.rate is not None else "",
            settings.slow_request_threshold_seconds, settings.slow_token_rate_threshold)


def price_of(result: CallResult, prices: PriceBook, start_ns: int) -> Cost | None:
    """The call's cost (None without a price); a failure of ours is counted, never raised."""
    try:
        return prices.price(result.provider, result.server[0] if result.server else None,
                            (result.response_model, result.model), result.input_tokens, result.output_tokens,
                            start_ns / 1e9, result.cache_read_tokens, result.cache_write_tokens)
    except Exception as exc:
        report_internal_error("report.cost", exc)
        return None


def cost_attributes(result: CallResult, cost: Cost | None) -> dict[str, Any]:
    """The span's cost attributes: whether a price matched and, if one did, the cost and its source."""
    if cost is None:
        return {names.LLM_COST_MATCHED: False}
    return {names.LLM_COST_MATCHED: True, names.LLM_COST_USD: cost.usd, names.LLM_COST_MODEL: cost.model,
            names.LLM_COST_SOURCE: cost.source, names.LLM_COST_ESTIMATED: result.usage_source == "estimated"}


def span_attributes(result: CallResult, value_limit: int | None = None) -> dict[str, Any]:
    """The attributes the span gets at the end (its request attributes were set at its start);
    ``value_limit``: the span's attribute length limit, if it has one."""
    attrs: dict[str, Any] = {names.LLM_STREAM_OUTCOME: result.outcome}
    if result.stream:
        attrs[names.LLM_STREAM_CHUNKS] = result.chunks
    if result.response_model:
        attrs[names.GEN_AI_RESPONSE_MODEL] = result.response_model
    if result.response_id:
        attrs[names.GEN_AI_RESPONSE_ID] = result.response_id
    if result.finish_reasons:
        attrs[names.GEN_AI_FINISH_REASONS] = result.finish_reasons
    if result.input_tokens is not None:
        attrs[names.GEN_AI_INPUT_TOKENS] = result.input_tokens
    if result.cache_read_tokens is not None:
        attrs[names.GEN_AI_CACHE_READ_TOKENS] = result.cache_read_tokens
    if result.cache_write_tokens is not None:
        attrs[names.GEN_AI_CACHE_WRITE_TOKENS] = result.cache_write_tokens
    if result.output_tokens is not None:
        attrs[names.GEN_AI_OUTPUT_TOKENS] = result.output_tokens
        attrs[names.LLM_USAGE_SOURCE] = result.usage_source
    if result.ttft is not None:
        attrs[names.LLM_TTFT] = result.ttft
        if result.stream:
            attrs[names.GEN_AI_TIME_TO_FIRST_CHUNK] = result.ttft
    if result.time_to_request_sent is not None:
        attrs[names.LLM_TIME_TO_REQUEST_SENT] = result.time_to_request_sent
    if result.server_ttft is not None:
        attrs[names.LLM_SERVER_TTFT] = result.server_ttft
    if result.time_to_response_headers is not None:
        attrs[names.LLM_TIME_TO_RESPONSE_HEADERS] = result.time_to_response_headers
    if result.connection_reused is not None:
        attrs[names.LLM_CONNECTION_REUSED] = result.connection_reused
    if result.rate is not None:
        attrs[names.LLM_RATE] = result.rate
    if result.gaps:
        attrs[names.LLM_ITL_P50] = result.itl_p50
        attrs[names.LLM_ITL_P99] = result.itl_p99
        attrs[names.LLM_ITL_MAX] = result.itl_max
    if result.stream and result.reader_seconds is not None:  # the HTTP layer timed the reads
        attrs[names.LLM_READER_BOUND] = result.reader_bound
        attrs[names.LLM_READER_SECONDS] = result.reader_seconds
        attrs[names.LLM_WAITING_CHUNKS] = result.waiting_chunks
    if result.error_type is not None:
        attrs[names.ERROR_TYPE] = result.error_type
    if result.output_text is not None:
        attrs[names.GEN_AI_OUTPUT] = result.output_text
    if result.offsets:
        text, cut = names.encode_offsets(result.offsets, value_limit)
        if text:
            attrs[names.LLM_OFFSETS] = text
        attrs[names.LLM_OFFSETS_TRUNCATED] = result.offsets_truncated or cut
    return attrs


def set_valid_attributes(span: Any, attributes: dict[str, Any]) -> None:
    """Set attributes on the span without the SDK checking each again (which costs about as much
    per attribute as the rest of the call's end) when its checks would change none of them: each
    value is a str, bool, int or float, or a tuple of one of them, and no text is over the length
    limit. Goes through the public API otherwise, whenever the span's attributes are not the SDK's
    bounded mapping as we know it, or the attribute count limit could apply."""
    bounded = getattr(span, "_attributes", None)
    store, lock = getattr(bounded, "_dict", None), getattr(bounded, "_lock", None)
    room, longest = getattr(bounded, "maxlen", None), getattr(bounded, "max_value_len", None)
    if (type(bounded).__name__ != "BoundedAttributes" or not isinstance(store, dict) or lock is None
            or getattr(bounded, "_immutable", True) or not _unchanged(attributes, longest)
            or (room is not None and len(store) + len(attributes) > room)):
        span.set_attributes(attributes)
        return
    with lock:
        for name in store.keys() & attributes.keys():  # (as the SDK does: a name set again moves to the end)
            del store[name]
        store.update(attributes)


_SCALARS = frozenset({str, bool, int, float})
_KINDS = _SCALARS | {tuple}
_is_text, _is_tuple = str.__instancecheck__, tuple.__instancecheck__


def _unchanged(attributes: dict[str, Any], longest: int | None) -> bool:
    """Whether the SDK's checks would keep every value as it is (exact types: a subclass, a list,
    a mixed tuple or a text over ``longest`` is the SDK's to convert, cut or drop). The types and
    the texts' lengths are screened at C level: no Python step per attribute."""
    values = attributes.values()
    kinds = set(map(type, values))
    if not kinds <= _KINDS:
        return False
    if longest is not None and str in kinds and max(map(len, filter(_is_text, values))) > longest:
        return False
    if tuple in kinds:
        for value in filter(_is_tuple, values):
            first = type(value[0]) if value else str
            if first not in _SCALARS or any(type(item) is not first for item in value):
                return False
            if first is str and longest is not None and any(len(item) > longest for item in value):
                return False
    return True

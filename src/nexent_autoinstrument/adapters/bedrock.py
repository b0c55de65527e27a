"""Amazon Bedrock's runtime API, as botocore hands it over -> neutral facts for the call tracker.

botocore parses every answer before the caller sees it, so these readers take its parsed values,
never bytes:

- ``Converse``: one dict (``output.message.content``, ``stopReason``, ``usage``, ``metrics``).
- ``ConverseStream``: events, each a dict of one key: ``messageStart``, ``contentBlockStart``,
  ``contentBlockDelta`` (text, tool input or reasoning: content), ``contentBlockStop``,
  ``messageStop`` (the stop reason) and ``metadata`` (usage, and ``metrics.latencyMs``: the
  server's own time for the request, kept beside the agent's as a ground truth).
- ``InvokeModel`` and ``InvokeModelWithResponseStream``: the model's own JSON, whose shape depends
  on its family (``FAMILIES``: Anthropic's Messages, Amazon Nova, Meta Llama), one body or one
  ``chunk`` per event. Every family's last event adds ``amazon-bedrock-invocationMetrics``, and
  every whole answer has the token counts in its headers. A model of another family is measured
  from those alone.

Bedrock is not an HTTP protocol of the endpoint table: its streams are AWS's binary event-stream
framing, which only botocore decodes, and its paths (``/model/{id}/converse``) mean nothing to
the raw HTTP layers. ``OPERATIONS`` is its declaration, read by the botocore layer and the mock LLM.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import conventions as names
from . import anthropic
from .protocol import SDK, Reader, RequestField
from .usage import token_count

if TYPE_CHECKING:
    from ..tracker import CallTracker

PROVIDER = "aws.bedrock"
#: botocore's name of the service whose operations these are.
SERVICE = "bedrock-runtime"
#: The library patched, and its releases supported (from the first with Converse and ConverseStream).
BOTOCORE = SDK(package="botocore", supported=("botocore >= 1.34.116",), patched=True)
#: Response headers of a whole ``InvokeModel`` answer (botocore lowercases them).
INPUT_TOKENS_HEADER = "x-amzn-bedrock-input-token-count"
OUTPUT_TOKENS_HEADER = "x-amzn-bedrock-output-token-count"
LATENCY_HEADER = "x-amzn-bedrock-invocation-latency"
#: The key every family's last streamed event adds, with the server's counts and times.
INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"


@dataclass(frozen=True, kw_only=True)
class Operation:
    """One Bedrock runtime operation: what botocore calls it, where it is served, and where its
    answer is in botocore's result."""

    name: str  # botocore's operation name
    path: str  # the last segment of its path, after ``/model/{modelId}/``
    streams: bool
    #: The key of botocore's result that holds the answer: the event stream, or the body; None:
    #: the result is the answer.
    answer_key: str | None
    #: Whether the request and answer are the model's own JSON (``InvokeModel*``), read by family.
    model_body: bool


OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    Operation(name="Converse", path="converse", streams=False, answer_key=None, model_body=False),
    Operation(name="ConverseStream", path="converse-stream", streams=True, answer_key="stream", model_body=False),
    Operation(name="InvokeModel", path="invoke", streams=False, answer_key="body", model_body=True),
    Operation(name="InvokeModelWithResponseStream", path="invoke-with-response-stream", streams=True,
              answer_key="body", model_body=True),
)}

CONVERSE_FIELDS: tuple[RequestField, ...] = (
    (("inferenceConfig", "maxTokens"), "gen_ai.request.max_tokens"),
    (("inferenceConfig", "temperature"), "gen_ai.request.temperature"),
    (("inferenceConfig", "topP"), "gen_ai.request.top_p"),
)


# -- Converse, and Amazon Nova's own bodies (the same shapes) ------------------------------------------

def read_converse(tracker: CallTracker, answer: Any) -> None:
    """A whole ``Converse`` answer (or a Nova ``InvokeModel`` body): stop reason, usage, the
    server's latency, and the text for content capture."""
    if not isinstance(answer, dict):
        return
    reason = answer.get("stopReason")
    if isinstance(reason, str):
        tracker.finish_reason(reason)
    _read_usage(tracker, answer.get("usage"))
    _read_latency(tracker, answer.get("metrics"))
    if tracker.texts is not None:
        message = (answer.get("output") or {}).get("message") or {}
        blocks = message.get("content") if isinstance(message, dict) else None
        tracker.whole_text("".join(text for block in blocks if isinstance(block, dict)
                                   and isinstance(text := block.get("text"), str)) if isinstance(blocks, list) else "")


def read_converse_event(tracker: CallTracker, event: Any) -> None:
    """One ``ConverseStream`` event (or a Nova stream chunk): a delta of content (text, tool
    input or reasoning text; not a reasoning signature), the stop reason, or the usage and the
    server's latency."""
    delta_event = event.get("contentBlockDelta")
    if delta_event is not None:  # the per-token path
        delta = delta_event.get("delta") or {}
        text = delta.get("text")
        if text:
            tracker.content(text if isinstance(text, str) else None)
        elif (delta.get("toolUse") or {}).get("input") or (delta.get("reasoningContent") or {}).get("text"):
            tracker.content(None)
        return
    stop = event.get("messageStop")
    if stop is not None:
        reason = stop.get("stopReason")
        if isinstance(reason, str):
            tracker.finish_reason(reason)
    metadata = event.get("metadata")
    if metadata is not None:
        _read_usage(tracker, metadata.get("usage"))
        _read_latency(tracker, metadata.get("metrics"))
    if INVOCATION_METRICS in event:
        read_invocation_metrics(tracker, event[INVOCATION_METRICS])


def _read_usage(tracker: CallTracker, usage: Any) -> None:
    """Bedrock's ``inputTokens`` leaves out what was read from or written to the prompt cache;
    the input, as the GenAI conventions count it, is all three."""
    if isinstance(usage, dict):
        _usage_with_cache(tracker, usage.get("inputTokens"), usage.get("outputTokens"),
                          usage.get("cacheReadInputTokens"), usage.get("cacheWriteInputTokens"))


def _usage_with_cache(tracker: CallTracker, fresh: Any, output: Any, read: Any, written: Any) -> None:
    fresh, read, written = token_count(fresh), token_count(read), token_count(written)
    tracker.usage(None if fresh is None else fresh + (read or 0) + (written or 0), token_count(output),
                  cache_read=read, cache_write=written)


def _read_latency(tracker: CallTracker, metrics: Any) -> None:
    latency = token_count(metrics.get("latencyMs")) if isinstance(metrics, dict) else None
    if latency is not None:
        tracker.annotate({names.LLM_SERVER_TOTAL: latency / 1000})


def read_invocation_metrics(tracker: CallTracker, metrics: Any) -> None:
    """``amazon-bedrock-invocationMetrics``: the token counts and the server's own times."""
    if not isinstance(metrics, dict):
        return
    if tracker.input_tokens is None or tracker.output_tokens is None:  # (the model's own events said less)
        _usage_with_cache(tracker, metrics.get("inputTokenCount"), metrics.get("outputTokenCount"),
                          metrics.get("cacheReadInputTokenCount"), metrics.get("cacheWriteInputTokenCount"))
    for key, name in (("invocationLatency", names.LLM_SERVER_TOTAL),
                      ("firstByteLatency", names.LLM_SERVER_FIRST_BYTE)):
        if token_count(metrics.get(key)) is not None:
            tracker.annotate({name: metrics[key] / 1000})


def read_answer_headers(tracker: CallTracker, headers: Any) -> None:
    """The token counts and latency an ``InvokeModel`` answer carries in its headers (any family)."""
    if not isinstance(headers, dict):
        return
    counts = [_header_int(headers.get(key)) for key in (INPUT_TOKENS_HEADER, OUTPUT_TOKENS_HEADER)]
    tracker.usage(*counts)
    latency = _header_int(headers.get(LATENCY_HEADER))
    if latency is not None:
        tracker.annotate({names.LLM_SERVER_TOTAL: latency / 1000})


def _header_int(value: Any) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 12 else None


# -- the model families of InvokeModel ------------------------------------------------------------------

def _read_llama_event(tracker: CallTracker, event: Any) -> None:
    """One streamed Llama chunk: a piece of ``generation``; the first has the prompt's count, the
    last the stop reason."""
    text = event.get("generation")
    if text:
        tracker.content(text if isinstance(text, str) else None)
    _read_llama_counts(tracker, event)
    if INVOCATION_METRICS in event:
        read_invocation_metrics(tracker, event[INVOCATION_METRICS])


def _read_llama_response(tracker: CallTracker, answer: Any) -> None:
    if not isinstance(answer, dict):
        return
    _read_llama_counts(tracker, answer)
    text = answer.get("generation")
    tracker.whole_text(text if isinstance(text, str) else "")


def _read_llama_counts(tracker: CallTracker, event: dict[str, Any]) -> None:
    reason = event.get("stop_reason")
    if isinstance(reason, str):
        tracker.finish_reason(reason)
    prompt = token_count(event.get("prompt_token_count"))
    if prompt is not None:
        tracker.usage(prompt, None)


def _read_anthropic_event(tracker: CallTracker, event: Any) -> None:
    anthropic.read_event(tracker, event)
    if INVOCATION_METRICS in event:
        read_invocation_metrics(tracker, event[INVOCATION_METRICS])


def _read_generic_event(tracker: CallTracker, event: Any) -> None:
    """A chunk of a family the agent does not read: counted, its metrics read at the end."""
    if INVOCATION_METRICS in event:
        read_invocation_metrics(tracker, event[INVOCATION_METRICS])


def _read_nothing(tracker: CallTracker, answer: Any) -> None:
    """A whole answer of a family the agent does not read: its headers said all (usage)."""


@dataclass(frozen=True, kw_only=True)
class Family:
    """The bodies of one family of models on ``InvokeModel``: what a request says, how an answer
    and a streamed chunk (the decoded JSON of its ``bytes``) are read."""

    name: str
    #: A model id (or inference profile, or ARN) of the family contains one of these.
    markers: tuple[str, ...]
    #: A request body of the family (and of no other) has one of these keys.
    body_keys: tuple[str, ...]
    operation: str  # gen_ai.operation.name
    request_fields: tuple[RequestField, ...]
    read_response: Reader
    read_event: Callable[[CallTracker, Any], None]


FAMILIES: tuple[Family, ...] = (
    Family(name="anthropic", markers=("anthropic.",), body_keys=("anthropic_version",), operation="chat",
           request_fields=anthropic.PROTOCOL.request_fields, read_response=anthropic.read_response,
           read_event=_read_anthropic_event),
    Family(name="nova", markers=("amazon.nova",), body_keys=("schemaVersion", "inferenceConfig"), operation="chat",
           request_fields=(
               (("inferenceConfig", "max_new_tokens"), "gen_ai.request.max_tokens"),
               (("inferenceConfig", "temperature"), "gen_ai.request.temperature"),
               (("inferenceConfig", "topP"), "gen_ai.request.top_p"),
               (("inferenceConfig", "topK"), "gen_ai.request.top_k")),
           read_response=read_converse, read_event=read_converse_event),
    Family(name="llama", markers=("meta.llama",), body_keys=("max_gen_len",), operation="text_completion",
           request_fields=(
               (("max_gen_len",), "gen_ai.request.max_tokens"),
               (("temperature",), "gen_ai.request.temperature"),
               (("top_p",), "gen_ai.request.top_p")),
           read_response=_read_llama_response, read_event=_read_llama_event),
)
#: Any other model: measured from its headers and invocation metrics.
OTHER = Family(name="other", markers=(), body_keys=(), operation="text_completion", request_fields=(),
               read_response=_read_nothing, read_event=_read_generic_event)


def family_of(model_id: str, body: dict[str, Any] | None = None) -> Family:
    """The family of a model id (a plain id, a cross-region inference profile, a foundation
    model's ARN) or, where it does not say (an application inference profile's or a provisioned
    model's ARN), of the request's own JSON ``body``."""
    for family in FAMILIES:
        if any(marker in model_id for marker in family.markers):
            return family
    if body:
        for family in FAMILIES:
            if any(key in body for key in family.body_keys):
                return family
    return OTHER


def model_body(raw: Any, limit: int) -> dict[str, Any]:
    """The model's own JSON request (``InvokeModel``'s ``body``), when it is one and not larger
    than ``limit`` bytes; else {}."""
    if isinstance(raw, str):
        raw = raw.encode()
    if not isinstance(raw, (bytes, bytearray)) or len(raw) > limit:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def read_chunk(family: Family) -> Reader:
    """The reader of an ``InvokeModelWithResponseStream`` event (``{"chunk": {"bytes": ...}}``)
    for ``family``: the chunk's JSON, read as the family's own streamed event."""
    read_event = family.read_event

    def read(tracker: CallTracker, event: Any) -> None:
        chunk = event.get("chunk")
        if chunk is None:
            return
        decoded = json.loads(chunk["bytes"])
        if isinstance(decoded, dict):
            read_event(tracker, decoded)
    return read

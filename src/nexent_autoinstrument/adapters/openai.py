"""OpenAI-compatible API shapes -> neutral facts for the call tracker.

Readers of one streamed item (a chat chunk, a completion chunk, a Responses event) and of a
whole response; the endpoint table (``endpoints``) says which path uses which. The same
functions serve the openai SDK's parsed objects and plain dicts decoded from SSE by the httpx layer.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .protocol import SDK, Protocol, Route
from .usage import cached_input, get_field, usage_counts

if TYPE_CHECKING:
    from ..tracker import CallTracker


def _reasoning(delta: Any) -> Any:
    """The reasoning text some compatible servers add to a delta (``reasoning_content``,
    ``reasoning``), which the SDK does not declare."""
    return get_field(delta, "reasoning_content") or get_field(delta, "reasoning")


# Readers of the SDK's parsed items: plain attribute access on the hot path. The SDK does not
# validate streamed chunks, so a malformed one (a server sending odd types) is skipped.

def read_chat_chunk(tracker: CallTracker, chunk: Any) -> None:
    """A ``chat.completion.chunk``: content, tool-call, refusal or reasoning deltas count as content;
    a role-only delta does not."""
    content = None
    try:
        for choice in chunk.choices or ():
            delta = choice.delta
            if content is None and delta is not None:
                text = delta.content
                if text or delta.tool_calls or delta.refusal or delta.function_call or _reasoning(delta):
                    content = text or ""
            if choice.finish_reason:
                tracker.finish_reason(choice.finish_reason, choice.index)
    except (AttributeError, TypeError):
        return
    if content is not None:
        tracker.content(content if isinstance(content, str) else None)
    if tracker.response_id is None:
        tracker.response(chunk.model, chunk.id)
    if chunk.usage is not None:
        read_usage(tracker, chunk.usage)


def read_completion_chunk(tracker: CallTracker, chunk: Any) -> None:
    """A legacy ``text_completion`` chunk."""
    content = None
    try:
        for choice in chunk.choices or ():
            if content is None and choice.text:
                content = choice.text
            if choice.finish_reason:
                tracker.finish_reason(choice.finish_reason, choice.index)
    except (AttributeError, TypeError):
        return
    if content is not None:
        tracker.content(content if isinstance(content, str) else None)
    if tracker.response_id is None:
        tracker.response(chunk.model, chunk.id)
    if chunk.usage is not None:
        read_usage(tracker, chunk.usage)


# Readers of events decoded from SSE by the HTTP layer: plain dicts, any types.

def _dict_choices(event: dict[str, Any]) -> list[dict[str, Any]]:
    choices = event.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _dict_tail(tracker: CallTracker, event: dict[str, Any], content: Any) -> None:
    if content is not None:
        tracker.content(content if isinstance(content, str) else None)
    if tracker.response_id is None:
        tracker.response(event.get("model"), event.get("id"))
    usage = event.get("usage")
    if usage is not None:
        read_usage(tracker, usage)


def read_chat_event(tracker: CallTracker, event: dict[str, Any]) -> None:
    """``read_chat_chunk`` for a chat chunk decoded from SSE."""
    content = None
    for choice in _dict_choices(event):
        delta = choice.get("delta")
        if content is None and isinstance(delta, dict):
            text = delta.get("content")
            if (text or delta.get("tool_calls") or delta.get("refusal") or delta.get("function_call")
                    or delta.get("reasoning_content") or delta.get("reasoning")):
                content = text or ""
        if choice.get("finish_reason"):
            tracker.finish_reason(choice["finish_reason"], choice.get("index"))
    _dict_tail(tracker, event, content)


def read_completion_event(tracker: CallTracker, event: dict[str, Any]) -> None:
    """``read_completion_chunk`` for a completion chunk decoded from SSE."""
    content = None
    for choice in _dict_choices(event):
        if content is None and choice.get("text"):
            content = choice["text"]
        if choice.get("finish_reason"):
            tracker.finish_reason(choice["finish_reason"], choice.get("index"))
    _dict_tail(tracker, event, content)


# Skims: from an event's raw bytes, whether it is a plain content delta and nothing else (one
# choice, no finish reason, no usage, no error), so that it needs no parsing. An unescaped
# quote is always JSON structure, so these byte patterns cannot come from generated text; any
# other spelling (spaces, a null content with tool calls...) answers False: the event is parsed.

def skim_chat_event(data: bytes) -> bool:
    """A chat chunk whose only news is non-empty ``delta.content``."""
    find = data.find  # (not ``in``: with a bytes operand it first raises and clears a TypeError)
    return (find(b'"finish_reason":null') >= 0 and data.count(b'"finish_reason"') == 1
            and data.count(b'"delta"') == 1 and find(b'"content":"') >= 0 and find(b'"content":""') < 0
            and (find(b'"usage"') < 0 or find(b'"usage":null') >= 0) and find(b'"error"') < 0)


def skim_completion_event(data: bytes) -> bool:
    """A completion chunk whose only news is non-empty ``text``."""
    find = data.find
    return (find(b'"finish_reason":null') >= 0 and data.count(b'"finish_reason"') == 1
            and data.count(b'"text"') == 1 and find(b'"text":"') >= 0 and find(b'"text":""') < 0
            and (find(b'"usage"') < 0 or find(b'"usage":null') >= 0) and find(b'"error"') < 0)


def is_usage_only_event(data: bytes) -> bool:
    """The usage-only chunk that ``stream_options.include_usage`` adds (no choices, only usage)."""
    if b'"usage"' not in data:
        return False
    try:
        event = json.loads(data)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("choices") == [] and isinstance(event.get("usage"), dict)


def skim_response_event(data: bytes) -> bool:
    """A Responses ``response.output_text.delta`` event with a non-empty delta."""
    find = data.find
    return find(b'"type":"response.output_text.delta"') >= 0 and find(b'"delta":"') >= 0 and find(b'"delta":""') < 0


#: Responses API events that end a stream: they carry the whole response, with its usage.
RESPONSE_END_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def read_response_event(tracker: CallTracker, event: Any) -> None:
    """A Responses API stream event: any non-empty ``*.delta`` is content; the last event has usage."""
    kind = get_field(event, "type")
    if kind is None:
        return
    if kind.endswith(".delta"):
        delta = get_field(event, "delta")
        if delta:
            tracker.content(delta if kind == "response.output_text.delta" else None)
    elif kind in RESPONSE_END_EVENTS:
        read_response(tracker, get_field(event, "response"))
        if kind == "response.failed":
            tracker.fail("response.failed")
    elif kind == "response.created" and tracker.response_id is None:
        response = get_field(event, "response")
        tracker.response(get_field(response, "model"), get_field(response, "id"))
    elif kind == "error":
        tracker.fail(str(get_field(event, "code") or "stream_error"))


def read_usage(tracker: CallTracker, usage: Any) -> None:
    """Report a usage object or dict to the tracker."""
    counts = usage_counts(usage)
    if counts is not None:
        tracker.usage(*counts, cache_read=cached_input(usage))


def read_response(tracker: CallTracker, response: Any) -> None:
    """A whole (non-streamed) response object or dict: model, id, finish reasons, usage."""
    if response is None:
        return
    tracker.response(get_field(response, "model"), get_field(response, "id"))
    if get_field(response, "object") == "response":  # the Responses API's: a status, no choices
        status = get_field(response, "status")
        if isinstance(status, str):
            tracker.finish_reason(status)
    else:
        for position, choice in enumerate(get_field(response, "choices") or ()):
            reason = get_field(choice, "finish_reason")
            if reason:
                index = get_field(choice, "index")
                tracker.finish_reason(reason, index if isinstance(index, int) else position)
    usage = get_field(response, "usage")
    if usage is not None:
        read_usage(tracker, usage)
    if tracker.texts is not None:
        tracker.whole_text(output_text(response))


def output_text(response: Any) -> str:
    """The generated text of a whole response, for content capture."""
    parts: list[str] = []
    for choice in get_field(response, "choices") or ():
        message = get_field(choice, "message")
        text = get_field(message, "content") if message is not None else get_field(choice, "text")
        if isinstance(text, str):
            parts.append(text)
    for item in get_field(response, "output") or ():
        for content in get_field(item, "content") or ():
            text = get_field(content, "text")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


#: Response header -> attribute of the call's span, and how to read its value (for SDK calls).
RESPONSE_HEADERS: tuple[tuple[str, str, type], ...] = (
    ("x-request-id", "openai.request.id", str),
    ("openai-processing-ms", "openai.processing_ms", float),
    ("x-ratelimit-remaining-requests", "openai.ratelimit.remaining_requests", int),
    ("x-ratelimit-remaining-tokens", "openai.ratelimit.remaining_tokens", int),
    ("x-ratelimit-reset-requests", "openai.ratelimit.reset_requests", str),
    ("x-ratelimit-reset-tokens", "openai.ratelimit.reset_tokens", str),
)


def provider_for(host: str | None, azure: bool = False) -> str:
    """``gen_ai.provider.name`` for an OpenAI-style server: OpenAI's own API, Azure OpenAI, or a
    compatible server (vLLM, Ollama, DeepSeek, ...)."""
    host = host or ""
    if azure or host.endswith((".openai.azure.com", ".cognitiveservices.azure.com")):
        return "azure.ai.openai"
    return "openai" if not host or host.endswith("openai.com") else "openai_compatible"


def is_usage_only_item(item: Any) -> bool:
    """The SDK's chunk for that usage-only event: no choices, only usage."""
    return not getattr(item, "choices", True) and getattr(item, "usage", None) is not None


PROTOCOL = Protocol(
    name="openai",
    routes=(
        Route(suffix="/chat/completions", operation="chat", streams=None, read_item=read_chat_chunk,
              read_event=read_chat_event, read_response=read_response, skim=skim_chat_event,
              plain_key=b'"content":"', accepts_stream_options=True),
        Route(suffix="/completions", operation="text_completion", streams=None, read_item=read_completion_chunk,
              read_event=read_completion_event, read_response=read_response, skim=skim_completion_event,
              plain_key=b'"text":"', accepts_stream_options=True),
        Route(suffix="/embeddings", operation="embeddings", streams=False, read_item=None, read_event=None,
              read_response=read_response, skim=None, plain_key=b"", accepts_stream_options=False),
        Route(suffix="/responses", operation="generate_content", streams=None, read_item=read_response_event,
              read_event=read_response_event, read_response=read_response, skim=skim_response_event,
              plain_key=b"", accepts_stream_options=False),
    ),
    provider=provider_for,
    framing="sse",
    stream_default=False,
    model_from_path=None,
    reports_usage=False,
    end_marker=b"[DONE]",
    end_key="type",
    end_values=RESPONSE_END_EVENTS,
    usage_only_event=is_usage_only_event,
    usage_only_item=is_usage_only_item,
    request_fields=(
        (("temperature",), "gen_ai.request.temperature"),
        (("top_p",), "gen_ai.request.top_p"),
        (("top_k",), "gen_ai.request.top_k"),  # (compatible servers: vLLM, ...)
        (("max_tokens",), "gen_ai.request.max_tokens"),
        (("max_completion_tokens",), "gen_ai.request.max_tokens"),
        (("max_output_tokens",), "gen_ai.request.max_tokens"),
        (("frequency_penalty",), "gen_ai.request.frequency_penalty"),
        (("presence_penalty",), "gen_ai.request.presence_penalty"),
        (("seed",), "gen_ai.request.seed"),
    ),
    response_headers=RESPONSE_HEADERS,
    sdk=SDK(package="openai", supported=("openai >= 1.40.0, < 4",), patched=True),
)

"""The Anthropic Messages API (``POST /v1/messages``) -> neutral facts for the call tracker.

A stream is a sequence of typed events, the same as the SDK's parsed objects or as dicts decoded
from SSE: ``message_start`` (model, id, input tokens), ``content_block_delta`` (text, tool-input
JSON or thinking: content), ``message_delta`` (stop reason, output tokens), ``message_stop`` (the
end) and ``error``. One reader serves both shapes; a whole answer is a ``Message``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol import SDK, Protocol, Route
from .usage import get_field, token_count

if TYPE_CHECKING:
    from ..tracker import CallTracker

PROVIDER = "anthropic"
#: The event after which a stream has nothing more to say.
END_EVENTS = frozenset({"message_stop"})
#: Content delta type -> the field with its text. Signature and citation deltas are no content.
DELTA_TEXT = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}
#: Response header -> attribute of the call's span (the names the SDK's own spans use), and its type.
RESPONSE_HEADERS: tuple[tuple[str, str, type], ...] = (
    ("request-id", "anthropic.request.id", str),
    ("anthropic-ratelimit-requests-remaining", "anthropic.ratelimit.remaining_requests", int),
    ("anthropic-ratelimit-tokens-remaining", "anthropic.ratelimit.remaining_tokens", int),
)


def provider_for(host: str | None, azure: bool = False) -> str:
    """``gen_ai.provider.name``: the Messages API is Anthropic's, wherever it is served."""
    return PROVIDER


def read_event(tracker: CallTracker, event: Any) -> None:
    """One stream event (an SDK object or a dict): content, response, finish reason, usage, error."""
    kind = get_field(event, "type")
    if kind == "content_block_delta":  # the per-token path
        delta = get_field(event, "delta")
        field = DELTA_TEXT.get(get_field(delta, "type"))
        if field is not None:
            text = get_field(delta, field)
            if text:
                tracker.content(text if field == "text" and isinstance(text, str) else None)
    elif kind == "message_start":
        message = get_field(event, "message")
        tracker.response(get_field(message, "model"), get_field(message, "id"))
        _read_usage(tracker, get_field(message, "usage"), output=False)  # (its output count is not final)
    elif kind == "message_delta":
        reason = get_field(get_field(event, "delta"), "stop_reason")
        if reason:
            tracker.finish_reason(reason)
        _read_usage(tracker, get_field(event, "usage"), output=True)
    elif kind == "error":
        tracker.fail(str(get_field(get_field(event, "error"), "type") or "stream_error"))


def read_item(tracker: CallTracker, event: Any) -> None:
    """``read_event`` for the SDK's parsed events: plain attribute access on the per-token path."""
    try:
        if event.type == "content_block_delta":
            delta = event.delta
            field = DELTA_TEXT.get(delta.type)
            if field is not None:
                text = getattr(delta, field)
                if text:
                    tracker.content(text if field == "text" and isinstance(text, str) else None)
            return
    except (AttributeError, TypeError):  # (the SDK does not validate events: odd data reads the slow way)
        pass
    read_event(tracker, event)


def read_response(tracker: CallTracker, message: Any) -> None:
    """A whole ``Message`` (SDK object or dict): model, id, stop reason, usage, text."""
    if message is None or get_field(message, "type") == "error":
        return
    tracker.response(get_field(message, "model"), get_field(message, "id"))
    reason = get_field(message, "stop_reason")
    if reason:
        tracker.finish_reason(reason)
    _read_usage(tracker, get_field(message, "usage"), output=True)
    if tracker.texts is not None:
        blocks = get_field(message, "content")
        tracker.whole_text("".join(text for block in blocks if isinstance(text := get_field(block, "text"), str))
                           if isinstance(blocks, list) else "")


def _read_usage(tracker: CallTracker, usage: Any, output: bool) -> None:
    """Input tokens as the GenAI conventions count them for Anthropic: fresh, cache read and cache
    written; output tokens only where final (``message_delta`` and whole messages)."""
    if usage is None:
        return
    fresh = token_count(get_field(usage, "input_tokens"))
    read, written = (token_count(get_field(usage, key)) for key in ("cache_read_input_tokens",
                                                                    "cache_creation_input_tokens"))
    input_tokens = None if fresh is None else fresh + (read or 0) + (written or 0)
    tracker.usage(input_tokens, token_count(get_field(usage, "output_tokens")) if output else None,
                  cache_read=read, cache_write=written)


def skim_event(data: bytes) -> bool:
    """A ``content_block_delta`` whose only news is non-empty text (as the API writes it, compact).
    An unescaped quote is JSON structure, so generated text cannot produce these patterns."""
    find = data.find  # (not ``in``: see ``openai.skim_chat_event``)
    return (data.startswith(b'{"type":"content_block_delta"') and find(b'"delta":{"type":"text_delta","text":"') >= 0
            and find(b'"text":""') < 0)


PROTOCOL = Protocol(
    name="anthropic",
    routes=(  # (not ``/v1/messages/count_tokens`` or ``/batches``: suffixes)
        Route(suffix="/v1/messages", operation="chat", streams=None, read_item=read_item, read_event=read_event,
              read_response=read_response, skim=skim_event, plain_key=b'"text":"', accepts_stream_options=False),
    ),
    provider=provider_for,
    framing="sse",
    stream_default=False,
    model_from_path=None,
    reports_usage=True,
    end_marker=None,
    end_key="type",
    end_values=END_EVENTS,
    usage_only_event=None,
    usage_only_item=None,
    request_fields=(
        (("temperature",), "gen_ai.request.temperature"),
        (("top_p",), "gen_ai.request.top_p"),
        (("top_k",), "gen_ai.request.top_k"),
        (("max_tokens",), "gen_ai.request.max_tokens"),
    ),
    response_headers=RESPONSE_HEADERS,
    sdk=SDK(package="anthropic", supported=("anthropic >= 0.30, < 3",), patched=True),
)

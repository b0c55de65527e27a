"""Cohere's v2 Chat API (``POST /v2/chat``) -> neutral facts for the call tracker.

A stream is SSE, one typed event per chunk: ``message-start`` (the id), ``content-delta`` (text or
thinking), ``tool-plan-delta`` and ``tool-call-delta`` (content too), ``message-end`` (the finish
reason and usage: the end). A whole answer has the id, the finish reason, the message's content
blocks and the usage. Usage comes as the tokens the model used and the units billed; the tokens
are what the GenAI conventions count. The cohere SDK sends with httpx: its calls are measured
there, from the bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol import SDK, Protocol, Route
from .usage import get_field, token_count

if TYPE_CHECKING:
    from ..tracker import CallTracker

#: The event after which a stream has nothing more to say.
END_EVENTS = frozenset({"message-end"})
#: Delta event type -> where its text is, under ``delta.message``.
_CONTENT = {"content-delta": ("content", "text"), "tool-plan-delta": ("tool_plan",),
            "tool-call-delta": ("tool_calls", "function", "arguments")}


def provider_for(host: str | None, azure: bool = False) -> str:
    """``gen_ai.provider.name``: the v2 Chat API is Cohere's, wherever it is served."""
    return "cohere"


def read_event(tracker: CallTracker, event: dict[str, Any]) -> None:
    """One streamed event."""
    kind = event.get("type")
    path = _CONTENT.get(kind) if isinstance(kind, str) else None
    if path is not None:
        value: Any = get_field(event.get("delta"), "message")
        for key in path:
            value = get_field(value, key)
        if not value and kind == "content-delta":  # (a reasoning model's thinking is content too)
            value = get_field(get_field(get_field(event.get("delta"), "message"), "content"), "thinking")
        if value:
            tracker.content(value if kind == "content-delta" and isinstance(value, str) else None)
    elif kind == "message-start" and tracker.response_id is None:
        tracker.response(None, event.get("id"))
    elif kind == "message-end":
        delta = event.get("delta")
        reason = get_field(delta, "finish_reason")
        if reason:
            tracker.finish_reason(reason)
        _read_usage(tracker, get_field(delta, "usage"))
        if get_field(delta, "error"):
            tracker.fail("stream_error")


def read_response(tracker: CallTracker, answer: Any) -> None:
    """A whole answer: id, finish reason, usage and, for capture, the text."""
    if not isinstance(answer, dict):
        return
    tracker.response(None, answer.get("id"))
    reason = answer.get("finish_reason")
    if reason:
        tracker.finish_reason(reason)
    _read_usage(tracker, answer.get("usage"))
    if tracker.texts is not None:
        blocks = get_field(answer.get("message"), "content")
        tracker.whole_text("".join(text for block in blocks if isinstance(text := get_field(block, "text"), str))
                           if isinstance(blocks, list) else "")


def _read_usage(tracker: CallTracker, usage: Any) -> None:
    counts = get_field(usage, "tokens") or get_field(usage, "billed_units")
    if counts is not None:
        tracker.usage(token_count(get_field(counts, "input_tokens")), token_count(get_field(counts, "output_tokens")))


PROTOCOL = Protocol(
    name="cohere",
    routes=(
        Route(suffix="/v2/chat", operation="chat", streams=None, read_item=None, read_event=read_event,
              read_response=read_response, skim=None, plain_key=b"", accepts_stream_options=False),
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
        (("p",), "gen_ai.request.top_p"),
        (("k",), "gen_ai.request.top_k"),
        (("max_tokens",), "gen_ai.request.max_tokens"),
        (("frequency_penalty",), "gen_ai.request.frequency_penalty"),
        (("presence_penalty",), "gen_ai.request.presence_penalty"),
        (("seed",), "gen_ai.request.seed"),
    ),
    response_headers=(),
    sdk=SDK(package="cohere", supported=("cohere >= 5.11",), patched=False),
)

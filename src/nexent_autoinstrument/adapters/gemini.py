"""Google's Gemini API (``models/{model}:generateContent`` and ``:streamGenerateContent``) -> neutral
facts for the call tracker.

The model and whether the answer streams are in the path, not in the body. A stream (SSE with
``?alt=sse``) is a sequence of ``GenerateContentResponse`` objects, and a whole answer is one of
them: candidates with content parts (text, thoughts, function calls) and a ``finishReason``,
``usageMetadata`` (cumulative: the last one counts), ``modelVersion`` and ``responseId``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol import SDK, Protocol, Route
from .usage import token_count

if TYPE_CHECKING:
    from ..tracker import CallTracker


def provider_for(host: str | None, azure: bool = False) -> str:
    """``gen_ai.provider.name``: Vertex AI's endpoint, or the Gemini API."""
    return "gcp.vertex_ai" if (host or "").endswith("aiplatform.googleapis.com") else "gcp.gemini"


def model_from_path(path: str) -> str | None:
    """``.../models/gemini-2.0-flash:streamGenerateContent`` -> ``gemini-2.0-flash``."""
    model = path.rstrip("/").rsplit("/", 1)[-1].partition(":")[0]
    return model or None


def read_event(tracker: CallTracker, event: dict[str, Any]) -> None:
    """One streamed ``GenerateContentResponse``."""
    _read(tracker, event, streamed=True)


def read_response(tracker: CallTracker, answer: Any) -> None:
    """A whole ``GenerateContentResponse``."""
    if isinstance(answer, dict):
        _read(tracker, answer, streamed=False)


def _read(tracker: CallTracker, event: dict[str, Any], streamed: bool) -> None:
    content: str | None = None
    texts: list[str] = []
    candidates = event.get("candidates")
    for position, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
        if not isinstance(candidate, dict):
            continue
        body = candidate.get("content")
        parts = body.get("parts") if isinstance(body, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if text or part.get("functionCall"):
                if content is None:
                    content = ""
                if isinstance(text, str) and text and not part.get("thought"):
                    texts.append(text)
        reason = candidate.get("finishReason")
        if reason:
            index = candidate.get("index")
            tracker.finish_reason(reason, index if isinstance(index, int) else position)
    if streamed and content is not None:
        tracker.content("".join(texts) or None)
    elif not streamed and tracker.texts is not None:
        tracker.whole_text("".join(texts))
    if tracker.response_id is None:
        tracker.response(event.get("modelVersion"), event.get("responseId"))
    usage = event.get("usageMetadata")  # (cumulative, in every chunk: the last one counts)
    if isinstance(usage, dict):
        output = token_count(usage.get("candidatesTokenCount"))
        if output is not None:
            output += token_count(usage.get("thoughtsTokenCount")) or 0
        tracker.usage(token_count(usage.get("promptTokenCount")), output,
                      cache_read=token_count(usage.get("cachedContentTokenCount")))
    error = event.get("error")
    if streamed and isinstance(error, dict):  # (a whole answer's error is told by its HTTP status)
        tracker.fail(str(error.get("status") or error.get("code") or "stream_error"))


PROTOCOL = Protocol(
    name="gemini",
    routes=(  # (the Gemini API and Vertex AI)
        Route(suffix=":streamGenerateContent", operation="generate_content", streams=True, read_item=None,
              read_event=read_event, read_response=read_response, skim=None, plain_key=b"",
              accepts_stream_options=False),
        Route(suffix=":generateContent", operation="generate_content", streams=False, read_item=None,
              read_event=read_event, read_response=read_response, skim=None, plain_key=b"",
              accepts_stream_options=False),
    ),
    provider=provider_for,
    framing="sse",
    stream_default=False,
    model_from_path=model_from_path,
    reports_usage=True,
    end_marker=None,
    end_key="type",
    end_values=frozenset(),
    usage_only_event=None,
    usage_only_item=None,
    request_fields=(
        (("generationConfig", "temperature"), "gen_ai.request.temperature"),
        (("generationConfig", "topP"), "gen_ai.request.top_p"),
        (("generationConfig", "topK"), "gen_ai.request.top_k"),
        (("generationConfig", "maxOutputTokens"), "gen_ai.request.max_tokens"),
        (("generationConfig", "seed"), "gen_ai.request.seed"),
    ),
    response_headers=(),
    sdk=SDK(package="google-genai", supported=("google-genai >= 1.0",), patched=False),
)

"""The one table of LLM endpoints: which requests are LLM calls, what they are, how to read them.

A row per generation path (matched as a suffix: proxies, Azure and API versions add prefixes):
the GenAI operation and provider, where the request says its model and whether it streams, and
the readers that turn what comes back (an SDK's parsed items, SSE or NDJSON events, a whole JSON
body) into neutral facts for the call tracker. The readers live in one module per provider
(``openai``, ``anthropic``, ``ollama``, ``gemini``). The httpx layer matches every row; an SDK
layer only the rows of its own protocol.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ..conventions import GEN_AI_INPUT, bounded_text
from . import anthropic, gemini, ollama, openai

if TYPE_CHECKING:
    from ..tracker import CallTracker

Reader = Callable[["CallTracker", Any], None]


@dataclass(frozen=True)
class Endpoint:
    """What a generation path is, and how its request and response are read."""

    operation: str
    #: Reads one parsed item of the SDK's stream (an SDK layer), one event decoded from SSE or
    #: NDJSON (the httpx layer), and a whole answer (SDK object or decoded JSON).
    read_item: Reader | None = None
    read_event: Reader | None = None
    read_response: Reader = openai.read_response
    #: From an event's raw bytes: True when it is a plain content delta that needs no parsing.
    skim: Callable[[bytes], bool] | None = None
    #: Where a plain delta's text begins in its bytes (``sse.PlainReads``), when its other bytes repeat.
    plain_key: bytes = b""
    #: ``gen_ai.provider.name`` from the server's host (and whether the SDK client is Azure's).
    provider: Callable[[str | None, bool], str] = openai.provider_for
    #: Whether the answer streams: fixed by the path, or None: the body's ``stream`` (else ``stream_default``).
    streams: bool | None = None
    stream_default: bool = False
    #: Where the path names the model, not the body (Gemini): the model from the path.
    model_from_path: Callable[[str], str | None] | None = None
    #: Every answer reports its token usage (no text needs keeping for an estimate).
    reports_usage: bool = False
    #: A streamed event whose ``end_key`` has one of ``end_values`` is the last one.
    end_key: str = "type"
    end_values: frozenset[Any] = frozenset()
    #: Response header -> span attribute, for calls an SDK makes.
    response_headers: tuple[tuple[str, str, type], ...] = openai.RESPONSE_HEADERS
    #: Streams take ``stream_options.include_usage`` (``LLM_INJECT_STREAM_USAGE``).
    accepts_stream_options: bool = False

    def model_of(self, body: dict[str, Any], url: Any) -> str | None:
        """The requested model."""
        path = str(getattr(url, "path", "") or "")
        model = self.model_from_path(path) if self.model_from_path is not None else body.get("model")
        return model if isinstance(model, str) else None

    def is_streamed(self, body: dict[str, Any]) -> bool:
        """Whether the answer streams."""
        return self.streams if self.streams is not None else bool(body.get("stream", self.stream_default))

    def usage_expected(self, body: dict[str, Any]) -> bool:
        """Whether the answer will carry usage (else a stream keeps its text for an estimate)."""
        if self.reports_usage:
            return True
        options = body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))


# What the rows of one protocol share.
_anthropic = partial(Endpoint, read_response=anthropic.read_response, provider=anthropic.provider_for,
                     reports_usage=True, end_values=anthropic.END_EVENTS, response_headers=anthropic.RESPONSE_HEADERS)
_ollama = partial(Endpoint, read_event=ollama.read_event, read_response=ollama.read_response,
                  provider=ollama.provider_for, stream_default=True, reports_usage=True, end_key="done",
                  end_values=frozenset({True}))
_gemini = partial(Endpoint, read_event=gemini.read_event, read_response=gemini.read_response,
                  provider=gemini.provider_for, model_from_path=gemini.model_from_path, reports_usage=True)

#: The OpenAI API and compatible servers (vLLM, Ollama's /v1, DeepSeek...). Longest suffix first:
#: "/chat/completions" must win over "/completions". Anything else (listing, retrieving, deleting
#: or cancelling stored completions and responses) is no LLM call.
OPENAI_ENDPOINTS: tuple[tuple[str, Endpoint], ...] = (
    ("/chat/completions", Endpoint("chat", openai.read_chat_chunk, openai.read_chat_event,
                                   skim=openai.skim_chat_event, plain_key=b'"content":"',
                                   accepts_stream_options=True)),
    ("/completions", Endpoint("text_completion", openai.read_completion_chunk, openai.read_completion_event,
                              skim=openai.skim_completion_event, plain_key=b'"text":"',
                              accepts_stream_options=True)),
    ("/embeddings", Endpoint("embeddings")),
    ("/responses", Endpoint("generate_content", openai.read_response_event, openai.read_response_event,
                            skim=openai.skim_response_event, end_values=openai.RESPONSE_END_EVENTS)),
)
#: Anthropic's Messages API (not ``/v1/messages/count_tokens`` or ``/batches``).
ANTHROPIC_ENDPOINTS: tuple[tuple[str, Endpoint], ...] = (
    ("/v1/messages", _anthropic("chat", anthropic.read_item, anthropic.read_event, skim=anthropic.skim_event,
                                plain_key=b'"text":"')),
)
#: Ollama's native API (its OpenAI-compatible ``/v1`` paths are OpenAI rows).
OLLAMA_ENDPOINTS: tuple[tuple[str, Endpoint], ...] = (
    ("/api/chat", _ollama("chat")),
    ("/api/generate", _ollama("text_completion")),
)
#: The Gemini API and Vertex AI.
GEMINI_ENDPOINTS: tuple[tuple[str, Endpoint], ...] = (
    (":streamGenerateContent", _gemini("generate_content", streams=True)),
    (":generateContent", _gemini("generate_content", streams=False)),
)
#: Every row: what a raw HTTP request can be.
ENDPOINTS = OPENAI_ENDPOINTS + ANTHROPIC_ENDPOINTS + OLLAMA_ENDPOINTS + GEMINI_ENDPOINTS


def endpoint_for(method: str, path: str, table: tuple[tuple[str, Endpoint], ...] | None = None) -> Endpoint | None:
    """The endpoint of a generation request (in ``table``, by default every row), else None."""
    if method.upper() != "POST":
        return None
    path = path.split("?", 1)[0].rstrip("/")
    for suffix, endpoint in ENDPOINTS if table is None else table:
        if path.endswith(suffix):
            return endpoint
    return None


#: Request body field (a path into nested settings) -> span attribute (GenAI semantic conventions).
REQUEST_ATTRIBUTES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("temperature",), "gen_ai.request.temperature"),
    (("top_p",), "gen_ai.request.top_p"),
    (("top_k",), "gen_ai.request.top_k"),
    (("max_tokens",), "gen_ai.request.max_tokens"),
    (("max_completion_tokens",), "gen_ai.request.max_tokens"),
    (("max_output_tokens",), "gen_ai.request.max_tokens"),
    (("frequency_penalty",), "gen_ai.request.frequency_penalty"),
    (("presence_penalty",), "gen_ai.request.presence_penalty"),
    (("seed",), "gen_ai.request.seed"),
    (("options", "temperature"), "gen_ai.request.temperature"),  # Ollama
    (("options", "top_p"), "gen_ai.request.top_p"),
    (("options", "top_k"), "gen_ai.request.top_k"),
    (("options", "num_predict"), "gen_ai.request.max_tokens"),
    (("options", "seed"), "gen_ai.request.seed"),
    (("generationConfig", "temperature"), "gen_ai.request.temperature"),  # Gemini
    (("generationConfig", "topP"), "gen_ai.request.top_p"),
    (("generationConfig", "topK"), "gen_ai.request.top_k"),
    (("generationConfig", "maxOutputTokens"), "gen_ai.request.max_tokens"),
    (("generationConfig", "seed"), "gen_ai.request.seed"),
)
_INPUT_FIELDS = ("messages", "prompt", "input", "contents")


def request_attributes(body: Any, capture_content: bool) -> dict[str, Any]:
    """Span attributes from a request body; prompts only when content capture is on."""
    if not isinstance(body, dict):
        return {}
    attributes: dict[str, Any] = {}
    for path, name in REQUEST_ATTRIBUTES:
        if path[0] not in body:
            continue  # (most are absent: one lookup each)
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[name] = value
    if capture_content:
        for key in _INPUT_FIELDS:
            if key in body:
                attributes[GEN_AI_INPUT] = bounded_json(body[key])
                break
    return attributes


def bounded_json(value: Any) -> str:
    """JSON text of ``value``, cut to a bounded length."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return bounded_text(text)

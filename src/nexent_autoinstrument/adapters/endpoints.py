"""The registry of LLM protocols: which requests are LLM calls, what they are, how to read them.

Each provider is one declarative ``Protocol`` at the end of its module (``openai``, ``anthropic``,
``ollama``, ``gemini``...); this module only lists them, and flattens each route into an
``Endpoint``: the plain record the per-chunk path reads (no lookups through the protocol). The
httpx layer matches every route; an SDK layer only its protocol's. The instrumentors, ``doctor``
and the mock LLM read this registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..conventions import GEN_AI_INPUT, bounded_text
from . import anthropic, cohere, gemini, ollama, openai
from .protocol import Protocol, Reader, RequestField, ResponseHeader

#: Every protocol the agent knows.
PROTOCOLS: tuple[Protocol, ...] = (openai.PROTOCOL, anthropic.PROTOCOL, ollama.PROTOCOL, gemini.PROTOCOL,
                                   cohere.PROTOCOL)
#: The HTTP clients whose requests are matched against every route, and the releases supported.
HTTP_CLIENTS: dict[str, tuple[str, ...]] = {"httpx": ("httpx >= 0.23",), "httpx2": ("httpx2 >= 2.0",),
                                            "aiohttp": ("aiohttp >= 3.9",)}


@dataclass(frozen=True)
class Endpoint:
    """A route of a protocol, flattened: what a request to it is, and how its answer is read."""

    protocol: Protocol
    operation: str
    streams: bool | None
    read_item: Reader | None
    read_event: Reader | None
    read_response: Reader
    skim: Callable[[bytes], bool] | None
    plain_key: bytes
    accepts_stream_options: bool
    provider: Callable[[str | None, bool], str]
    stream_default: bool
    model_from_path: Callable[[str], str | None] | None
    reports_usage: bool
    end_marker: bytes | None
    end_key: str
    end_values: frozenset[Any]
    usage_only_event: Callable[[bytes], bool] | None
    usage_only_item: Callable[[Any], bool] | None
    request_fields: tuple[RequestField, ...]
    response_headers: tuple[ResponseHeader, ...]

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


def _flatten(protocol: Protocol) -> tuple[tuple[str, Endpoint], ...]:
    """The protocol's routes, longest suffix first ("/chat/completions" must win over "/completions")."""
    routes = sorted(protocol.routes, key=lambda route: -len(route.suffix))
    return tuple((route.suffix, Endpoint(
        protocol=protocol, operation=route.operation, streams=route.streams, read_item=route.read_item,
        read_event=route.read_event, read_response=route.read_response, skim=route.skim,
        plain_key=route.plain_key, accepts_stream_options=route.accepts_stream_options,
        provider=protocol.provider, stream_default=protocol.stream_default, model_from_path=protocol.model_from_path,
        reports_usage=protocol.reports_usage, end_marker=protocol.end_marker, end_key=protocol.end_key,
        end_values=protocol.end_values, usage_only_event=protocol.usage_only_event,
        usage_only_item=protocol.usage_only_item, request_fields=protocol.request_fields,
        response_headers=protocol.response_headers)) for route in routes)


#: Each protocol's routes, by its name (what an SDK layer matches).
ROUTES: dict[str, tuple[tuple[str, Endpoint], ...]] = {protocol.name: _flatten(protocol) for protocol in PROTOCOLS}
#: Every route: what a raw HTTP request can be.
ENDPOINTS: tuple[tuple[str, Endpoint], ...] = tuple(route for routes in ROUTES.values() for route in routes)


def endpoint_for(method: str, path: str, table: tuple[tuple[str, Endpoint], ...] | None = None) -> Endpoint | None:
    """The endpoint of a generation request (in ``table``, by default every route), else None."""
    if method.upper() != "POST":
        return None
    path = path.split("?", 1)[0].rstrip("/")
    for suffix, endpoint in ENDPOINTS if table is None else table:
        if path.endswith(suffix):
            return endpoint
    return None


_INPUT_FIELDS = ("messages", "prompt", "input", "contents")


def request_attributes(body: Any, capture_content: bool, fields: tuple[RequestField, ...]) -> dict[str, Any]:
    """Span attributes from a request body (``fields``: the endpoint's protocol's); prompts only
    when content capture is on."""
    if not isinstance(body, dict):
        return {}
    attributes: dict[str, Any] = {}
    for path, name in fields:
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


def _described(value: Any) -> str:
    """What JSON cannot hold, for captured content: binary data (an image, a document) by its size."""
    return f"<{len(value)} bytes>" if isinstance(value, (bytes, bytearray, memoryview)) else str(value)


def bounded_json(value: Any) -> str:
    """JSON text of ``value``, cut to a bounded length."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=_described, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return bounded_text(text)

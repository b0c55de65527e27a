"""The instrumentors ``opentelemetry-instrument`` loads through our entry points (``BaseInstrumentor``
subclasses), and tests use. Each only switches on or off what its layer's module does; auto-load
and the manual API switch the layers on directly, without importing this module.

One concrete class per library: BaseInstrumentor keeps one instance per class, looked up through
the class hierarchy, so they are siblings, not parents and children. ``instrument(telemetry=...)``
records into that telemetry instead of the agent's pipeline (for tests).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from . import aiohttp, botocore, httpx, stainless


class _LayerInstrumentor(BaseInstrumentor):
    """Switches one library's layer on and off: ``layer`` is the layer's module (its ``activate``
    and ``deactivate``), ``library`` the package it patches."""

    layer: Any = None
    library = ""
    supported: tuple[str, ...] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        return self.supported

    def _instrument(self, **kwargs: Any) -> None:
        self.layer.activate(self.library, kwargs.get("telemetry"))

    def _uninstrument(self, **kwargs: Any) -> None:
        self.layer.deactivate(self.library)


class OpenAIInstrumentor(_LayerInstrumentor):
    """Traces and measures every openai SDK call (1.x to 3.x)."""

    layer, library, supported = stainless, "openai", stainless.supported("openai")


class AnthropicInstrumentor(_LayerInstrumentor):
    """Traces and measures every anthropic SDK call. From 1.x the SDK traces its own calls when a
    tracer provider is set; each call then keeps the SDK's span, with the agent's measurements."""

    layer, library, supported = stainless, "anthropic", stainless.supported("anthropic")


class HTTPXInstrumentor(_LayerInstrumentor):
    """httpx, which openai 1.x and 2.x and most other code use: HTTP spans, propagation, raw LLM calls."""

    layer, library, supported = httpx, "httpx", httpx.SUPPORTED["httpx"]


class HTTPX2Instrumentor(_LayerInstrumentor):
    """httpx2, which openai 3.x uses."""

    layer, library, supported = httpx, "httpx2", httpx.SUPPORTED["httpx2"]


class AioHTTPInstrumentor(_LayerInstrumentor):
    """aiohttp's client (google-genai's async calls, and services that call LLMs with aiohttp): LLM calls."""

    layer, library, supported = aiohttp, "aiohttp", aiohttp.SUPPORTED


class BedrockInstrumentor(_LayerInstrumentor):
    """Amazon Bedrock's runtime calls through botocore (boto3, and the frameworks on top of it)."""

    layer, library, supported = botocore, "botocore", botocore.SUPPORTED

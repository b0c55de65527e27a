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

from . import httpx, stainless


class _StainlessInstrumentor(BaseInstrumentor):
    package = ""

    def instrumentation_dependencies(self) -> Collection[str]:
        return stainless.SDKS[self.package].supported

    def _instrument(self, **kwargs: Any) -> None:
        stainless.activate(self.package, kwargs.get("telemetry"))

    def _uninstrument(self, **kwargs: Any) -> None:
        stainless.deactivate(self.package)


class OpenAIInstrumentor(_StainlessInstrumentor):
    """Traces and measures every openai SDK call (1.x to 3.x)."""

    package = "openai"


class AnthropicInstrumentor(_StainlessInstrumentor):
    """Traces and measures every anthropic SDK call. From 1.x the SDK traces its own calls when a
    tracer provider is set; each call then keeps the SDK's span, with the agent's measurements."""

    package = "anthropic"


class _HTTPXFamilyInstrumentor(BaseInstrumentor):
    library = ""

    def instrumentation_dependencies(self) -> Collection[str]:
        return httpx.SUPPORTED[self.library]

    def _instrument(self, **kwargs: Any) -> None:
        httpx.activate(self.library, kwargs.get("telemetry"))

    def _uninstrument(self, **kwargs: Any) -> None:
        httpx.deactivate(self.library)


class HTTPXInstrumentor(_HTTPXFamilyInstrumentor):
    """httpx, which openai 1.x and 2.x and most other code use: HTTP spans, propagation, raw LLM calls."""

    library = "httpx"


class HTTPX2Instrumentor(_HTTPXFamilyInstrumentor):
    """httpx2, which openai 3.x uses."""

    library = "httpx2"

"""The anthropic SDK: a Stainless SDK, patched by ``stainless``. From 1.x it traces its own calls
when a tracer provider is set; each call then keeps the SDK's span, with the agent's measurements."""

from __future__ import annotations

from .stainless import StainlessInstrumentor


class AnthropicInstrumentor(StainlessInstrumentor):
    """Traces and measures every anthropic SDK call. ``instrument(telemetry=...)`` is for tests."""

    package = "anthropic"

"""The openai SDK (1.x, 2.x and 3.x): a Stainless SDK, patched by ``stainless``."""

from __future__ import annotations

from .stainless import StainlessInstrumentor
from .stainless import _streams as _streams  # (the streams under measurement; tests look at them)


class OpenAIInstrumentor(StainlessInstrumentor):
    """Traces and measures every openai SDK call. ``instrument(telemetry=...)`` is for tests."""

    package = "openai"

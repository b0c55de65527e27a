"""What one measuring layer tells another about the call in progress, so each call is counted once.

The openai layer sets ``current_llm_call`` while the SDK sends its HTTP requests, so the httpx
layer knows that the call is already measured and where to put what it sees (attempts,
response headers). The manual API sets ``current_manual_call`` around the user's code; an
automatically measured call inside it is the more precise measurement, so it takes over the
metrics and the manual call keeps only its span.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

current_llm_call: ContextVar[Any] = ContextVar("nexent_current_llm_call", default=None)
current_manual_call: ContextVar[Any] = ContextVar("nexent_current_manual_call", default=None)


def take_over_manual_call() -> None:
    """An automatic layer measures a call made inside a manual one: the manual one records no metrics."""
    outer = current_manual_call.get()
    if outer is not None:
        outer.delegated = True

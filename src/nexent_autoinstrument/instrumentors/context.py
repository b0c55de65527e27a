"""What one instrumentation layer tells another about the call in progress.

The openai layer sets ``current_llm_call`` while the SDK sends its HTTP requests, so the httpx
layer knows that the call is already measured (count it once) and where to put what it sees
(attempts, response headers).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

current_llm_call: ContextVar[Any] = ContextVar("nexent_current_llm_call", default=None)

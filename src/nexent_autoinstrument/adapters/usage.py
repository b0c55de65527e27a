"""Token usage from any shape the OpenAI-compatible APIs use (objects or plain dicts)."""

from __future__ import annotations

from typing import Any

# (input field, output field) pairs: Chat Completions / Completions, then the Responses API.
_USAGE_FIELDS = (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens"))


def _get(source: Any, key: str) -> Any:
    if isinstance(source, dict):
        return source.get(key)
    return getattr(source, key, None)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_of(response: Any) -> tuple[int | None, int | None] | None:
    """(input_tokens, output_tokens) from ``response.usage`` (or a usage object itself), else None."""
    usage = _get(response, "usage")
    if usage is None:
        usage = response
    for input_key, output_key in _USAGE_FIELDS:
        input_tokens, output_tokens = _count(_get(usage, input_key)), _count(_get(usage, output_key))
        if input_tokens is not None or output_tokens is not None:
            return input_tokens, output_tokens
    return None

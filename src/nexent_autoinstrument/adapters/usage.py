"""Token usage from any shape the OpenAI-compatible APIs use (objects or plain dicts), and the
field helpers the other providers' readers share."""

from __future__ import annotations

from typing import Any

# (input field, output field) pairs: Chat Completions / Completions, then the Responses API.
_USAGE_FIELDS = (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens"))


_NO_FIELDS: dict[str, Any] = {}


def get_field(source: Any, key: str) -> Any:
    """A field of an SDK object or of a plain dict; None when absent. An SDK model (pydantic 2)
    is read from its field dictionaries (declared, then the undeclared ones the server sent): a
    field it lacks, asked of the model, is an AttributeError raised and caught inside pydantic
    (22k instructions, more than a whole chunk)."""
    if isinstance(source, dict):
        return source.get(key)
    names = _model_attributes(type(source))
    if names is not None:
        declared = getattr(source, "__dict__", _NO_FIELDS)
        if key in declared:
            return declared[key]
        extra = getattr(source, "__pydantic_extra__", None)
        if isinstance(extra, dict) and key in extra:
            return extra[key]
        if key not in names:  # (no property or method of that name either)
            return None
    return getattr(source, key, None)


#: By class: the names of its class attributes (properties, methods) if it is a plain pydantic 2
#: model, else None (any other class, or a model with an ``__getattr__`` of its own).
_MODEL_ATTRIBUTES: dict[type, frozenset[str] | None] = {}
_MAX_CLASSES = 1024


def _model_attributes(cls: type) -> frozenset[str] | None:
    try:
        return _MODEL_ATTRIBUTES[cls]
    except KeyError:
        pass
    mro = cls.__mro__
    model = next((klass for klass in mro if "__pydantic_extra__" in vars(klass)), None)
    lookup = next((klass for klass in mro if "__getattr__" in vars(klass)), None)
    names = frozenset(name for klass in mro for name in vars(klass)) if model is not None and lookup is model else None
    if len(_MODEL_ATTRIBUTES) < _MAX_CLASSES:
        _MODEL_ATTRIBUTES[cls] = names
    return names


def token_count(value: Any) -> int | None:
    """``value`` if it is a token count (a non-negative int), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_of(response: Any) -> tuple[int | None, int | None] | None:
    """(input_tokens, output_tokens) from ``response.usage`` (or a usage object itself), else None."""
    usage = get_field(response, "usage")
    return usage_counts(response if usage is None else usage)


def cached_input(usage: Any) -> int | None:
    """The input tokens read from OpenAI's prompt cache: ``prompt_tokens_details.cached_tokens``
    (Chat Completions) or ``input_tokens_details.cached_tokens`` (Responses); None if not given."""
    for key in ("prompt_tokens_details", "input_tokens_details"):
        details = get_field(usage, key)
        if details is not None:
            return token_count(get_field(details, "cached_tokens"))
    return None


def usage_counts(usage: Any) -> tuple[int | None, int | None] | None:
    """(input_tokens, output_tokens) of a usage object or dict, else None."""
    for input_key, output_key in _USAGE_FIELDS:
        input_tokens = token_count(get_field(usage, input_key))
        output_tokens = token_count(get_field(usage, output_key))
        if input_tokens is not None or output_tokens is not None:
            return input_tokens, output_tokens
    return None

"""Token usage from any shape the OpenAI-compatible APIs use (objects or plain dicts), and the
field helpers the other providers' readers share."""

from __future__ import annotations

from typing import Any

# (input field, output field) pairs: Chat Completions / Completions, then the Responses API.
_USAGE_FIELDS = (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens"))


_ABSENT = object()
_NO_FIELDS: dict[str, Any] = {}


def field_maps(source: Any) -> tuple[dict[str, Any], ...] | None:
    """The dictionaries that hold the fields of ``source``: a plain dict itself, or an SDK model's
    (pydantic 2) declared fields, then the undeclared ones the server sent; None for anything
    else. A lookup there is a dictionary's, while asking a model for a field it lacks raises and
    catches an AttributeError inside pydantic (22k instructions, more than a whole chunk)."""
    if isinstance(source, dict):
        return (source,)
    extra = getattr(source, "__pydantic_extra__", _ABSENT)
    if extra is _ABSENT:
        return None
    return tuple(fields for fields in (getattr(source, "__dict__", None), extra) if isinstance(fields, dict))


def get_field(source: Any, key: str) -> Any:
    """A field of an SDK object or of a plain dict; None when absent. An SDK model (pydantic 2)
    is read from its field dictionaries, so that a field it lacks is not an exception caught
    inside pydantic (see ``field_maps``)."""
    if isinstance(source, dict):
        return source.get(key)
    extra: Any = getattr(source, "__pydantic_extra__", _ABSENT)
    if extra is not _ABSENT:
        declared = getattr(source, "__dict__", _NO_FIELDS)
        if key in declared:
            return declared[key]
        if isinstance(extra, dict) and key in extra:
            return extra[key]
        if key not in _class_attributes(type(source)):  # (no property or method of that name either)
            return None
    return getattr(source, key, None)


#: The names each model class has as class attributes (properties, methods), by class.
_CLASS_ATTRIBUTES: dict[type, frozenset[str]] = {}
_MAX_CLASSES = 1024


def _class_attributes(cls: type) -> frozenset[str]:
    names = _CLASS_ATTRIBUTES.get(cls)
    if names is None:
        names = frozenset(name for klass in cls.__mro__ for name in vars(klass))
        if len(_CLASS_ATTRIBUTES) < _MAX_CLASSES:
            _CLASS_ATTRIBUTES[cls] = names
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

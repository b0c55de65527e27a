"""A layer's wrapt patches, as a table of ``(module, "Owner.attribute", wrapper)``: put on once, and
taken off again, each recognised as the layer's own among other wrappers of the same function
(another instrumentation may wrap it too, before or after the agent)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from typing import Any

import wrapt

Patch = tuple[str, str, Any]


def _wraps(current: Any, wrapper: Any) -> bool:
    """Whether ``wrapper`` is among the wrappers of ``current``."""
    while isinstance(current, wrapt.FunctionWrapper):
        if current._self_wrapper is wrapper:
            return True
        current = current.__wrapped__
    return False


def apply(patches: Iterable[Patch]) -> None:
    """Wrap each function that the layer's wrapper does not wrap yet (its module is imported if
    it is not: a module of the library being imported)."""
    for module_name, path, wrapper in patches:
        owner_name, _, name = path.partition(".")
        owner = getattr(importlib.import_module(module_name), owner_name)
        if not _wraps(owner.__dict__.get(name), wrapper):
            wrapt.wrap_function_wrapper(owner, name, wrapper)


def remove(patches: Iterable[Patch]) -> None:
    """Give each function back where the layer's wrapper is the outermost; under another's, it
    stays (unwrapping would take the other off too), and the layer's switch leaves it idle."""
    for module_name, path, wrapper in patches:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        owner_name, _, name = path.partition(".")
        owner = getattr(module, owner_name)
        current = owner.__dict__.get(name)
        if isinstance(current, wrapt.FunctionWrapper) and current._self_wrapper is wrapper:
            setattr(owner, name, current.__wrapped__)

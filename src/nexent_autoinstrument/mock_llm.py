"""Compatibility alias of ``nexent_autoinstrument.tools.mock``, the mock LLM (docs/mock-llm.md names this path)."""

from .tools.mock import *  # noqa: F403

"""A span that an SDK started for its own call, measured by the agent instead of a second span.

Some SDKs trace their calls themselves (anthropic from 1.x: a CLIENT span with the GenAI
attributes, current while the SDK's request runs). There must be one LLM span per call, so the
call tracker adopts that span: it measures the call as usual, adds its attributes where the SDK
set none (the SDK's own values win: its name, ``error.type``, usage, time to first chunk), and
records the metrics. The SDK still ends its span, but not before the tracker has written to it:
an end the SDK asks for first waits until the call's end (which comes soon: the SDK ends its span
when the body is read, closed or dropped, and the call ends then too), at the time the SDK asked;
a call the caller stopped reading earlier ends at the time it stopped, on the span as in the
metrics (the SDK's stream may be held open long after: its time is ``llm.stream.held_seconds``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any


class Adoption:
    """The SDK's span of one call, as the call tracker writes to it (``set_attributes``, ``end``)."""

    __slots__ = ("_asked", "_ended_at", "_owner_end", "_released", "span", "start_ns")

    def __init__(self, span: Any) -> None:
        self.span = span
        start = getattr(span, "start_time", None)
        self.start_ns: int = start if isinstance(start, int) and start > 0 else time.time_ns()
        self._owner_end = span.end
        #: When the SDK asked its span to end (at most one entry; ``pop`` makes the end happen once).
        self._asked: list[int | None] = []
        self._released = False
        self._ended_at: int | None = None  # when the call ended, if that was earlier than its end
        span.end = self._owner_ends  # an instance attribute: only this span's end, only until it ends

    @classmethod
    def of(cls, span: Any) -> Adoption | None:
        """The adoption of ``span``, or None if there is none to adopt (or it cannot be)."""
        if span is None or not span.get_span_context().is_valid:
            return None
        try:
            return cls(span)
        except (AttributeError, TypeError):  # a span type that takes no instance attribute
            return None

    def _owner_ends(self, end_time: int | None = None) -> None:
        self._asked.append(end_time if end_time is not None else time.time_ns())
        if self._released:
            self._end()

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        """The tracker's attributes, where the SDK set none of its own."""
        existing = getattr(self.span, "attributes", None) or {}
        self.span.set_attributes({key: value for key, value in attributes.items() if key not in existing})

    def end(self, end_time: int | None = None) -> None:
        """The call has ended (``end_time``: earlier than now) and its attributes are written: the
        SDK's end may happen (now, if it asked), dated ``end_time`` if there is one."""
        self._ended_at = end_time
        self._released = True
        self._end()

    def _end(self) -> None:
        try:
            when = self._asked.pop()
        except IndexError:
            return
        with contextlib.suppress(AttributeError):
            del self.span.end
        ended_at = self._ended_at
        self._owner_end(when if ended_at is None or (when is not None and when < ended_at) else ended_at)

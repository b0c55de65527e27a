"""Streams of parsed items (an SDK's chunks or events) measured as the caller pulls them.

``measure`` / ``ameasure`` sit where the SDK's own iteration loop sits and hand every item on
unchanged, after the adapter's reader has reported it to the call tracker. Each exit is a
lifecycle event: the end of the items, an error from the SDK, the consumer breaking off (or
dropping the stream), or something thrown in by the consumer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from . import conventions as names
from . import lifecycle
from .guard import report_internal_error
from .tracker import CallTracker

ReadItem = Callable[[CallTracker, Any], None]


class ItemStream:
    """One SDK stream under measurement: the SDK's own item iterator and how to read its items."""

    __slots__ = ("__weakref__", "drop_usage_only", "inner", "read", "tracker")

    def __init__(self, tracker: CallTracker, inner: Any, read: ReadItem, drop_usage_only: bool) -> None:
        self.tracker = tracker
        self.inner = inner
        self.read = read
        self.drop_usage_only = drop_usage_only


def is_usage_only(item: Any) -> bool:
    """The extra chunk that ``stream_options.include_usage`` adds: no choices, only usage."""
    return not getattr(item, "choices", True) and getattr(item, "usage", None) is not None


def _consumer_left(tracker: CallTracker, on_stop: str, exc: BaseException) -> None:
    """The consumer stopped at an item: it broke off or dropped the stream (``GeneratorExit``:
    the call ends soon, as ``on_stop``), or threw something in (the call ended early)."""
    if isinstance(exc, GeneratorExit):
        lifecycle.suspend(tracker, on_stop)
    elif tracker.suspended is None:
        lifecycle.end(tracker, outcome=names.CLOSED_EARLY)


def _sdk_failed(tracker: CallTracker, exc: BaseException) -> None:
    if not isinstance(exc, GeneratorExit):  # (one from the consumer, passed on by _consumer_left)
        lifecycle.end(tracker, exc)


def measure(stream: ItemStream, on_stop: str) -> Iterator[Any]:
    """Yield the SDK's items, measured. ``on_stop``: the outcome if the consumer stops pulling
    (``closed_early`` for a loop that broke off, ``abandoned`` for a dropped stream)."""
    tracker, read, drop = stream.tracker, stream.read, stream.drop_usage_only
    tracker.items_claimed = True
    lifecycle.resume(tracker)
    try:
        for item in stream.inner:  # the per-chunk hot path
            tracker.chunks += 1
            try:
                read(tracker, item)
            except Exception as exc:
                report_internal_error("stream.read_item", exc)
            if drop and is_usage_only(item):
                continue
            try:
                yield item
            except BaseException as exc:
                _consumer_left(tracker, on_stop, exc)
                raise
    except BaseException as exc:
        _sdk_failed(tracker, exc)
        raise
    lifecycle.end(tracker)


async def ameasure(stream: ItemStream, on_stop: str) -> AsyncIterator[Any]:
    """The async form of ``measure``."""
    tracker, read, drop = stream.tracker, stream.read, stream.drop_usage_only
    tracker.items_claimed = True
    lifecycle.resume(tracker)
    try:
        async for item in stream.inner:
            tracker.chunks += 1
            try:
                read(tracker, item)
            except Exception as exc:
                report_internal_error("stream.read_item", exc)
            if drop and is_usage_only(item):
                continue
            try:
                yield item
            except BaseException as exc:
                _consumer_left(tracker, on_stop, exc)
                raise
    except BaseException as exc:
        _sdk_failed(tracker, exc)
        raise
    lifecycle.end(tracker)

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
    """One SDK stream under measurement: its call, how to read its items, and a weak reference
    to the SDK's stream (whose callback tells when the stream was dropped)."""

    __slots__ = ("drop", "read", "ref", "tracker")

    def __init__(self, tracker: CallTracker, read: ReadItem, drop: Callable[[Any], bool] | None, ref: Any) -> None:
        self.tracker = tracker
        self.read = read
        #: Which items the caller never sees (the usage-only chunk the agent asked for), if any.
        self.drop = drop
        self.ref = ref


def _consumer_left(tracker: CallTracker, exc: BaseException) -> None:
    """The consumer stopped at an item: its loop broke off (``GeneratorExit``: the call ends
    soon, unless it resumes), or it threw something in (the call ended early)."""
    if isinstance(exc, GeneratorExit):
        lifecycle.suspend(tracker, names.CLOSED_EARLY)
    elif tracker.progress.suspended is None:
        lifecycle.end(tracker, outcome=names.CLOSED_EARLY)


def _sdk_failed(tracker: CallTracker, exc: BaseException) -> None:
    if not isinstance(exc, GeneratorExit):  # (one from the consumer, passed on by _consumer_left)
        lifecycle.end(tracker, exc)


def measure(stream: ItemStream, inner: Iterator[Any]) -> Iterator[Any]:
    """Yield the SDK's items from ``inner``, measured: the SDK's ``for`` loop, with a reader."""
    tracker, read, drop = _pulling(stream), stream.read, stream.drop
    progress = tracker.progress
    try:
        for item in inner:  # the per-chunk hot path
            tracker.chunk()
            try:
                read(tracker, item)
            except Exception as exc:
                report_internal_error("stream.read_item", exc)
            if drop is not None and drop(item):
                continue
            progress.handed()
            try:
                yield item
                progress.asking()
            except BaseException as exc:
                _consumer_left(tracker, exc)
                raise
    except BaseException as exc:
        _sdk_failed(tracker, exc)
        raise
    lifecycle.end(tracker)


async def ameasure(stream: ItemStream, inner: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The async form of ``measure``, for ``async for``. It takes the place of the SDK's own async
    generator, so asyncio tracks exactly as many async generators as without the agent. (Its loop
    is ``measure``'s, inlined on purpose: a shared helper would be a call per chunk.)"""
    tracker, read, drop = _pulling(stream), stream.read, stream.drop
    progress = tracker.progress
    try:
        async for item in inner:
            tracker.chunk()
            try:
                read(tracker, item)
            except Exception as exc:
                report_internal_error("stream.read_item", exc)
            if drop is not None and drop(item):
                continue
            progress.handed()
            try:
                yield item
                progress.asking()
            except BaseException as exc:
                _consumer_left(tracker, exc)
                raise
    except BaseException as exc:
        _sdk_failed(tracker, exc)
        raise
    lifecycle.end(tracker)


def _pulling(stream: ItemStream) -> CallTracker:
    """The consumer asks for an item (``next()`` or ``__anext__``): the call is being read."""
    tracker = stream.tracker
    tracker.progress.claim()
    lifecycle.resume(tracker)
    return tracker


def _handed_over(stream: ItemStream, item: Any) -> bool:
    """The SDK gave ``item``: read it; whether the consumer gets it (not an injected usage chunk)."""
    tracker = stream.tracker
    tracker.chunk()
    try:
        stream.read(tracker, item)
    except Exception as exc:
        report_internal_error("stream.read_item", exc)
    if stream.drop is not None and stream.drop(item):
        return False
    tracker.progress.handed()
    return True


def next_measured(stream: ItemStream, pull: Callable[[], Any]) -> Any:
    """One item pulled with ``next()``, measured: ``pull`` is the SDK's own ``__next__``."""
    tracker = _pulling(stream)
    while True:
        try:
            item = pull()
        except StopIteration:
            lifecycle.end(tracker)
            raise
        except BaseException as exc:
            lifecycle.end(tracker, exc)
            raise
        if _handed_over(stream, item):
            return item


async def anext_measured(stream: ItemStream, pull: Callable[[], Any]) -> Any:
    """One item of an async stream pulled with ``__anext__`` (``anext()``, the SDK's helpers),
    measured: ``pull`` is the SDK's own ``__anext__``. No async generator is added."""
    tracker = _pulling(stream)
    while True:
        try:
            item = await pull()
        except StopAsyncIteration:
            lifecycle.end(tracker)
            raise
        except BaseException as exc:
            lifecycle.end(tracker, exc)
            raise
        if _handed_over(stream, item):
            return item

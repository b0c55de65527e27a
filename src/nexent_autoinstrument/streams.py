"""Stream proxies: the user keeps the real ``openai.Stream`` (``isinstance`` holds), and every
item, and every way a stream can end, reaches the call tracker exactly once.

wrapt's ObjectProxy forwards attributes, ``iter()`` and ``with`` to the wrapped object, and has
no ``__next__``, ``__aiter__`` or ``__anext__``; all of them are defined here, so iteration
passes through the proxy and ``with`` hands back the proxy, not the bare stream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import wrapt

from . import conventions as names
from .guard import report_internal_error
from .tracker import abandon

ReadItem = Callable[[Any, Any], None]


def end_call(tracker: Any, exc: BaseException | None, outcome: str | None = None, at: float | None = None) -> None:
    """Finish a call because of ``exc`` (None: it ended normally, or with ``outcome``), now or ``at``."""
    try:
        if tracker.finished:
            return
        result = outcome or names.outcome_of(exc)
        if exc is not None and result == names.ERROR:
            status = getattr(exc, "status_code", None)
            if isinstance(status, int):
                tracker.span.set_attribute("http.response.status_code", status)
            tracker.fail(exc)
        tracker.finish(result, at)
    except Exception as error:
        report_internal_error("stream.end", error)


def abandon_call(tracker: Any) -> None:
    """For ``__del__``: the call's stream was dropped unfinished; it ends at the next safe point."""
    if tracker is not None and not tracker.finished:
        abandon(functools.partial(end_call, tracker, None, names.ABANDONED))


def _exit_outcome(exc_info: tuple[Any, ...]) -> str:
    """Leaving a ``with`` block early: cancelled if cancellation did it, else closed early.
    An exception from the user's own code is not an LLM error."""
    exc = exc_info[1] if len(exc_info) > 1 else None
    return names.CANCELLED if names.outcome_of(exc) == names.CANCELLED else names.CLOSED_EARLY


def _is_usage_only(item: Any) -> bool:
    return not getattr(item, "choices", True) and getattr(item, "usage", None) is not None


class _ClosingResponse(wrapt.ObjectProxy):
    """The stream's HTTP response; closing it (as the SDK's stream helpers do) ends the call."""

    def __init__(self, response: Any, tracker: Any) -> None:
        super().__init__(response)
        self._self_tracker = tracker

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            end_call(self._self_tracker, None, names.CLOSED_EARLY)

    async def aclose(self) -> Any:
        try:
            return await self.__wrapped__.aclose()
        finally:
            end_call(self._self_tracker, None, names.CLOSED_EARLY)


class _TracedStreamBase(wrapt.ObjectProxy):
    def __init__(self, stream: Any, tracker: Any, read_item: ReadItem, drop_usage_only: bool = False) -> None:
        super().__init__(stream)
        self._self_tracker = tracker
        self._self_read = read_item
        self._self_drop_usage_only = drop_usage_only
        self._self_response: Any = None
        self._self_iterator: Any = None

    @property
    def response(self) -> Any:
        if self._self_response is None:
            self._self_response = _ClosingResponse(self.__wrapped__.response, self._self_tracker)
        return self._self_response

    def __del__(self) -> None:
        abandon_call(getattr(self, "_self_tracker", None))


class TracedStream(_TracedStreamBase):
    """A synchronous stream (``openai.Stream``) seen by the call tracker."""

    def __iter__(self) -> Iterator[Any]:
        # A generator, like the SDK's own ``Stream.__iter__``: resuming a frame per chunk is
        # cheaper than a ``__next__`` call. This loop is the per-chunk hot path.
        tracker, read, drop_usage_only = self._self_tracker, self._self_read, self._self_drop_usage_only
        try:
            for item in self.__wrapped__:
                tracker.chunks += 1
                try:
                    read(tracker, item)
                except Exception as exc:
                    report_internal_error("stream.read_item", exc)
                if drop_usage_only and _is_usage_only(item):
                    continue
                yield item
        except GeneratorExit:
            raise  # this iterator was dropped (e.g. after ``break``); the stream itself may go on
        except BaseException as exc:
            end_call(tracker, exc)
            raise
        end_call(tracker, None)

    def __next__(self) -> Any:
        if self._self_iterator is None:
            self._self_iterator = self.__iter__()
        return next(self._self_iterator)

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            end_call(self._self_tracker, None, names.CLOSED_EARLY)

    def __enter__(self) -> TracedStream:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            end_call(self._self_tracker, None, _exit_outcome(exc_info))


class AsyncTracedStream(_TracedStreamBase):
    """An asynchronous stream (``openai.AsyncStream``) seen by the call tracker."""

    def __aiter__(self) -> AsyncTracedStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                item = await self.__wrapped__.__anext__()
                self._self_tracker.chunks += 1
            except StopAsyncIteration:
                end_call(self._self_tracker, None)
                raise
            except BaseException as exc:
                end_call(self._self_tracker, exc)
                raise
            # Inlined on purpose: this runs once per chunk.
            try:
                self._self_read(self._self_tracker, item)
            except Exception as exc:
                report_internal_error("stream.read_item", exc)
            if not self._self_drop_usage_only or not _is_usage_only(item):
                return item

    async def close(self) -> Any:
        try:
            return await self.__wrapped__.close()
        finally:
            end_call(self._self_tracker, None, names.CLOSED_EARLY)

    async def aclose(self) -> Any:
        return await self.close()

    async def __aenter__(self) -> AsyncTracedStream:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            end_call(self._self_tracker, None, _exit_outcome(exc_info))

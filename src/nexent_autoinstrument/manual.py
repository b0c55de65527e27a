"""The seed's manual API: ``monitoring_manager`` with decorators and context managers.

Everything here degrades to a harmless no-op when OpenTelemetry is not installed or
``ENABLE_TELEMETRY`` is off: decorators hand back the user's own function, and context
managers yield a handle whose methods do nothing. Nothing here ever raises into user code
because of the agent; the user's own exceptions pass through unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from . import bootstrap
from . import conventions as names
from .adapters.usage import usage_of
from .conventions import outcome_of
from .guard import report_internal_error
from .settings import get_settings

F = TypeVar("F", bound=Callable[..., Any])

#: True when the OpenTelemetry packages are installed (the seed's flag; checked without importing them).
MONITORING_AVAILABLE: bool = bootstrap.opentelemetry_installed()


def _telemetry() -> Any:
    telemetry = bootstrap.current_telemetry()
    if telemetry is None and get_settings().enabled:
        telemetry = bootstrap.initialize("manual")
    return telemetry


# -- scopes: what a decorator does around one call -----------------------------------------------

class _EndpointScope:
    """An endpoint (handler) span. Its failures are not LLM errors."""

    def __init__(self, telemetry: Any, name: str) -> None:
        from opentelemetry.trace import SpanKind

        self.span = telemetry.tracer.start_span(name, kind=SpanKind.INTERNAL)

    def item(self, value: Any) -> None:
        pass

    def result(self, value: Any) -> None:
        pass

    def end(self, exc: BaseException | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        if exc is not None and outcome_of(exc) == names.ERROR:
            names.record_error(self.span, exc)
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self.span.set_attribute(names.ERROR_TYPE, type(exc).__name__)
        self.span.end()


class _LLMScope:
    """One LLM call on the shared tracker; items of a generator count as content chunks."""

    def __init__(self, telemetry: Any, operation: str, model: str, provider: str, stream: bool,
                 attributes: dict[str, Any] | None = None) -> None:
        from . import lifecycle  # (only with OpenTelemetry installed, as everything past _telemetry())

        self.tracker = lifecycle.begin(telemetry, operation, model, provider=provider, stream=stream,
                                       attributes=attributes)
        self.span = self.tracker.span

    def item(self, value: Any) -> None:
        self.tracker.chunk()
        if value is not None and value != "":
            self.tracker.content()

    def result(self, value: Any) -> None:
        usage = usage_of(value)
        if usage is not None:
            self.tracker.usage(*usage)

    def end(self, exc: BaseException | None) -> None:
        from . import lifecycle

        lifecycle.end(self.tracker, exc)


def _safely(action: Callable[..., Any], *args: Any) -> Any:
    try:
        return action(*args)
    except Exception as exc:
        report_internal_error(getattr(action, "__qualname__", "manual"), exc)
        return None


class _Current:
    """Makes a scope's span current for a stretch of user code, and only for that stretch; an
    LLM scope is also the manual call that automatic layers inside it take over."""

    __slots__ = ("manual_token", "scope", "token")

    def __init__(self, scope: Any) -> None:
        self.scope = scope
        self.token: Any = None
        self.manual_token: Any = None

    def __enter__(self) -> None:
        if self.scope is not None:
            from opentelemetry import context, trace

            from .lifecycle import current_manual_call

            self.token = _safely(lambda: context.attach(trace.set_span_in_context(self.scope.span)))
            tracker = getattr(self.scope, "tracker", None)
            if tracker is not None:
                self.manual_token = current_manual_call.set(tracker)

    def __exit__(self, *exc: Any) -> None:
        if self.manual_token is not None:
            from .lifecycle import current_manual_call

            _safely(current_manual_call.reset, self.manual_token)
            self.manual_token = None
        if self.token is not None:
            from opentelemetry import context

            _safely(context.detach, self.token)
            self.token = None


class _Observed:
    """The user's generator as a scope sees it: each step runs with the scope's span current, and
    each item it produces is counted. ``yield from`` it: ``send``, ``throw`` and ``close`` then
    reach the generator exactly as they would without the decorator, return values included."""

    __slots__ = ("gen", "scope")

    def __init__(self, gen: Any, scope: Any) -> None:
        self.gen = gen
        self.scope = scope

    def __iter__(self) -> _Observed:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        with _Current(self.scope):
            item = self.gen.send(value)
        self._count(item)
        return item

    def throw(self, typ: Any, value: Any = None, traceback: Any = None) -> Any:
        # ``yield from`` passes (type, value, traceback); hand the generator the exception itself.
        exc = value if value is not None else (typ() if isinstance(typ, type) else typ)
        if traceback is not None:
            exc = exc.with_traceback(traceback)
        with _Current(self.scope):
            item = self.gen.throw(exc)
        self._count(item)
        return item

    def close(self) -> None:
        with _Current(self.scope):
            self.gen.close()

    def _count(self, item: Any) -> None:
        if self.scope is not None:
            _safely(self.scope.item, item)


def _wrap(fn: F, make_scope: Callable[[Any], Any]) -> F:
    """Wrap a sync/async function or generator so ``make_scope`` brackets each call."""

    def open_scope() -> Any:
        telemetry = _telemetry()
        return None if telemetry is None else _safely(make_scope, telemetry)

    def close(scope: Any, exc: BaseException | None) -> None:
        if scope is not None:
            _safely(scope.end, exc)

    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def async_gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = open_scope()
            agen = fn(*args, **kwargs)
            error: BaseException | None = None
            try:
                step, argument = agen.asend, None
                while True:  # what ``yield from`` would do, if async generators had it
                    with _Current(scope):
                        try:
                            item = await step(argument)
                        except StopAsyncIteration:
                            return
                    if scope is not None:
                        _safely(scope.item, item)
                    try:
                        argument = yield item
                        step = agen.asend
                    except GeneratorExit:
                        raise
                    except BaseException as thrown:
                        step, argument = agen.athrow, thrown
            except BaseException as exc:
                error = exc
                raise
            finally:
                with _Current(scope):
                    await agen.aclose()
                close(scope, error)
        return async_gen_wrapper  # type: ignore[return-value]

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = open_scope()
            error: BaseException | None = None
            try:
                return (yield from _Observed(fn(*args, **kwargs), scope))
            except BaseException as exc:
                error = exc
                raise
            finally:
                close(scope, error)
        return gen_wrapper  # type: ignore[return-value]

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = open_scope()
            error: BaseException | None = None
            try:
                with _Current(scope):
                    value = await fn(*args, **kwargs)
                if scope is not None:
                    _safely(scope.result, value)
                return value
            except BaseException as exc:
                error = exc
                raise
            finally:
                close(scope, error)
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scope = open_scope()
        error: BaseException | None = None
        try:
            with _Current(scope):
                value = fn(*args, **kwargs)
            if scope is not None:
                _safely(scope.result, value)
            return value
        except BaseException as exc:
            error = exc
            raise
        finally:
            close(scope, error)
    return wrapper  # type: ignore[return-value]


# -- handles for hand-written streaming loops -------------------------------------------------------

class NoopLLMHandle:
    """What ``trace_llm_request`` yields when monitoring is off: every method does nothing."""

    def record_token(self, count: int = 1) -> None:
        """Report that ``count`` tokens of content arrived now."""

    def record_first_token(self) -> None:
        """Report the first content token (only the first call counts)."""

    def record_usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        """Report token usage as the API returned it."""

    def set_attributes(self, **attributes: Any) -> None:
        """Add attributes to the call's span."""

    def add_event(self, name: str, **attributes: Any) -> None:
        """Add an event to the call's span."""


class LLMHandle(NoopLLMHandle):
    """Feeds a hand-written streaming loop into the same engine as auto-instrumented calls."""

    __slots__ = ("_tracker",)

    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker

    def record_token(self, count: int = 1) -> None:
        try:
            self._tracker.chunk()
            self._tracker.content(tokens=count)
        except Exception as exc:
            report_internal_error("handle.record_token", exc)

    def record_first_token(self) -> None:
        if self._tracker.first_content is None:
            self.record_token()

    def record_usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        _safely(self._tracker.usage, input_tokens, output_tokens)

    def set_attributes(self, **attributes: Any) -> None:
        _safely(self._tracker.span.set_attributes, attributes)

    def add_event(self, name: str, **attributes: Any) -> None:
        _safely(self._tracker.span.add_event, name, attributes)


class _LLMRequest:
    """``trace_llm_request``: a sync and async context manager around one LLM call."""

    def __init__(self, operation: str, model: str, provider: str, attributes: dict[str, Any]) -> None:
        self._args = (operation, model, provider, attributes)
        self._scope: _LLMScope | None = None
        self._current: _Current | None = None

    def __enter__(self) -> NoopLLMHandle:
        telemetry = _telemetry()
        if telemetry is None:
            return NoopLLMHandle()
        operation, model, provider, attributes = self._args
        self._scope = _safely(lambda: _LLMScope(telemetry, operation, model, provider, True, attributes))
        if self._scope is None:
            return NoopLLMHandle()
        self._current = _Current(self._scope)
        self._current.__enter__()
        return LLMHandle(self._scope.tracker)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._current is not None:
            self._current.__exit__()
        if self._scope is not None:
            _safely(self._scope.end, exc)

    async def __aenter__(self) -> NoopLLMHandle:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


class MonitoringManager:
    """The seed's monitoring manager: decorators, context managers and FastAPI setup."""

    @property
    def is_enabled(self) -> bool:
        """True when telemetry is on and the OpenTelemetry packages are installed."""
        return MONITORING_AVAILABLE and get_settings().enabled

    def monitor_endpoint(self, name: str | None = None) -> Callable[[F], F]:
        """Trace a handler (sync, async, generator or async generator) as one span.

        Failures mark the span as an error; they are not counted as LLM errors."""
        def decorate(fn: F) -> F:
            if not self.is_enabled:
                return fn
            span_name = name or fn.__qualname__
            return _wrap(fn, lambda telemetry: _EndpointScope(telemetry, span_name))
        return decorate

    def monitor_llm_call(self, model: str, operation: str = "chat", provider: str = "custom") -> Callable[[F], F]:
        """Measure a function that calls an LLM. Nothing is injected into its arguments.

        A generator's items count as content chunks (TTFT, rate, gaps); a returned value's
        ``usage`` (OpenAI shape or a dict) gives the token counts."""
        def decorate(fn: F) -> F:
            if not self.is_enabled:
                return fn
            stream = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
            return _wrap(fn, lambda telemetry: _LLMScope(telemetry, operation, model, provider, stream))
        return decorate

    def trace_llm_request(self, operation: str, model: str, provider: str = "custom",
                          **attributes: Any) -> _LLMRequest:
        """Context manager (``with`` or ``async with``) around a hand-written LLM call.

        Yields a handle: ``record_token()``, ``record_first_token()``, ``record_usage()``."""
        return _LLMRequest(operation, model, provider, attributes)

    def add_span_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        """Add an event to the current span (no-op when monitoring is off)."""
        if bootstrap.current_telemetry() is not None:
            from opentelemetry import trace

            _safely(trace.get_current_span().add_event, name, attributes or {})

    def set_span_attributes(self, **attributes: Any) -> None:
        """Set attributes on the current span (no-op when monitoring is off)."""
        if bootstrap.current_telemetry() is not None:
            from opentelemetry import trace

            _safely(trace.get_current_span().set_attributes, attributes)

    def setup_fastapi_app(self, app: Any) -> None:
        """Serve ``/metrics`` on the app's own port and trace its requests with server spans.

        Works before the pipeline exists too (a pre-fork server's master imports the app; each
        worker builds its pipeline after fork): the route reads the registry per request."""
        if not self.is_enabled:
            return
        _telemetry()
        _safely(_add_metrics_route, app)
        _safely(_instrument_app, app)


def _add_metrics_route(app: Any) -> None:
    from starlette.requests import Request
    from starlette.responses import Response

    from .metrics import exposition

    if any(getattr(route, "path", None) == "/metrics" for route in app.router.routes):
        return

    def metrics_endpoint(request: Request) -> Response:
        payload, content_type = exposition(request.headers.get("accept"))
        return Response(payload, media_type=content_type)

    # (Starlette's route: the endpoint gets the request itself, whose Accept header chooses the format)
    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)


def _instrument_app(app: Any) -> None:
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:
        return
    from .bootstrap import INSTRUMENTOR_OPTIONS

    if not getattr(app, "_is_instrumented_by_opentelemetry", False):
        FastAPIInstrumentor.instrument_app(app, **INSTRUMENTOR_OPTIONS["fastapi"])


monitoring_manager = MonitoringManager()


def get_monitoring_manager() -> MonitoringManager:
    """The process-wide ``MonitoringManager``."""
    return monitoring_manager

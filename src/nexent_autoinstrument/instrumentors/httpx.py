"""httpx and httpx2 (the same API; openai 3.x sends through httpx2), patched at ``Client.send``
and ``AsyncClient.send``.

Every request gets a CLIENT span with the HTTP semantic conventions, W3C trace context in its
headers and an ``http.client.request.duration`` record. The span ends when the body has been
read or the response closed, not when the headers arrive: the response's byte stream is
wrapped, so the agent sees exactly the bytes the user pulls, when the user pulls them.

Under an openai call (``lifecycle.current_llm_call``) each attempt is a child of the openai span,
and the response headers worth having go on that span; the call is measured there, once. A
request to an OpenAI-compatible path sent with httpx directly is measured here, as an LLM
call, by the same engine and the same chunk readers, fed from the body as the user reads it.

When the official opentelemetry-instrumentation-httpx is active it owns the HTTP spans and the
propagation; this layer then only measures raw LLM calls.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
import weakref
from collections.abc import Collection
from contextlib import nullcontext
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import wrapt
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import bootstrap, lifecycle
from .. import conventions as names
from ..adapters.openai import RESPONSE_END_EVENTS as _STREAM_END_EVENTS
from ..adapters.openai import endpoint_for, read_response
from ..adapters.sse import SSEDecoder, decode_json
from ..guard import report_internal_error
from ..lifecycle import Call, server_attributes

#: Response header -> attribute of the openai span, and how to read its value.
RESPONSE_HEADERS: tuple[tuple[str, str, type], ...] = (
    ("x-request-id", "openai.request.id", str),
    ("openai-processing-ms", "openai.processing_ms", float),
    ("x-ratelimit-remaining-requests", "openai.ratelimit.remaining_requests", int),
    ("x-ratelimit-remaining-tokens", "openai.ratelimit.remaining_tokens", int),
    ("x-ratelimit-reset-requests", "openai.ratelimit.reset_requests", str),
    ("x-ratelimit-reset-tokens", "openai.ratelimit.reset_tokens", str),
)
_SECRET_PARAMETER = re.compile(r"key|token|secret|passw|signature|^sig$|auth|credential|session", re.IGNORECASE)
_MAX_JSON_BODY = 4 * 2**20
_clock = time.perf_counter


def redact_url(url: str) -> str:
    """``url.full`` without credentials or secret-looking query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED:REDACTED@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{key}=REDACTED" if sep and _SECRET_PARAMETER.search(key) else f"{key}{sep}{value}"
        for key, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _request_body(request: Any) -> dict[str, Any]:
    try:
        content = request.content
    except Exception:  # a streamed request body that was not read: nothing to learn from it
        return {}
    if not content or len(content) > _MAX_JSON_BODY:
        return {}
    try:
        body = decode_json(content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


#: The official instrumentation's class for each library (opentelemetry-instrumentation-httpx).
OFFICIAL_INSTRUMENTORS = {"httpx": "HTTPXClientInstrumentor", "httpx2": "HTTPX2ClientInstrumentor"}


def _official_httpx_active(client: Any, library: str) -> bool:
    """Whether opentelemetry-instrumentation-httpx traces this client (globally or per client)."""
    if getattr(client, "_is_instrumented_by_opentelemetry", False):
        return True
    module = sys.modules.get("opentelemetry.instrumentation.httpx")
    instrumentor = getattr(module, OFFICIAL_INSTRUMENTORS[library], None)
    instance = instrumentor.__dict__.get("_instance") if isinstance(instrumentor, type) else None
    return bool(instance is not None and instance.is_instrumented_by_opentelemetry)


class Exchange:
    """One HTTP request and its response body, from ``send`` to close.

    ``call``: the LLM call this request serves, if any: the SDK's (the SDK layer measures it
    and ends it), or a raw call started here (``owns_call``: this layer measures and ends it).
    An SDK call whose body the caller reads through the raw accessors instead of the SDK's
    parsed stream is measured here from the bytes too, until the SDK's items are claimed."""

    def __init__(self, telemetry: Any, request: Any, library: str, own_span: bool, call: Call | None,
                 owns_call: bool, body_streamed: bool) -> None:
        self.telemetry = telemetry
        self.call = call
        self.tracker = call.tracker if call is not None else None
        self.owns_call = owns_call
        self.body_streamed = body_streamed
        self.measures_body = False  # decided when the headers are in
        self.started_ns = time.time_ns()
        self.started = _clock()
        self.ended = False
        self.body_complete = False
        self.done = False
        self.status: int | None = None
        self.response: Any = None  # a weak reference: the call must not keep the response alive
        self.sse: SSEDecoder | None = None
        self.json_body: bytearray | None = None
        url = request.url
        self.attributes: dict[str, Any] = {"http.request.method": request.method, **server_attributes(url)}
        self.span = None
        lifecycle.ensure_reaper()
        if own_span:
            parent = trace.set_span_in_context(self.tracker.span) if self.tracker is not None else None
            self.span = telemetry.tracer.start_span(
                request.method, context=parent, kind=SpanKind.CLIENT, start_time=self.started_ns,
                attributes={**self.attributes, "url.full": redact_url(str(url)), "http.client.library": library})
            propagate.inject(request.headers, context=trace.set_span_in_context(self.span))
        if call is not None:
            call.exchange = self

    def sending(self) -> Any:
        """While a raw LLM call is sent, it is current (other instrumentations' HTTP spans nest
        under it) and a failure ends it; an SDK call is the SDK layer's to handle."""
        return lifecycle.sending(self.call) if self.owns_call and self.call is not None else nullcontext()

    def responded(self, response: Any) -> None:
        """Headers are in: status, the SDK call's headers, and whether to read the body."""
        status = response.status_code
        self.status = status
        self.response = weakref.ref(response)
        self.attributes["http.response.status_code"] = status
        if status >= 400:
            self.attributes["error.type"] = str(status)
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status)
        tracker = self.tracker
        if tracker is None:
            return
        headers = response.headers
        if self.owns_call:
            if status >= 400:
                tracker.fail(str(status))
        else:
            found = {}
            for header, attribute, kind in RESPONSE_HEADERS:
                value = headers.get(header)
                if value is not None:
                    with contextlib.suppress(ValueError):
                        found[attribute] = kind(value)
            tracker.annotate(found)
            if status >= 400 or not self.body_streamed:
                return  # the SDK raises, or reads and parses the whole body itself
        if headers.get("content-encoding", "identity") not in ("identity", ""):
            return  # compressed body: timing and status only
        self.measures_body = True
        if "text/event-stream" in headers.get("content-type", ""):
            self.sse = SSEDecoder()
        else:
            self.json_body = bytearray()

    def on_bytes(self, chunk: bytes) -> None:
        """Raw body bytes, just read by the caller (per network read, only when measuring the body)."""
        tracker = self.tracker
        if tracker is None or tracker.items_claimed:
            return  # the SDK's parsed items are measured instead
        if self.sse is not None:
            read_item = self.call.endpoint.read_item if self.call is not None else None
            for data in self.sse.feed(chunk):
                if data == b"[DONE]":  # the end marker, not a chunk (the SDK never yields it either)
                    self.done = True
                    continue
                tracker.chunk()
                try:
                    event = decode_json(data)
                except ValueError:
                    continue
                if read_item is not None:
                    read_item(tracker, event)
                if getattr(event, "type", None) in _STREAM_END_EVENTS:
                    self.done = True
        elif self.json_body is not None:
            if len(self.json_body) + len(chunk) <= _MAX_JSON_BODY:
                self.json_body += chunk
            else:
                self.json_body = None

    def on_complete(self) -> None:
        """The whole body has been read."""
        self.body_complete = True
        if self.json_body and self.tracker is not None and not self.tracker.items_claimed:
            with contextlib.suppress(ValueError):
                read_response(self.tracker, decode_json(bytes(self.json_body)))

    def on_error(self, exc: BaseException) -> None:
        """Sending, or reading the body, failed (connection refused or dropped, timeout, cancellation).
        Not after the body was complete: that is a clean-up the SDK swallows, not the request's."""
        if self.body_complete:
            return
        if self.span is not None and names.outcome_of(exc) == names.ERROR:
            self.span.record_exception(exc)
            self.attributes["error.type"] = type(exc).__name__
        if self.measures_body and self.tracker is not None and not self.tracker.items_claimed:
            lifecycle.end(self.tracker, exc)  # the caller reads the bytes: it sees this very error

    def end(self, outcome: str | None = None, at: float | None = None) -> None:
        """The response was closed, or dropped ``at`` some earlier time: end the span, record the
        duration, and end an LLM call measured from the bytes, once."""
        if self.ended:
            return
        self.ended = True
        tracker = self.tracker
        if tracker is not None and self.measures_body:
            if tracker.items_claimed:
                # The SDK's stream ends the call (the SDK closes the response at its end, also
                # when its iterator is finalized by the garbage collector); if it never does,
                # as when a stream helper closes the response, the reaper does.
                lifecycle.suspend(tracker, outcome or names.CLOSED_EARLY, at, by_caller=outcome is not None)
            else:
                complete = self.body_complete or self.done
                lifecycle.end(tracker, outcome=outcome or (names.COMPLETED if complete else names.CLOSED_EARLY),
                              at=at)
        if self.span is not None:
            duration = (_clock() if at is None else at) - self.started
            if "error.type" in self.attributes:
                self.span.set_attribute("error.type", self.attributes["error.type"])
                self.span.set_status(Status(StatusCode.ERROR, self.attributes["error.type"]))
            self.span.end(end_time=None if at is None else self.started_ns + int(duration * 1e9))
            if self.telemetry.http_metrics is not None:
                self.telemetry.http_metrics.record(duration, self.attributes)

    def failed(self, exc: BaseException) -> None:
        """``send`` itself raised: no response at all."""
        self.on_error(exc)
        self.end()


def _guard(action: Any, *args: Any) -> None:
    try:
        action(*args)
    except Exception as exc:
        report_internal_error(f"httpx.{getattr(action, '__name__', 'exchange')}", exc)


class _ObservedBody:
    """What the sync and async byte-stream wrappers share: the exchange, ``elapsed``, abandonment."""

    def __init__(self, inner: Any, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    @property
    def elapsed(self) -> Any:
        return getattr(self._inner, "elapsed", None)  # httpx2 reads the response's elapsed time here

    def __del__(self) -> None:
        exchange = getattr(self, "_exchange", None)
        if exchange is not None and not exchange.ended:
            lifecycle.defer(exchange.end, names.ABANDONED)


_STREAM_CLASSES: dict[str, tuple[type, type]] = {}


def _stream_classes(module: Any) -> tuple[type, type]:
    """Byte-stream wrappers that subclass this library's own stream types (httpx checks them)."""
    classes = _STREAM_CLASSES.get(module.__name__)
    if classes is not None:
        return classes

    class ObservedStream(_ObservedBody, module.SyncByteStream):
        def __iter__(self) -> Any:
            exchange = self._exchange
            try:
                if not exchange.measures_body:
                    yield from self._inner  # nothing to read per chunk: let C delegate
                else:
                    on_bytes = exchange.on_bytes
                    for chunk in self._inner:
                        try:
                            on_bytes(chunk)
                        except Exception as exc:
                            report_internal_error("httpx.on_bytes", exc)
                        yield chunk
            except GeneratorExit:
                raise  # the reader stopped early; close() follows
            except BaseException as exc:
                _guard(exchange.on_error, exc)
                raise
            _guard(exchange.on_complete)

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                _guard(self._exchange.end)

    class ObservedAsyncStream(_ObservedBody, module.AsyncByteStream):
        async def __aiter__(self) -> Any:
            exchange = self._exchange
            measures_body, on_bytes = exchange.measures_body, exchange.on_bytes
            try:
                async for chunk in self._inner:  # (async generators have no ``yield from``)
                    if measures_body:
                        try:
                            on_bytes(chunk)
                        except Exception as exc:
                            report_internal_error("httpx.on_bytes", exc)
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as exc:
                _guard(exchange.on_error, exc)
                raise
            _guard(exchange.on_complete)

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                _guard(self._exchange.end)

    _STREAM_CLASSES[module.__name__] = (ObservedStream, ObservedAsyncStream)
    return _STREAM_CLASSES[module.__name__]


class _State:
    telemetry: Any = None
    active: dict[str, bool] = {}


def _begin(library: str, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exchange | None:
    if not _State.active.get(library):
        return None
    telemetry = _State.telemetry or bootstrap.current_telemetry()
    if telemetry is None:
        return None
    request = args[0] if args else kwargs["request"]
    call = lifecycle.current_llm_call.get()
    owns_call = False
    if call is None:
        endpoint = endpoint_for(request.method, request.url.path)
        if endpoint is not None:
            call = lifecycle.start_http_call(telemetry, endpoint, _request_body(request), request.url)
            owns_call = True
    own_span = not _official_httpx_active(client, library)
    if not own_span and call is None:
        return None
    if call is not None and not owns_call:
        call.attempts += 1
        if call.attempts > 1:
            call.tracker.annotate({"llm.request.retries": call.attempts - 1})
    return Exchange(telemetry, request, library, own_span, call, owns_call, bool(kwargs.get("stream", False)))


def _guarded_begin(library: str, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exchange | None:
    try:
        return _begin(library, client, args, kwargs)
    except Exception as exc:
        report_internal_error("httpx.begin", exc)
        return None


def _observe(module: Any, response: Any, exchange: Exchange, is_async: bool) -> None:
    try:
        exchange.responded(response)
        sync_class, async_class = _stream_classes(module)
        response.stream = (async_class if is_async else sync_class)(response.stream, exchange)
    except Exception as exc:
        report_internal_error("httpx.observe", exc)


def observe_body(telemetry: Any, call: Call, response: Any, is_async: bool) -> None:
    """Watch the unread body of an SDK call's response (for its raw accessors and its close), when
    this layer did not already: the httpx layer is disabled for that library, or not patched."""
    if isinstance(response.stream, _ObservedBody) or response.is_stream_consumed:
        return
    module = sys.modules.get(type(response).__module__.partition(".")[0])
    if module is None:
        return
    exchange = Exchange(telemetry, response.request, module.__name__, False, call, False, True)
    _observe(module, response, exchange, is_async)


def _make_send(module_name: str) -> tuple[Any, Any]:
    def send(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        exchange = _guarded_begin(module_name, client, args, kwargs)
        if exchange is None:
            return wrapped(*args, **kwargs)
        read_body = not kwargs.get("stream", False)
        with exchange.sending():
            try:
                response = wrapped(*args, **{**kwargs, "stream": True})
            except BaseException as exc:
                _guard(exchange.failed, exc)
                raise
        _observe(sys.modules[module_name], response, exchange, False)
        if read_body:  # what send(stream=False) does, now that the body is observed
            try:
                response.read()
            except BaseException:
                response.close()
                raise
        return response

    async def async_send(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        exchange = _guarded_begin(module_name, client, args, kwargs)
        if exchange is None:
            return await wrapped(*args, **kwargs)
        read_body = not kwargs.get("stream", False)
        with exchange.sending():
            try:
                response = await wrapped(*args, **{**kwargs, "stream": True})
            except BaseException as exc:
                _guard(exchange.failed, exc)
                raise
        _observe(sys.modules[module_name], response, exchange, True)
        if read_body:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    return send, async_send


def _patch(module: Any) -> None:
    name = module.__name__
    if not _State.active.get(name):
        return
    try:
        send, async_send = _make_send(name)
        for owner, wrapper in (("Client", send), ("AsyncClient", async_send)):
            if not isinstance(getattr(module, owner).__dict__.get("send"), wrapt.FunctionWrapper):
                wrapt.wrap_function_wrapper(module, f"{owner}.send", wrapper)
    except Exception as exc:
        report_internal_error("httpx.patch", exc)


class _HTTPXFamilyInstrumentor(BaseInstrumentor):
    """HTTP spans, propagation and raw LLM call measurement. ``instrument(telemetry=...)`` is for tests.

    One concrete class per library: BaseInstrumentor keeps one instance per class, looked up
    through the class hierarchy, so the two must be siblings, not parent and child."""

    library = ""
    supported: tuple[str, ...] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        return self.supported

    def _instrument(self, **kwargs: Any) -> None:
        _State.active[self.library] = True
        if kwargs.get("telemetry") is not None:
            _State.telemetry = kwargs["telemetry"]
        wrapt.register_post_import_hook(_patch, self.library)

    def _uninstrument(self, **kwargs: Any) -> None:
        _State.active[self.library] = False
        if not any(_State.active.values()):
            _State.telemetry = None
        module = sys.modules.get(self.library)
        if module is None:
            return
        for owner_name in ("Client", "AsyncClient"):
            owner = getattr(module, owner_name)
            current = owner.__dict__.get("send")
            if isinstance(current, wrapt.FunctionWrapper):
                owner.send = current.__wrapped__


class HTTPXInstrumentor(_HTTPXFamilyInstrumentor):
    """httpx, which openai 1.x and 2.x and most other code use."""

    library = "httpx"
    supported = ("httpx >= 0.23",)


class HTTPX2Instrumentor(_HTTPXFamilyInstrumentor):
    """httpx2, which openai 3.x uses."""

    library = "httpx2"
    supported = ("httpx2 >= 2.0",)

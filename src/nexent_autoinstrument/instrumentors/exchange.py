"""One HTTP request of an HTTP layer (httpx, aiohttp), from send to close: its span, propagation
and metrics.

The exchange owns the request's CLIENT span and, for an LLM call, the HTTP facts about it: when
the request was on the wire, when the response headers came and whether the connection was
reused (in its ``ReadTiming``, which the call's tracker reads), and which reader its response
body gets. The body itself is the byte path's (``body``). The exchange knows no library: each
layer hands it plain values (method, URL, status, raw headers, the connection).
"""

from __future__ import annotations

import contextlib
import sys
import time
import weakref
from collections.abc import Iterable, MutableMapping
from contextlib import nullcontext
from typing import Any, NamedTuple

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import conventions as names
from .. import guest, lifecycle
from ..adapters.endpoints import ENDPOINTS
from ..guard import report_internal_error
from ..lifecycle import Call, server_attributes
from ..redaction import redact_url
from ..timing import ReadTiming
from .body import (
    BodyReader,
    CallerFilter,
    ObservedBody,
    bytes_reader,
    guarded,
    reader_for,
    response_classes,
)

_clock = time.perf_counter

#: Every response header the agent reads (lower case): the body's type and encoding, and the
#: attributes of every endpoint's table.
_READ_HEADERS = frozenset([b"content-type", b"content-encoding",
                           *(name.encode() for _, endpoint in ENDPOINTS for name, _, _ in endpoint.response_headers)])


def header_values(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The response headers the agent reads, by lower-case name, found in one pass over the raw
    (name, value) pairs: each ``Headers.get`` scans every header (a dozen cost more than a chunk)."""
    found: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name = raw_name.lower()
        if name in _READ_HEADERS:
            key, value = name.decode(), raw_value.decode("latin-1")
            found[key] = f"{found[key]}, {value}" if key in found else value  # (as ``get`` joins repeats)
    return found


#: Connections (the transport's network streams) that have carried a request already.
_connections_seen: weakref.WeakSet[Any] = weakref.WeakSet()


class Exchange:
    """One HTTP request and its response body, from ``send`` to close.

    ``call``: the LLM call this request serves, if any: the SDK's (the SDK layer measures it
    and ends it), or a raw call started here (``owns_call``: this layer measures and ends it).
    An SDK call whose body the caller reads through the raw accessors instead of the SDK's
    parsed stream is measured here from the bytes too, until the SDK's items are claimed."""

    def __init__(self, telemetry: Any, method: str, url: Any, library: str, own_span: bool, call: Call | None,
                 owns_call: bool, body_streamed: bool) -> None:
        self.telemetry = telemetry
        self.call = call
        self.tracker = call.tracker if call is not None else None
        self.owns_call = owns_call
        self.body_streamed = body_streamed
        self.started_ns = time.time_ns()
        self.started = _clock()
        self.ended = False
        self.body_complete = False
        self.status: int | None = None
        self.response: Any = None  # a weak reference: the call must not keep the response alive
        #: The reader of an LLM body this layer measures (``body.reader_for``, when the headers are
        #: in), else None.
        self.body: BodyReader | None = None
        #: Takes the usage-only event that the agent asked for out of bytes the caller reads raw.
        self.strip: CallerFilter | None = None
        self.method, self.url, self.library = method, url, library
        # (The conventions' known methods, else _OTHER with the original beside it: a caller's
        # custom methods are no attribute values of their own, nor span names.)
        self.attributes: dict[str, Any] = {"http.request.method": method if method in names.HTTP_METHODS else "_OTHER",
                                           **server_attributes(url)}
        self.span = None
        self.error: BaseException | None = None
        self.generation = guest.generation  # (a fork child ends none of its parent's exchanges)
        telemetry.prepare()
        guest.start()
        #: This layer owns the HTTP telemetry of this request (spans, propagation, the duration).
        self.owns_http = own_span
        #: An LLM call's attempt gets a span of its own only if it fails or the call is retried
        #: (the call's span has the rest), unless LLM_HTTP_ATTEMPT_SPANS=all: it is made at the end.
        self.deferred = own_span and call is not None and telemetry.settings.http_attempt_spans != "all"
        if own_span and not (self.deferred and self.tracker is not None):
            self.span = self._start_span()
        #: How this attempt's body is read (the HTTP layer's own record; the call's tracker reads it).
        self.timing = ReadTiming()
        if call is not None:
            call.exchange = self
            call.tracker.timed_by(self.timing)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Write the trace context into the request's ``headers``, when this layer owns the HTTP
        telemetry: the attempt's span, or the call's when the attempt's span is deferred (the
        server's spans then join the call's)."""
        if self.owns_http:
            span = self.span if self.span is not None else self.tracker.span if self.tracker is not None else None
            if span is not None:
                propagate.inject(headers, context=trace.set_span_in_context(span))

    def _start_span(self) -> Any:
        parent = trace.set_span_in_context(self.tracker.span) if self.tracker is not None else None
        method = self.attributes["http.request.method"]
        attributes = {**self.attributes, "url.full": redact_url(str(self.url)), "http.client.library": self.library}
        if method == "_OTHER":
            attributes["http.request.method_original"] = names.bounded_text(self.method)
        return self.telemetry.tracer.start_span("HTTP" if method == "_OTHER" else method, context=parent,
                                                kind=SpanKind.CLIENT, start_time=self.started_ns, attributes=attributes)

    def sending(self) -> Any:
        """While a raw LLM call is sent, it is current (other instrumentations' HTTP spans nest
        under it) and a failure ends it; an SDK call is the SDK layer's to handle."""
        return lifecycle.Sending(self.call) if self.owns_call and self.call is not None else nullcontext()

    def sent(self) -> None:
        """The request body has been handed to the connection: the request is on the wire."""
        if self.tracker is not None:
            self.timing.request_sent = _clock()

    def responded(self, status: int, raw_headers: Iterable[tuple[bytes, bytes]], connection: Any, *,
                  at: float | None = None, decoded: bool = False) -> None:
        """Headers are in (``at``, or now): status, the SDK call's headers, and whether to read
        the body. ``connection``: the transport's object for the connection, if it has one;
        ``decoded``: the library decodes the body's content encoding before the reader sees it."""
        tracker = self.tracker
        if tracker is not None:
            timing = self.timing
            timing.headers_at = _clock() if at is None else at
            if connection is not None:
                with contextlib.suppress(TypeError):  # (a transport's own object that takes no weak reference)
                    timing.connection_reused = connection in _connections_seen
                    _connections_seen.add(connection)
        self.status = status
        self.attributes["http.response.status_code"] = status
        if status >= 400:
            self.attributes["error.type"] = str(status)
        if tracker is None or self.call is None:
            return
        tracker.annotate({"http.response.status_code": status})
        headers = header_values(raw_headers)
        if decoded:
            headers.pop("content-encoding", None)
        if self.owns_call:
            if status >= 400:
                tracker.fail(str(status))
        else:
            found = {}
            for header, attribute, kind in self.call.endpoint.response_headers:
                value = headers.get(header)
                if value is not None:
                    with contextlib.suppress(ValueError):
                        found[attribute] = kind(value)
            tracker.annotate(found)
            if status >= 400 or not self.body_streamed:
                return  # the SDK raises, or reads and parses the whole body itself
        self.body, self.strip = reader_for(self.call, headers)

    def came_whole(self, content: bytes) -> None:
        """The body came already read, with the headers (an in-memory transport, a test's mock):
        nothing will read it through the agent. It is one read, complete now, and the exchange
        ends. An SDK's streamed call is left to the SDK's parsed items, as the SDK reads them."""
        if not self.owns_call:
            self.body = self.strip = None
        on_bytes = bytes_reader(self)
        if on_bytes is not None:
            timing = self.timing
            timing.timed = True
            timing.read_time = timing.asked = timing.previous_read_time = _clock()  # (it did not wait)
            guarded(on_bytes, content)
        guarded(self.on_complete)
        self.end()

    def stop_filtering(self) -> bytes:
        """The caller's bytes pass unchanged from now on; what the filter held back, to go first."""
        strip, self.strip = self.strip, None
        return strip.flush() if strip is not None else b""

    def on_complete(self) -> None:
        """The whole body has been read."""
        self.body_complete = True
        if self.body is not None and bytes_reader(self) is not None:
            self.body.complete()

    def on_error(self, exc: BaseException) -> None:
        """Sending, or reading the body, failed (connection refused or dropped, timeout, cancellation).
        Not after the body was complete: that is a clean-up the SDK swallows, not the request's."""
        if self.body_complete or self.ended:
            return  # (after the caller closed the response, its reads fail: that is no failure)
        if type(exc).__name__ == "StreamConsumed":
            return  # a second read of a body that cannot be replayed (the SDK's drain after [DONE]): no I/O failed
        if self.owns_http and names.outcome_of(exc) == names.ERROR:
            self.error = exc
            self.attributes["error.type"] = type(exc).__name__
        if self.body is not None and self.tracker is not None and not self.tracker.progress.items_claimed:
            lifecycle.end(self.tracker, exc)  # the caller reads the bytes: it sees this very error

    def end(self, outcome: str | None = None, at: float | None = None) -> None:
        """The response was closed, or dropped ``at`` some earlier time: end the span, record the
        duration, and end an LLM call measured from the bytes, once. Inside the garbage collector
        (a generator that read the body, collected) this only posts the end to the agent's thread."""
        if self.ended:
            return
        if guest.in_collector():
            guest.post(self.end, outcome, _clock() if at is None else at)
            return
        self.ended = True
        try:
            self._end(outcome, at)
        finally:
            # What measured the call is let go of: the call points back at its latest exchange, and
            # the transport's own reference cycles (httpx's response and its stream) may hold this
            # exchange until the garbage collector runs. The caller's dropping them frees the rest.
            self.call = self.tracker = self.body = None

    def _end(self, outcome: str | None, at: float | None) -> None:
        if self.generation != guest.generation:
            return  # the parent's, in a fork child
        tracker = self.tracker
        if tracker is not None and (self.body is not None or self.owns_call):
            if tracker.progress.items_claimed:
                # Closed while the SDK reads its next item: the SDK's own close at the end of the
                # stream, which its stream then ends; closed between two items (a stream helper's
                # close(), a dropped response): the caller stopped. Either way it is only noted
                # here, since this may run inside the garbage collector; the reaper ends it.
                lifecycle.suspend(tracker, outcome or names.CLOSED_EARLY, at,
                                  by_caller=outcome is not None or not tracker.progress.pulling)
            else:
                complete = self.body_complete or (self.body is not None and self.body.done)
                lifecycle.end(tracker, outcome=outcome or (names.COMPLETED if complete else names.CLOSED_EARLY),
                              at=at)
        if not self.owns_http:
            return
        duration = (_clock() if at is None else at) - self.started
        failed = "error.type" in self.attributes
        if self.deferred and (failed or (self.call is not None and self.call.attempts > 1)):
            self.span = self._start_span()
        if self.span is not None:
            if self.error is not None:
                names.record_error(self.span, self.error)
            if failed:
                self.span.set_attribute("error.type", self.attributes["error.type"])
                self.span.set_status(Status(StatusCode.ERROR, self.attributes["error.type"]))
            if "http.response.status_code" in self.attributes:
                self.span.set_attribute("http.response.status_code", self.attributes["http.response.status_code"])
            self.span.end(end_time=self.started_ns + int(duration * 1e9))
        if self.telemetry.http_metrics is not None:
            self.telemetry.http_metrics.record(duration, self.attributes)

    def failed(self, exc: BaseException) -> None:
        """``send`` itself raised: no response at all (or none the caller gets). A raw call ends
        with that error, not as a caller that stopped reading."""
        self.on_error(exc)
        if self.owns_call and self.tracker is not None:
            lifecycle.end(self.tracker, exc)
        self.end()


class BodyClasses(NamedTuple):
    """Byte-stream wrappers that subclass one library's own stream types (httpx checks them): the
    response's (``body.response_classes``) and the request's, whose end is when it was sent."""

    response: type
    async_response: type
    request: type
    async_request: type
    request_bytes: type


_BODY_CLASSES: dict[str, BodyClasses] = {}


def body_classes(module: Any) -> BodyClasses:
    """The wrappers for ``module`` (httpx or httpx2), made once."""
    classes = _BODY_CLASSES.get(module.__name__)
    if classes is not None:
        return classes
    ObservedStream, ObservedAsyncStream = response_classes(module)

    class SentBody(ObservedBody, module.SyncByteStream):
        """The request body while it is written: its end is when the request is on the wire."""

        def __iter__(self) -> Any:
            yield from self._inner
            guarded(self._exchange.sent)

        def __del__(self) -> None:
            pass

    class AsyncSentBody(ObservedBody, module.AsyncByteStream):
        async def __aiter__(self) -> Any:
            async for chunk in self._inner:
                yield chunk
            guarded(self._exchange.sent)

        def __del__(self) -> None:
            pass

    class SentBytes(SentBody, AsyncSentBody, module.ByteStream):
        """A body given as bytes (as the SDKs' JSON is): still a ``ByteStream`` to the client's
        event hooks, which see it while it is watched."""

        def __init__(self, inner: Any, exchange: Exchange) -> None:
            super().__init__(inner, exchange)
            self._stream = getattr(inner, "_stream", b"")  # (ByteStream's own field: its bytes)

    _BODY_CLASSES[module.__name__] = BodyClasses(ObservedStream, ObservedAsyncStream, SentBody, AsyncSentBody,
                                                 SentBytes)
    return _BODY_CLASSES[module.__name__]


def watch_request(module: Any, request: Any, exchange: Exchange, is_async: bool) -> Any:
    """Watch the body of an LLM request while it is written; returns what ``unwatch_request`` needs."""
    if exchange.tracker is None:
        return None
    original = request.stream
    classes = body_classes(module)
    if isinstance(original, module.ByteStream):
        request.stream = classes.request_bytes(original, exchange)
    else:
        request.stream = (classes.async_request if is_async else classes.request)(original, exchange)
    return original


def unwatch_request(request: Any, original: Any) -> None:
    """Give the request its own body stream back (the caller may look at ``response.request``)."""
    if original is not None:
        request.stream = original


def observe_response(module: Any, response: Any, exchange: Exchange, is_async: bool) -> None:
    """The headers are in: watch the body as the caller reads it."""
    try:
        exchange.response = weakref.ref(response)
        exchange.responded(response.status_code, response.headers.raw, response.extensions.get("network_stream"))
        if response.is_closed:  # read by the transport already (or closed unread: no content)
            try:
                content = response.content
            except Exception:
                content = b""
            exchange.came_whole(content)
            return
        classes = body_classes(module)
        response.stream = (classes.async_response if is_async else classes.response)(response.stream, exchange)
    except Exception as exc:
        report_internal_error("httpx.observe", exc)


def observe_body(telemetry: Any, call: Call, response: Any, is_async: bool) -> None:
    """Watch the unread body of an SDK call's response (for its raw accessors and its close), when
    the httpx layer did not already: it is disabled for that library, or not patched."""
    if isinstance(response.stream, ObservedBody) or response.is_stream_consumed:
        return
    module = sys.modules.get(type(response).__module__.partition(".")[0])
    if module is None:
        return
    request = response.request
    exchange = Exchange(telemetry, request.method, request.url, module.__name__, False, call, False, True)
    observe_response(module, response, exchange, is_async)

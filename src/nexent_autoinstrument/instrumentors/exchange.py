"""One HTTP request of the httpx layer and its response body, from ``send`` to close.

The exchange owns the request's CLIENT span and, for an LLM call, the HTTP facts about it: when
the request was on the wire (the request body is watched while it is written), when the
response headers came, whether the connection was reused, and, per network read of the body,
whether the read waited for the data or found it there already (the caller read late, or
several events came at once). A body read through the raw accessors is decoded here (SSE,
NDJSON or JSON) into the same facts the SDK's parsed items give. Per network read of an LLM body this
costs two clock reads; other bodies pass through untouched (``yield from``).
"""

from __future__ import annotations

import contextlib
import sys
import time
import weakref
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import nullcontext
from typing import Any, NamedTuple

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import conventions as names
from .. import guest, lifecycle
from ..adapters.endpoints import ENDPOINTS
from ..adapters.sse import EventFilter, NDJSONDecoder, PlainReads, SSEDecoder, decode_json
from ..guard import report_internal_error
from ..lifecycle import Call, server_attributes
from ..redaction import redact_url
from ..timing import ReadTiming

MAX_JSON_BODY = 4 * 2**20
_clock = time.perf_counter
#: zlib's window bits for the content encodings whose bodies the agent decodes (deflate: the zlib
#: format, as httpx and servers use it; 32 + 15 also takes a gzip header).
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 47}


class Recompressed:
    """An ``EventFilter`` for a compressed body: decodes what is read, filters it, and encodes it
    again the same way, flushed per read. The caller's library decodes it as it would decode the
    server's, to the same content as the server's without the dropped events (its raw bytes are
    not the server's: the agent compressed them)."""

    __slots__ = ("_compress", "_decompress", "_fed", "_filter")

    def __init__(self, drop: EventFilter, encoding: str) -> None:
        self._filter = drop
        self._decompress = zlib.decompressobj(_WBITS[encoding]).decompress
        self._compress = zlib.compressobj(wbits=31 if _WBITS[encoding] == 31 else 15)
        self._fed = False

    def feed(self, chunk: bytes) -> bytes:
        """The filtered bytes of ``chunk``, compressed and flushed."""
        self._fed = True
        kept = self._filter.feed(self._decompress(chunk))
        return self._compress.compress(kept) + self._compress.flush(zlib.Z_SYNC_FLUSH)

    def flush(self) -> bytes:
        """What was held, and the end of the compressed stream (nothing, if nothing was fed: the
        server's own bytes then go on unchanged)."""
        if not self._fed:
            return b""
        return self._compress.compress(self._filter.flush()) + self._compress.flush()

#: Every response header the agent reads (lower case): the body's type and encoding, and the
#: attributes of every endpoint's table.
_READ_HEADERS = frozenset([b"content-type", b"content-encoding",
                           *(name.encode() for _, endpoint in ENDPOINTS for name, _, _ in endpoint.response_headers)])


def header_values(headers: Any) -> dict[str, str]:
    """The response headers the agent reads, by lower-case name, found in one pass over the raw
    headers: each ``Headers.get`` scans every header (a dozen of them cost more than a chunk)."""
    found: dict[str, str] = {}
    for raw_name, raw_value in headers.raw:
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
        self.sse: SSEDecoder | NDJSONDecoder | None = None  # (the decoder of a streamed body)
        self.plain: PlainReads | None = None  # (reads recognised as plain deltas without decoding)
        self.json_body: bytearray | None = None
        #: Decompresses a gzip or deflate body, for measuring only.
        self.inflate: Callable[[bytes], bytes] | None = None
        #: Takes the usage-only event that the agent asked for out of bytes the caller reads raw.
        self.strip: EventFilter | Recompressed | None = None
        self.request, self.library = request, library
        method = request.method
        # (The conventions' known methods, else _OTHER with the original beside it: a caller's
        # custom methods are no attribute values of their own, nor span names.)
        self.attributes: dict[str, Any] = {"http.request.method": method if method in names.HTTP_METHODS else "_OTHER",
                                           **server_attributes(request.url)}
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
        if own_span:
            if self.deferred and self.tracker is not None:  # the server's spans join the call's
                propagate.inject(request.headers, context=trace.set_span_in_context(self.tracker.span))
            else:
                self.span = self._start_span()
                propagate.inject(request.headers, context=trace.set_span_in_context(self.span))
        #: How this attempt's body is read (the HTTP layer's own record; the call's tracker reads it).
        self.timing = ReadTiming()
        if call is not None:
            call.exchange = self
            call.tracker.timed_by(self.timing)

    def _start_span(self) -> Any:
        parent = trace.set_span_in_context(self.tracker.span) if self.tracker is not None else None
        method = self.attributes["http.request.method"]
        attributes = {**self.attributes, "url.full": redact_url(str(self.request.url)),
                      "http.client.library": self.library}
        if method == "_OTHER":
            attributes["http.request.method_original"] = names.bounded_text(self.request.method)
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

    def responded(self, response: Any) -> None:
        """Headers are in: status, the SDK call's headers, and whether to read the body."""
        tracker = self.tracker
        if tracker is not None:
            timing = self.timing
            timing.headers_at = _clock()
            connection = response.extensions.get("network_stream")
            if connection is not None:
                with contextlib.suppress(TypeError):  # (a transport's own object that takes no weak reference)
                    timing.connection_reused = connection in _connections_seen
                    _connections_seen.add(connection)
        status = response.status_code
        self.status = status
        self.response = weakref.ref(response)
        self.attributes["http.response.status_code"] = status
        if status >= 400:
            self.attributes["error.type"] = str(status)
        if tracker is None:
            return
        tracker.annotate({"http.response.status_code": status})
        headers = header_values(response.headers)
        if self.owns_call:
            if status >= 400:
                tracker.fail(str(status))
        else:
            found = {}
            for header, attribute, kind in self.call.endpoint.response_headers if self.call is not None else ():
                value = headers.get(header)
                if value is not None:
                    with contextlib.suppress(ValueError):
                        found[attribute] = kind(value)
            tracker.annotate(found)
            if status >= 400 or not self.body_streamed:
                return  # the SDK raises, or reads and parses the whole body itself
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            if encoding not in _WBITS:
                return  # (br, zstd, several encodings: timing and status only)
            self.inflate = zlib.decompressobj(_WBITS[encoding]).decompress  # (the caller's bytes stay as they are)
        self.measures_body = True
        content_type = headers.get("content-type", "")
        if "text/event-stream" in content_type:
            self.sse = SSEDecoder()
            key = self.call.endpoint.plain_key if self.call is not None else b""
            self.plain = PlainReads(key) if key else None
            usage_only = self.call.endpoint.usage_only_event if self.call is not None else None
            if usage_only is not None and self.call is not None and self.call.drop_usage_only:
                drop = EventFilter(usage_only)
                self.strip = drop if self.inflate is None else Recompressed(drop, encoding)
        elif "ndjson" in content_type:  # one JSON document per line (Ollama)
            self.sse = NDJSONDecoder()
        else:
            self.json_body = bytearray()

    def on_bytes(self, chunk: bytes) -> None:
        """Raw body bytes, just read by the caller (per network read, only when measuring the body
        and the SDK's parsed items are not: see ``bytes_reader``)."""
        tracker = self.tracker
        if tracker is None:
            return
        if self.inflate is not None:
            chunk = self.inflate(chunk)
        sse = self.sse
        if sse is not None:
            plain = self.plain if tracker.texts is None and sse.idle else None  # (None: decode this read)
            if plain is not None and plain.matches(chunk):
                tracker.content(None, 1, 1)  # one plain content delta, like the last: a chunk, nothing else to learn
                return
            endpoint = self.call.endpoint if self.call is not None else None
            read_event = endpoint.read_event if endpoint is not None else None
            skim = endpoint.skim if endpoint is not None else None
            end_key, end_values = (endpoint.end_key, endpoint.end_values) if endpoint is not None else ("", ())
            end_marker = endpoint.end_marker if endpoint is not None else None
            for data in sse.feed(chunk):
                if data == end_marker:  # ([DONE]: the end, not a chunk; the SDK never yields it either)
                    self.done = True
                    continue
                tracker.chunk()
                if skim is not None and tracker.response_id is not None and tracker.texts is None and skim(data):
                    if plain is not None:
                        plain.learn(chunk)
                    tracker.content()  # a plain content delta: nothing else to learn from it
                    continue
                try:
                    event = decode_json(data)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if read_event is not None:
                    read_event(tracker, event)
                if end_values and isinstance(marker := event.get(end_key), (str, bool)) and marker in end_values:
                    self.done = True
        elif self.json_body is not None:
            if len(self.json_body) + len(chunk) <= MAX_JSON_BODY:
                self.json_body += chunk
            else:
                self.json_body = None

    def strip_injected(self, chunk: bytes) -> bytes:
        """What of ``chunk`` the caller gets: all of it, but for the usage event the agent asked
        for when the caller reads the bytes itself (the SDK's stream drops that item instead)."""
        if self.strip is None:
            return chunk
        if self.tracker is not None and self.tracker.progress.items_claimed:
            held, self.strip = self.strip.flush(), None
            return held + chunk
        try:
            return self.strip.feed(chunk)
        except Exception as exc:
            report_internal_error("httpx.strip", exc)
            held, self.strip = self.strip.flush(), None
            return held + chunk

    def on_complete(self) -> None:
        """The whole body has been read."""
        self.body_complete = True
        if isinstance(self.sse, NDJSONDecoder) and self.sse.pending and bytes_reader(self) is not None:
            self.on_bytes(b"\n")  # the last line came without its line end
        if self.json_body and self.tracker is not None and not self.tracker.progress.items_claimed \
                and self.call is not None:
            with contextlib.suppress(ValueError):
                self.call.endpoint.read_response(self.tracker, decode_json(bytes(self.json_body)))

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
        if self.measures_body and self.tracker is not None and not self.tracker.progress.items_claimed:
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
        if self.generation != guest.generation:
            return  # the parent's, in a fork child
        tracker = self.tracker
        if tracker is not None and (self.measures_body or self.owns_call):
            if tracker.progress.items_claimed:
                # Closed while the SDK reads its next item: the SDK's own close at the end of the
                # stream, which its stream then ends; closed between two items (a stream helper's
                # close(), a dropped response): the caller stopped. Either way it is only noted
                # here, since this may run inside the garbage collector; the reaper ends it.
                lifecycle.suspend(tracker, outcome or names.CLOSED_EARLY, at,
                                  by_caller=outcome is not None or not tracker.progress.pulling)
            else:
                complete = self.body_complete or self.done
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


#: The transport's readers of the sync bodies being read, by id: kept reachable so that the
#: garbage collector never finalizes one itself. Closing a reader takes its connection pool's
#: lock (httpcore's is not reentrant), which the thread the collector interrupted may hold: a
#: body dropped unfinished and collected has its reader closed by the agent's thread instead.
_reading: dict[int, Any] = {}


def _close_reader(key: int) -> None:
    reads = _reading.pop(key, None)
    close = getattr(reads, "close", None)
    if close is not None:
        close()


guest.on_fork(_reading.clear)  # (a fork child's copies of its parent's readers are its own code's to drop)


def bytes_reader(exchange: Exchange) -> Callable[[bytes], None] | None:
    """What a body's reads, from their start, give their bytes to: ``on_bytes`` when this layer
    measures the body, nothing when it does not or when the SDK's parsed items are measured
    instead (they are claimed before the SDK starts reading, and stay claimed)."""
    tracker = exchange.tracker
    if not exchange.measures_body or tracker is None or tracker.progress.items_claimed:
        return None
    return exchange.on_bytes


class _AsyncReads:
    """The reads of an async response body, as the caller makes them: what the sync wrapper's
    generator does, as a plain iterator, so that asyncio tracks no async generator of ours (its
    shutdown then closes exactly the generators it closes without the agent).

    It has the async-generator protocol, as the library's own reader has: httpx2 closes the
    reader it got when its caller stops, and so closes the readers beneath it at once."""

    __slots__ = ("_done", "_exchange", "_inner", "_on_bytes", "_pull", "_returned", "_timing")

    def __init__(self, inner: Any, exchange: Exchange) -> None:
        self._inner = inner
        self._pull = inner.__anext__
        self._exchange = exchange
        self._timing = exchange.timing if exchange.tracker is not None else None  # (None: nothing to time)
        if self._timing is not None:
            self._timing.timed = True
        self._on_bytes = bytes_reader(exchange)
        self._returned = _clock()  # (reading starts: no time of the caller's before it)
        self._done = False

    def __aiter__(self) -> _AsyncReads:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._done:
                raise StopAsyncIteration
            asked = _clock()
            try:
                chunk = await self._pull()
            except StopAsyncIteration:
                self._done = True
                exchange = self._exchange
                _guard(exchange.on_complete)
                rest = exchange.strip.flush() if exchange.strip is not None else b""
                if rest:
                    return rest
                raise
            except BaseException as exc:
                self._done = True
                _guard(self._exchange.on_error, exc)
                raise
            timing = self._timing
            if timing is None:
                return chunk
            now = timing.read_time = _clock()
            returned, self._returned = self._returned, now
            timing.waited = now - asked
            timing.away = asked - returned
            timing.reader_seconds += asked - returned
            on_bytes = self._on_bytes
            if on_bytes is not None:
                try:
                    on_bytes(chunk)
                except Exception as exc:
                    report_internal_error("httpx.on_bytes", exc)
            exchange = self._exchange
            if exchange.strip is not None:
                chunk = exchange.strip_injected(chunk)
            if chunk:
                return chunk

    def asend(self, value: None) -> Awaitable[bytes]:
        """As an async generator's: a reader takes nothing in, so this is ``__anext__``."""
        return self.__anext__()

    async def athrow(self, error: Any, value: Any = None, traceback: Any = None) -> bytes:
        """As an async generator's, suspended between two reads: the reads stop, and the error
        goes to what they read from, or is raised here."""
        self._done = True
        if isinstance(self._inner, AsyncGenerator):
            return await self._inner.athrow(error, value, traceback)
        exc = error if isinstance(error, BaseException) else value or error()
        raise exc if traceback is None else exc.with_traceback(traceback)

    async def aclose(self) -> None:
        """The caller stopped: no more reads, and what they read from closes now (the library's
        own reader closes it in its ``finally``)."""
        self._done = True
        if isinstance(self._inner, AsyncGenerator):
            await self._inner.aclose()


class BodyClasses(NamedTuple):
    """Byte-stream wrappers that subclass one library's own stream types (httpx checks them)."""

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

    class ObservedStream(_ObservedBody, module.SyncByteStream):
        def __iter__(self) -> Any:
            exchange = self._exchange
            tracker = exchange.tracker
            reads = iter(self._inner)
            key = id(reads)
            _reading[key] = reads
            try:
                if tracker is None:
                    for chunk in reads:  # nothing to learn per chunk
                        yield chunk
                else:
                    on_bytes = bytes_reader(exchange)
                    strip = exchange.strip
                    timing = exchange.timing
                    timing.timed = True
                    returned = asked = _clock()
                    for chunk in reads:  # one network read, or what the parser had buffered
                        now = timing.read_time = _clock()
                        timing.waited = now - asked
                        timing.away = asked - returned
                        returned = now
                        if on_bytes is not None:
                            try:
                                on_bytes(chunk)
                            except Exception as exc:
                                report_internal_error("httpx.on_bytes", exc)
                        if strip is not None:
                            chunk = exchange.strip_injected(chunk)
                        if chunk:
                            yield chunk
                        asked = _clock()
                        timing.reader_seconds += asked - now
                    if strip is not None and (rest := strip.flush()):
                        yield rest
            except GeneratorExit:  # the reader stopped early; close() follows
                if guest.in_collector():
                    guest.post(_close_reader, key)  # (dropped: the transport's reader is closed elsewhere)
                else:
                    del _reading[key]
                raise
            except BaseException as exc:
                _reading.pop(key, None)
                _guard(exchange.on_error, exc)
                raise
            _reading.pop(key, None)
            _guard(exchange.on_complete)

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                _guard(self._exchange.end)

    class ObservedAsyncStream(_ObservedBody, module.AsyncByteStream):
        def __aiter__(self) -> _AsyncReads:
            return _AsyncReads(self._inner.__aiter__(), self._exchange)

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                _guard(self._exchange.end)

    class SentBody(_ObservedBody, module.SyncByteStream):
        """The request body while it is written: its end is when the request is on the wire."""

        def __iter__(self) -> Any:
            yield from self._inner
            _guard(self._exchange.sent)

        def __del__(self) -> None:
            pass

    class AsyncSentBody(_ObservedBody, module.AsyncByteStream):
        async def __aiter__(self) -> Any:
            async for chunk in self._inner:
                yield chunk
            _guard(self._exchange.sent)

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
        exchange.responded(response)
        classes = body_classes(module)
        response.stream = (classes.async_response if is_async else classes.response)(response.stream, exchange)
    except Exception as exc:
        report_internal_error("httpx.observe", exc)


def observe_body(telemetry: Any, call: Call, response: Any, is_async: bool) -> None:
    """Watch the unread body of an SDK call's response (for its raw accessors and its close), when
    the httpx layer did not already: it is disabled for that library, or not patched."""
    if isinstance(response.stream, _ObservedBody) or response.is_stream_consumed:
        return
    module = sys.modules.get(type(response).__module__.partition(".")[0])
    if module is None:
        return
    exchange = Exchange(telemetry, response.request, module.__name__, False, call, False, True)
    observe_response(module, response, exchange, is_async)

"""The byte path: an LLM response body as the caller reads it, and what it says.

Per network read of a measured body, ``ObservedStream.__iter__`` (sync) and
``AsyncReads.__anext__`` (async) time the read, storing three clock readings in the exchange's
``ReadTiming``, and hand its bytes to the body's reader: an ``EventBody`` for a stream of SSE
events or NDJSON lines, a ``JSONBody`` for a whole answer, chosen by ``reader_for`` from the
content type and the call's protocol. A reader has ``feed`` (one read's bytes), ``complete``
(the body was read to its end) and ``done`` (the protocol's own end came). The caller's bytes
pass through unchanged, but for the usage event the agent asked for (``caller_bytes``). Every
per-chunk fast path of the HTTP layer is in this module. Other bodies pass through untouched.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import conventions as names
from .. import guest, lifecycle
from ..adapters.sse import EventFilter, NDJSONDecoder, PlainReads, SSEDecoder, decode_json, events_of
from ..guard import report_internal_error

if TYPE_CHECKING:
    from ..adapters.endpoints import Endpoint
    from ..lifecycle import Call
    from ..tracker import CallTracker
    from .exchange import Exchange

MAX_JSON_BODY = 4 * 2**20
_clock = time.perf_counter
#: zlib's window bits for the content encodings whose bodies the agent decodes (deflate: the zlib
#: format, as httpx and servers use it; 32 + 15 also takes a gzip header).
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 47}
_GZIP_START = b"\x1f\x8b\x08"  # (the magic bytes and the deflate method)
_FHCRC, _FEXTRA, _FNAME, _FCOMMENT, _FRESERVED = 0x02, 0x04, 0x08, 0x10, 0xE0
#: A longer gzip header (a huge extra field, a name without its end) is left to zlib.
MAX_GZIP_HEADER = 2**16


def gzip_header_end(data: bytes) -> int | None:
    """Where the gzip member header that ``data`` begins with ends; None if ``data`` is not all of
    it yet, -1 if ``data`` begins with no gzip header (RFC 1952, 2.3)."""
    if data[:3] != _GZIP_START[:len(data)]:
        return -1
    if len(data) < 10:
        return None
    flags = data[3]
    if flags & _FRESERVED:
        return -1
    end = 10
    if flags & _FEXTRA:
        if len(data) < end + 2:
            return None
        end += 2 + int.from_bytes(data[end:end + 2], "little")
    for field in (_FNAME, _FCOMMENT):  # (each ends with a zero byte)
        if flags & field:
            zero = data.find(b"\0", end)
            if zero < 0:
                return None
            end = zero + 1
    if flags & _FHCRC:
        end += 2
    return end if len(data) >= end else None


class Inflate:
    """A compressed body's bytes decoded read by read, by ``decompress``: a zlib decompressor's own
    method (no Python step per read), once a gzip member's header has been read here. A gzip
    member's data is inflated raw: zlib would also compute its CRC-32, which the caller's library
    checks anyway, and which costs as much per event as the rest of the agent's work on a read."""

    __slots__ = ("_header", "decompress")

    def __init__(self, encoding: str) -> None:
        self._header = b""
        wbits = _WBITS[encoding]
        # (Until the header is read, ``decompress`` is this object's own method: a reference
        # cycle, broken by the first read that completes the header.)
        self.decompress: Callable[[bytes], bytes] = (
            self._gzip_header if wbits == 31 else zlib.decompressobj(wbits).decompress)

    def _gzip_header(self, chunk: bytes) -> bytes:
        data = self._header + chunk
        end = gzip_header_end(data)
        if end is None and len(data) <= MAX_GZIP_HEADER:
            self._header = data
            return b""
        self._header = b""
        if end is None or end < 0:  # (not a gzip header zlib would take, or an outsize one: zlib's verdict)
            self.decompress = zlib.decompressobj(31).decompress
            return self.decompress(data)
        self.decompress = zlib.decompressobj(-15).decompress
        return self.decompress(data[end:])


class Recompressed:
    """An ``EventFilter`` for a compressed body: decodes what is read, filters it, and encodes it
    again the same way, flushed per read. The caller's library decodes it as it would decode the
    server's, to the same content as the server's without the dropped events (its raw bytes are
    not the server's: the agent compressed them)."""

    __slots__ = ("_compress", "_fed", "_filter", "_inflate")

    def __init__(self, drop: EventFilter, encoding: str) -> None:
        self._filter = drop
        self._inflate = Inflate(encoding)
        self._compress = zlib.compressobj(wbits=31 if _WBITS[encoding] == 31 else 15)
        self._fed = False

    def feed(self, chunk: bytes) -> bytes:
        """The filtered bytes of ``chunk``, compressed and flushed."""
        self._fed = True
        kept = self._filter.feed(self._inflate.decompress(chunk))
        return self._compress.compress(kept) + self._compress.flush(zlib.Z_SYNC_FLUSH)

    def flush(self) -> bytes:
        """What was held, and the end of the compressed stream (nothing, if nothing was fed: the
        server's own bytes then go on unchanged)."""
        if not self._fed:
            return b""
        return self._compress.compress(self._filter.flush()) + self._compress.flush()


# -- the readers of a body ----------------------------------------------------------------------


class EventBody:
    """A streamed body of events (SSE, or NDJSON lines) -> the call's tracker: one chunk per
    event, its reader's facts, and whether the protocol's end came."""

    __slots__ = ("_decoder", "_end_key", "_end_marker", "_end_values", "_feed_region", "_inflate", "_plain",
                 "_read_event", "_skim", "_tracker", "done")

    def __init__(self, tracker: CallTracker, endpoint: Endpoint, decoder: SSEDecoder | NDJSONDecoder,
                 plain: PlainReads | None, inflate: Inflate | None) -> None:
        self._tracker = tracker
        self._decoder = decoder
        self._plain = plain if tracker.texts is None else None  # (None: every event is decoded, its text kept)
        #: Where line ends are ``\n``, as servers write them: the plain deltas of a read are then
        #: told apart from their bytes, without a parse (with a template to tell them by: SSE only).
        self._feed_region = decoder.feed_region if self._plain is not None and isinstance(decoder, SSEDecoder) else None
        self._inflate = inflate
        # (the endpoint's fields, looked up once: read per event)
        self._read_event = endpoint.read_event
        self._skim = endpoint.skim
        self._end_key, self._end_values, self._end_marker = endpoint.end_key, endpoint.end_values, endpoint.end_marker
        self.done = False

    def feed(self, chunk: bytes) -> None:
        """One read's bytes (per network read)."""
        if self._inflate is not None:
            chunk = self._inflate.decompress(chunk)
        known, decoder = self._plain, self._decoder
        if known is not None and decoder.idle and (count := known.matches(chunk)):
            # Plain content deltas, like the last, and nothing else: chunks, and nothing to learn.
            # Saves splitting the read into events and parsing their JSON.
            if count == 1:
                self._tracker.content(None, 1, 1)  # (one event per read, as servers flush them: the common case)
            else:
                self._tracker.contents(count)
            return
        tracker = self._tracker
        plain = known if decoder.idle else None  # (None: this read is not whole events)
        if known is not None and self._feed_region is not None:
            region = self._feed_region(chunk)
            if region is not None:
                if region:
                    self._region(region, chunk, plain, known)
                return
        self._events(decoder.feed(chunk), chunk, plain, known, tracker.content_chunks)

    def _region(self, region: bytes, chunk: bytes, plain: PlainReads | None, known: PlainReads) -> None:
        """The whole events ``chunk`` completed. Once a plain delta's template and the response are
        known, the plain deltas among them are told apart from their bytes
        (``PlainReads.sort_events``) and recorded together: a read that brings many events costs
        less per event than a read of one."""
        tracker = self._tracker
        contents_before = tracker.content_chunks
        start = 0
        while start < len(region) and not (known.data_prefix and tracker.response_id is not None):
            end = region.find(b"\n\n", start) + 2  # (one event at a time, until they can be)
            if end == 1:
                return  # (only the last line end of an odd run of them is left: no event)
            self._events(events_of(region[start:end]), chunk, plain, known, contents_before)
            start = end
        rest = region[start:] if start else region
        if not rest:
            return
        several = rest.find(b"\n\n") != len(rest) - 2  # (one event is looked at alone: it may teach a read's template)
        sorted_events = known.sort_events(rest) if several and self._skim is not None else None
        if sorted_events is None:
            self._events(events_of(rest), chunk, plain, known, contents_before)
            return
        count, others = sorted_events
        if tracker.content_chunks == contents_before:
            tracker.contents(count)
        else:
            tracker.waited_contents(count)
        if others:
            self._events(events_of(others), chunk, plain, known, contents_before)

    def _events(self, events: list[bytes], chunk: bytes, plain: PlainReads | None, known: PlainReads | None,
                contents_before: int) -> None:
        """The data of events of ``chunk``, one by one (content chunks recorded before
        ``contents_before`` came in earlier reads)."""
        tracker = self._tracker
        read_event, skim, end_marker = self._read_event, self._skim, self._end_marker
        end_key, end_values = self._end_key, self._end_values
        waiting = 0  # plain content deltas after this read's first content, recorded together
        for data in events:
            if data == end_marker:  # ([DONE]: the end, not a chunk; the SDK never yields it either)
                self.done = True
                continue
            if skim is not None and tracker.response_id is not None and tracker.texts is None and (
                    (recognised := known is not None and known.matches_data(data)) or skim(data)):
                # A plain content delta, seen from its bytes: saves parsing its JSON.
                if waiting or tracker.content_chunks > contents_before:
                    if not waiting and known is not None and not known.data_prefix:
                        known.learn(b"", data)  # (the first content was parsed: learn from this one)
                    waiting += 1  # (it waited for this read's first content: one call for them all)
                    continue
                # (Only for a read's first content, the rest wait, above; and only where a template
                # is missing: this read may be one whole event, or the event's data is unknown.)
                if known is not None and (plain is not None or not recognised):
                    known.learn(chunk if plain is not None else b"", data)
                tracker.content(None, 1, 1)
                continue
            if waiting:
                tracker.waited_contents(waiting)
                waiting = 0
            tracker.chunk()
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
        if waiting:
            tracker.waited_contents(waiting)

    def complete(self) -> None:
        """The body was read to its end: an NDJSON body's last line may have come without its end."""
        decoder = self._decoder
        if isinstance(decoder, NDJSONDecoder) and decoder.pending:
            self.feed(b"\n")


class JSONBody:
    """A whole answer: kept (up to ``MAX_JSON_BODY``) and read by the endpoint when complete."""

    __slots__ = ("_body", "_inflate", "_read_response", "_tracker", "done")

    def __init__(self, tracker: CallTracker, endpoint: Endpoint, inflate: Inflate | None) -> None:
        self._tracker = tracker
        self._read_response = endpoint.read_response
        self._inflate = inflate
        self._body: bytearray | None = bytearray()
        self.done = False  # (a whole answer has no end of its own: it is complete or not)

    def feed(self, chunk: bytes) -> None:
        """One read's bytes."""
        if self._inflate is not None:
            chunk = self._inflate.decompress(chunk)
        body = self._body
        if body is not None:
            if len(body) + len(chunk) <= MAX_JSON_BODY:
                body += chunk
            else:
                self._body = None

    def complete(self) -> None:
        """The body was read to its end: the answer, read once."""
        if self._body:
            with contextlib.suppress(ValueError):
                self._read_response(self._tracker, decode_json(bytes(self._body)))


BodyReader = EventBody | JSONBody
#: What the caller's bytes pass through (``caller_bytes``), where the agent asked for an event.
CallerFilter = EventFilter | Recompressed


def reader_for(call: Call, headers: dict[str, str]) -> tuple[BodyReader | None, CallerFilter | None]:
    """The reader of an LLM call's response body, by its content type, else for a streamed call by
    its protocol's framing (and its encoding: none for one the agent does not decode), and the
    filter of what the caller reads (None: unchanged)."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    inflate = None
    if encoding not in ("identity", ""):
        if encoding not in _WBITS:
            return None, None  # (br, zstd, several encodings: timing and status only)
        inflate = Inflate(encoding)  # (the caller's bytes stay as they are)
    endpoint, tracker = call.endpoint, call.tracker
    content_type = headers.get("content-type", "")
    if "text/event-stream" in content_type:
        framing = "sse"
    elif "ndjson" in content_type:  # one JSON document per line (Ollama)
        framing = "ndjson"
    elif "json" in content_type or not tracker.stream:
        framing = "json"
    else:  # (a streamed answer whose type says nothing, text/plain from a proxy: the protocol's)
        framing = endpoint.protocol.framing
    if framing == "sse":
        strip: CallerFilter | None = None
        if endpoint.usage_only_event is not None and call.drop_usage_only:
            drop = EventFilter(endpoint.usage_only_event)
            strip = drop if inflate is None else Recompressed(drop, encoding)
        plain = PlainReads(endpoint.plain_key) if endpoint.plain_key else None
        return EventBody(tracker, endpoint, SSEDecoder(), plain, inflate), strip
    if framing == "ndjson":
        return EventBody(tracker, endpoint, NDJSONDecoder(), None, inflate), None
    return JSONBody(tracker, endpoint, inflate), None


def caller_bytes(exchange: Exchange, chunk: bytes) -> bytes:
    """What of ``chunk`` the caller gets: all of it, but for the usage event the agent asked for
    when the caller reads the bytes itself (the SDK's stream drops that item instead)."""
    strip = exchange.strip
    if strip is None:
        return chunk
    if exchange.tracker is not None and exchange.tracker.progress.items_claimed:
        return exchange.stop_filtering() + chunk
    try:
        return strip.feed(chunk)
    except Exception as exc:
        report_internal_error("httpx.strip", exc)
        return exchange.stop_filtering() + chunk


# -- the timed reads -----------------------------------------------------------------------------


def guarded(action: Any, *args: Any) -> None:
    """``action(*args)``, a bug of ours reported, never raised into the caller's read."""
    try:
        action(*args)
    except Exception as exc:
        report_internal_error(f"httpx.{getattr(action, '__name__', 'exchange')}", exc)


class ObservedBody:
    """What the byte-stream wrappers (the response's here, the request's in ``exchange``) share:
    the exchange, ``elapsed``, and the end of an exchange dropped unfinished."""

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
    """What a body's reads, from their start, give their bytes to: its reader's ``feed`` when
    this layer measures the body, nothing when it does not or when the SDK's parsed items are
    measured instead (they are claimed before the SDK starts reading, and stay claimed)."""
    tracker, body = exchange.tracker, exchange.body
    if body is None or tracker is None or tracker.progress.items_claimed:
        return None
    return body.feed


class AsyncReads:
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

    def __aiter__(self) -> AsyncReads:
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
                guarded(exchange.on_complete)
                rest = exchange.strip.flush() if exchange.strip is not None else b""
                if rest:
                    return rest
                raise
            except BaseException as exc:
                self._done = True
                guarded(self._exchange.on_error, exc)
                raise
            timing = self._timing
            if timing is None:
                return chunk
            now = timing.read_time = _clock()
            returned, self._returned = self._returned, now
            timing.asked, timing.previous_read_time = asked, returned
            timing.reader_seconds += asked - returned
            on_bytes = self._on_bytes
            if on_bytes is not None:
                try:
                    on_bytes(chunk)
                except Exception as exc:
                    report_internal_error("httpx.on_bytes", exc)
            exchange = self._exchange
            if exchange.strip is not None:
                chunk = caller_bytes(exchange, chunk)
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


_RESPONSE_CLASSES: dict[str, tuple[type, type]] = {}


def response_classes(module: Any) -> tuple[type, type]:
    """The sync and async wrappers of a response body for ``module`` (httpx or httpx2), made once
    (they subclass the library's own stream types, which it checks)."""
    classes = _RESPONSE_CLASSES.get(module.__name__)
    if classes is not None:
        return classes

    class ObservedStream(ObservedBody, module.SyncByteStream):
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
                        timing.asked, timing.previous_read_time, returned = asked, returned, now
                        if on_bytes is not None:
                            try:
                                on_bytes(chunk)
                            except Exception as exc:
                                report_internal_error("httpx.on_bytes", exc)
                        if strip is not None:
                            chunk = caller_bytes(exchange, chunk)
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
                guarded(exchange.on_error, exc)
                raise
            _reading.pop(key, None)
            guarded(exchange.on_complete)

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                guarded(self._exchange.end)

    class ObservedAsyncStream(ObservedBody, module.AsyncByteStream):
        def __aiter__(self) -> AsyncReads:
            return AsyncReads(self._inner.__aiter__(), self._exchange)

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                guarded(self._exchange.end)

    _RESPONSE_CLASSES[module.__name__] = (ObservedStream, ObservedAsyncStream)
    return ObservedStream, ObservedAsyncStream

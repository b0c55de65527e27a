"""aiohttp's client: an LLM call sent with ``aiohttp.ClientSession`` (directly, or by an SDK that
sends with it, as google-genai's async calls do when aiohttp is installed), measured as one sent
with httpx is: the same exchange, the same readers, the same engine.

Each patch sits where one fact passes:

- ``ClientSession._request`` (every ``get``/``post``/``request`` of a session, redirects
  included): a request to an LLM path of the endpoint table starts a call and its ``Exchange``,
  current while it is sent; when it returns, the response's status and headers choose the
  body's reader.
- ``ClientRequest.send`` (each hop, on its connection): the trace context goes into the hop's
  headers, and the connection is noted, so that the body made for it is known as the call's.
- ``StreamReader``: that body is watched as its data arrive from the connection (``feed_data``)
  until its end (``feed_eof``) or its failure (``set_exception``).

aiohttp reads ahead of its caller, up to its buffer's limit, so the reads timed here are the
connection's, as the data arrive, not the caller's: a chunk's time is its arrival. The caller's
bytes are never touched. The call ends when the body's last byte has arrived, when the caller
releases or closes the response before that (``closed_early``), or when the connection fails.

When the official opentelemetry-instrumentation-aiohttp-client traces a session, it owns the HTTP
spans and the propagation; this layer then only measures.
"""

from __future__ import annotations

import asyncio
import sys
import time
from contextvars import ContextVar
from typing import Any

from .. import bootstrap, guest, lifecycle
from .. import conventions as names
from ..adapters.endpoints import HTTP_CLIENTS, endpoint_for
from ..adapters.sse import decode_json
from ..guard import report_internal_error
from ..imports import when_imported
from . import patching
from .body import MAX_JSON_BODY, guarded
from .exchange import Exchange

_clock = time.perf_counter

#: What the official instrumentation's callbacks' module starts with.
_OFFICIAL = "opentelemetry.instrumentation.aiohttp_client"


class Arrivals:
    """One response body of an LLM call as its data arrive: each network read timed (in the
    exchange's ``ReadTiming``) and given to the body's reader. What arrives before the headers
    have chosen the reader (a body's first bytes may come with its headers) is held until then."""

    __slots__ = ("_end", "_exchange", "_feed", "_held", "_last", "_timing", "headers_at", "reader_id")

    def __init__(self, exchange: Exchange, reader_id: int) -> None:
        self._exchange = exchange
        #: The id of the body's ``StreamReader``, its key in ``_arriving`` (the reader itself is not
        #: kept: a body that never ends, its loop closed under it, would keep its connection alive).
        self.reader_id = reader_id
        timing = self._timing = exchange.timing
        timing.timed = timing.by_arrival = True
        self.headers_at = self._last = _clock()  # (the body is made when its headers are parsed)
        self._feed: Any = None
        self._held: list[tuple[float, bytes]] = []
        self._end: tuple[BaseException | None, float] | None = None

    def data(self, chunk: bytes) -> None:
        """One network read's bytes, arrived now (per read: the hot path)."""
        now = _clock()
        feed = self._feed
        if feed is None:
            self._held.append((now, chunk))
            return
        timing = self._timing
        # (asked for when the previous read arrived, by the connection: the caller is never away)
        timing.asked = timing.previous_read_time = self._last
        timing.read_time = self._last = now
        feed(chunk)

    def start(self, feed: Any) -> None:
        """The headers chose the body's reader (its ``feed``): what was held goes to it first,
        at the times it arrived, and an end that came already ends the exchange."""
        held, self._held = self._held, []
        timing = self._timing
        for at, chunk in held:
            timing.asked = timing.previous_read_time = self._last
            timing.read_time = self._last = at
            try:  # (as each later read's: a bug of ours in one read leaves the others measured)
                feed(chunk)
            except Exception as exc:
                report_internal_error("aiohttp.data", exc)
        self._feed = feed
        if self._end is not None:
            self._ended(*self._end)

    def ended(self, exc: BaseException | None) -> None:
        """The body ended: read to its end (``exc`` None), or failed with ``exc``."""
        if self._feed is None:
            self._end = (exc, _clock())
        else:
            self._ended(exc, None)

    def _ended(self, exc: BaseException | None, at: float | None) -> None:
        exchange = self._exchange
        if exc is None:
            exchange.on_complete()
            exchange.end(at=at)
        elif _closed_by_caller(exc):  # released or closed before its end: by a cancellation, or the caller
            exchange.end(names.CANCELLED if at is None and _cancelling() else names.CLOSED_EARLY, at)
        else:
            exchange.on_error(exc)
            exchange.end(at=at)


def _cancelling() -> bool:
    """Whether the running task is being cancelled (its cancellation unwinds through the caller's
    ``async with``, which releases the response)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # (no event loop running in this thread)
        return False
    cancelling = getattr(task, "cancelling", None)  # (Python 3.11+)
    return cancelling is not None and cancelling() > 0


def _ignore(chunk: bytes) -> None:
    """The reader of a body nobody reads (an encoding the agent does not decode): timing only."""


def _closed_by_caller(exc: BaseException) -> bool:
    """Whether ``exc`` is the error aiohttp gives a body whose response its caller released or
    closed before the end (``ClientResponse._notify_content``: that very class and message; a
    connection that failed gives a subclass, ``ClientPayloadError`` or another)."""
    closed = getattr(sys.modules.get("aiohttp.client_exceptions"), "ClientConnectionError", None)
    return type(exc) is closed and exc.args == ("Connection closed",)


class _Sending:
    """One ``ClientSession._request`` of an LLM call, while it is sent: its exchange, the
    connections its hops went out on, and the body of the latest hop."""

    __slots__ = ("body", "connections", "exchange")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.connections: list[Any] = []
        self.body: Arrivals | None = None


#: The LLM request this task is sending (None: none, or one this layer does not measure).
_sending: ContextVar[_Sending | None] = ContextVar("nexent_aiohttp_sending", default=None)
#: Connections (by the id of their protocol) that carry an LLM request whose body is not made yet.
_awaiting: dict[int, _Sending] = {}
#: The bodies being watched, by the id of their ``StreamReader``. An id is only reused by a new
#: object, and every new reader drops what was watched under its id (``_reader_made``).
_arriving: dict[int, Arrivals] = {}


def _forget_inherited() -> None:
    _awaiting.clear()
    _arriving.clear()


guest.on_fork(_forget_inherited)  # (a fork child owns none of its parent's requests)


class _State:
    telemetry: Any = None
    active = False


def _official_traces(session: Any) -> bool:
    """Whether opentelemetry-instrumentation-aiohttp-client traces this session (globally or per session)."""
    for config in getattr(session, "trace_configs", ()):
        for callback in config.on_request_start:
            if getattr(callback, "__module__", "").startswith(_OFFICIAL):
                return True
    return False


def _request_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    body = kwargs.get("json")
    if body is None:
        data = kwargs.get("data")
        if not isinstance(data, (bytes, bytearray, str)) or not data or len(data) > MAX_JSON_BODY:
            return {}
        try:
            body = decode_json(data.encode() if isinstance(data, str) else bytes(data))
        except ValueError:
            return {}
    return body if isinstance(body, dict) else {}


def _begin(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exchange | None:
    if not _State.active or lifecycle.current_llm_call.get() is not None:
        return None  # (a layer above measures the call: an SDK's, or httpx over an aiohttp transport)
    telemetry = _State.telemetry or bootstrap.current_telemetry()
    if telemetry is None:
        return None
    method = str(args[0] if args else kwargs["method"]).upper()
    str_or_url = args[1] if len(args) > 1 else kwargs["str_or_url"]
    build_url = getattr(session, "_build_url", None)  # (the session's base URL joined, as aiohttp does)
    url = build_url(str_or_url) if build_url is not None else sys.modules["yarl"].URL(str_or_url)
    endpoint = endpoint_for(method, url.path)
    if endpoint is None:
        return None
    call = lifecycle.start_http_call(telemetry, endpoint, _request_body(kwargs), url)
    return Exchange(telemetry, method, url, "aiohttp", not _official_traces(session), call, True, True)


def _guarded_begin(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exchange | None:
    try:
        return _begin(session, args, kwargs)
    except Exception as exc:
        report_internal_error("aiohttp.begin", exc)
        return None


def _responded(sending: _Sending, session: Any, kwargs: dict[str, Any], response: Any) -> None:
    """``_request`` returned: the response's headers choose its body's reader."""
    exchange = sending.exchange
    body = sending.body
    if body is not None and body.reader_id != id(response.content):
        body = None  # (the latest body is not this response's)
    decode = kwargs.get("auto_decompress")
    connection = sending.connections[-1] if sending.connections else None
    exchange.responded(response.status, response.raw_headers, connection,
                       at=body.headers_at if body is not None else None,
                       decoded=getattr(session, "auto_decompress", True) if decode is None else bool(decode))
    if body is None:  # no body to wait for (HEAD, 204, 304), or it was never seen
        exchange.on_complete()
        exchange.end()
    else:
        body.start(exchange.body.feed if exchange.body is not None else _ignore)


async def _request(wrapped: Any, session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    exchange = _guarded_begin(session, args, kwargs)
    if exchange is None:
        if _sending.get() is None:
            return await wrapped(*args, **kwargs)
        token = _sending.set(None)  # (a request made while an LLM request is sent is not its hop)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            _sending.reset(token)
    sending = _Sending(exchange)
    token = _sending.set(sending)
    try:
        with exchange.sending():
            try:
                response = await wrapped(*args, **kwargs)
            except BaseException as exc:
                guarded(exchange.failed, exc)
                raise
    finally:
        _sending.reset(token)
        for connection in sending.connections:
            if _awaiting.get(id(connection)) is sending:
                del _awaiting[id(connection)]
    try:
        _responded(sending, session, kwargs, response)
    except Exception as exc:
        report_internal_error("aiohttp.responded", exc)
    return response


def _hop(sending: _Sending, request: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    sending.exchange.inject(request.headers)
    connection = (args[0] if args else kwargs["conn"]).protocol
    _awaiting[id(connection)] = sending
    sending.connections.append(connection)
    sending.body = None  # (a body is this hop's or none: an earlier hop's reader may be gone, its id reused)


async def _send(wrapped: Any, request: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    sending = _sending.get()
    if sending is None:
        return await wrapped(*args, **kwargs)
    guarded(_hop, sending, request, args, kwargs)
    response = await wrapped(*args, **kwargs)
    guarded(sending.exchange.sent)
    return response


def _reader_made(wrapped: Any, reader: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    wrapped(*args, **kwargs)
    if _arriving:  # (a body that never ended, whose reader has gone: its id is this one's now)
        _arriving.pop(id(reader), None)
    if _awaiting:
        try:
            sending = _awaiting.pop(id(args[0] if args else kwargs.get("protocol")), None)
            if sending is not None:
                body = sending.body = Arrivals(sending.exchange, id(reader))
                _arriving[id(reader)] = body
        except Exception as exc:
            report_internal_error("aiohttp.reader", exc)


def _data(wrapped: Any, reader: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    body = _arriving.get(id(reader))
    if body is not None:
        try:
            chunk = args[0] if args else kwargs["data"]
            if chunk:
                body.data(chunk)
        except Exception as exc:
            report_internal_error("aiohttp.data", exc)
    return result


def _stop_watching(reader: Any, exc: BaseException | None) -> None:
    """The body of ``reader`` ended (``exc`` None: read to its end): it is watched no more."""
    body = _arriving.pop(id(reader), None)
    if body is not None:
        guarded(body.ended, exc)


def _eof(wrapped: Any, reader: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        _stop_watching(reader, None)


def _failed(wrapped: Any, reader: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        _stop_watching(reader, args[0] if args else kwargs.get("exc"))


#: What is patched: (module, attribute path, wrapper).
_PATCHES = (("aiohttp.client", "ClientSession._request", _request),
            ("aiohttp.client_reqrep", "ClientRequest.send", _send),
            ("aiohttp.streams", "StreamReader.__init__", _reader_made),
            ("aiohttp.streams", "StreamReader.feed_data", _data),
            ("aiohttp.streams", "StreamReader.feed_eof", _eof),
            ("aiohttp.streams", "StreamReader.set_exception", _failed))


def _patch(module: Any) -> None:
    if not _State.active:
        return
    try:
        patching.apply(_PATCHES)
        telemetry = _State.telemetry or bootstrap.current_telemetry()
        if telemetry is not None:  # (made now, when the library is imported, not by the first request)
            telemetry.prepare()
    except Exception as exc:
        report_internal_error("aiohttp.patch", exc)


#: The releases supported.
SUPPORTED = HTTP_CLIENTS["aiohttp"]


def activate(library: str = "aiohttp", telemetry: Any = None) -> None:
    """Measure LLM calls sent with aiohttp from now on (patched as soon as it is imported).
    ``telemetry``: where to record (tests); by default the agent's pipeline."""
    _State.active = True
    if telemetry is not None:
        _State.telemetry = telemetry
    when_imported("aiohttp", _patch)


def deactivate(library: str = "aiohttp") -> None:
    """Stop, and give aiohttp its functions back."""
    _State.active = False
    _State.telemetry = None
    patching.remove(_PATCHES)

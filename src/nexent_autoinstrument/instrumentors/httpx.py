"""httpx and httpx2 (the same API; openai 3.x sends through httpx2), patched at ``Client.send``
and ``AsyncClient.send``.

Every request gets a CLIENT span with the HTTP semantic conventions, W3C trace context in its
headers and an ``http.client.request.duration`` record. The span ends when the body has been
read or the response closed, not when the headers arrive: the response's byte stream is
wrapped, so the agent sees exactly the bytes the user pulls, when the user pulls them.

Under an openai call (``instrumentors.context``) each attempt is a child of the openai span,
and the response headers worth having go on that span; the call is measured there, once. A
request to an OpenAI-compatible path sent with httpx directly is measured here, as an LLM
call, by the same engine and the same chunk readers, fed from the body as the user reads it.

When the official opentelemetry-instrumentation-httpx is active it owns the HTTP spans and the
propagation; this layer then only measures raw LLM calls.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import wrapt
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import bootstrap
from .. import conventions as names
from ..adapters.openai import endpoint_for, provider_for, read_response, request_attributes
from ..adapters.sse import SSEDecoder, decode_json
from ..guard import report_internal_error
from ..streams import end_call
from ..tracker import abandon
from .context import current_llm_call, take_over_manual_call

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
    """One HTTP request and its response body, from ``send`` to close."""

    def __init__(self, telemetry: Any, request: Any, library: str, own_span: bool, llm_call: Any,
                 tracker: Any, endpoint: Any) -> None:
        self.telemetry = telemetry
        self.llm_call = llm_call
        self.tracker = tracker
        self.endpoint = endpoint
        self.started_ns = time.time_ns()
        self.started = _clock()
        self.ended = False
        self.body_complete = False
        self.done = False
        self.sse: SSEDecoder | None = None
        self.json_body: bytearray | None = None
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        self.attributes: dict[str, Any] = {
            "http.request.method": request.method, "server.address": url.host, "server.port": port}
        self.span = None
        if own_span:
            parent = trace.set_span_in_context(tracker.span) if tracker is not None else None
            self.span = telemetry.tracer.start_span(
                request.method, context=parent, kind=SpanKind.CLIENT, start_time=self.started_ns,
                attributes={**self.attributes, "url.full": redact_url(str(url)), "http.client.library": library})
            propagate.inject(request.headers, context=trace.set_span_in_context(self.span))
        if llm_call is not None:
            llm_call.attempts += 1
            if llm_call.attempts > 1:
                llm_call.tracker.span.set_attribute("llm.request.retries", llm_call.attempts - 1)

    def make_current(self) -> Any:
        """While a raw LLM call is sent, its span is current: HTTP spans of other
        instrumentations (the official httpx one) then nest under it, as ours do."""
        if self.tracker is None:
            return None
        return context.attach(trace.set_span_in_context(self.tracker.span))

    @staticmethod
    def restore(token: Any) -> None:
        """Undo ``make_current``."""
        if token is not None:
            context.detach(token)

    def responded(self, response: Any) -> None:
        """Headers are in: status, the openai span's headers, and how to read the body."""
        status = response.status_code
        self.attributes["http.response.status_code"] = status
        if status >= 400:
            self.attributes["error.type"] = str(status)
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status)
        headers = response.headers
        if self.llm_call is not None:
            span = self.llm_call.tracker.span
            for header, attribute, kind in RESPONSE_HEADERS:
                value = headers.get(header)
                if value is not None:
                    with contextlib.suppress(ValueError):
                        span.set_attribute(attribute, kind(value))
        if self.tracker is not None:
            if status >= 400:
                self.tracker.fail(str(status))
            if headers.get("content-encoding", "identity") not in ("identity", ""):
                return  # compressed body: timing and status only
            if "text/event-stream" in headers.get("content-type", ""):
                self.sse = SSEDecoder()
            else:
                self.json_body = bytearray()

    def on_bytes(self, chunk: bytes) -> None:
        """Raw body bytes, just read by the user. Per chunk: only for raw LLM calls."""
        if self.sse is not None:
            read_item = self.endpoint.read_item
            for data in self.sse.feed(chunk):
                if data == b"[DONE]":  # the end marker, not a chunk (the SDK never yields it either)
                    self.done = True
                    continue
                self.tracker.chunks += 1
                try:
                    event = decode_json(data)
                except ValueError:
                    continue
                if read_item is not None:
                    read_item(self.tracker, event)
                if getattr(event, "type", None) in ("response.completed", "response.incomplete"):
                    self.done = True
        elif self.json_body is not None:
            if len(self.json_body) + len(chunk) <= _MAX_JSON_BODY:
                self.json_body += chunk
            else:
                self.json_body = None

    def on_complete(self) -> None:
        """The whole body has been read."""
        self.body_complete = True
        if self.json_body:
            with contextlib.suppress(ValueError):
                read_response(self.tracker, decode_json(bytes(self.json_body)))

    def on_error(self, exc: BaseException) -> None:
        """Sending, or reading the body, failed (connection refused or dropped, timeout, cancellation)."""
        if self.span is not None and names.outcome_of(exc) == names.ERROR:
            self.span.record_exception(exc)
            self.attributes["error.type"] = type(exc).__name__
        if self.tracker is not None:
            end_call(self.tracker, exc)

    def end(self, outcome: str | None = None, at: float | None = None) -> None:
        """The response was closed, or abandoned ``at`` some earlier time: end the span, record
        the duration, finish the LLM call, once."""
        if self.ended:
            return
        self.ended = True
        if self.tracker is not None:
            complete = self.body_complete or self.done
            end_call(self.tracker, None, outcome or (names.COMPLETED if complete else names.CLOSED_EARLY), at)
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
            abandon(functools.partial(exchange.end, names.ABANDONED))


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
                if exchange.tracker is None:
                    yield from self._inner  # nothing to read per chunk: let C delegate
                else:
                    for chunk in self._inner:
                        _guard(exchange.on_bytes, chunk)
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
            try:
                async for chunk in self._inner:
                    if exchange.tracker is not None:
                        _guard(exchange.on_bytes, chunk)
                    yield chunk  # (async generators have no ``yield from``)
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
    llm_call = current_llm_call.get()
    own_span = not _official_httpx_active(client, library)
    tracker = endpoint = None
    if llm_call is None and request.method == "POST":
        endpoint = endpoint_for(request.url.path)
        if endpoint is not None:
            take_over_manual_call()
            body = _request_body(request)
            model = body.get("model")
            host = request.url.host
            attributes = {names.SERVER_ADDRESS: host, names.SERVER_PORT: request.url.port or
                          (443 if request.url.scheme == "https" else 80),
                          **request_attributes(body, telemetry.settings.capture_content)}
            tracker = telemetry.start_call(
                endpoint.operation, model if isinstance(model, str) else None, provider=provider_for(host),
                stream=bool(body.get("stream")), attributes=attributes,
                usage_expected=bool((body.get("stream_options") or {}).get("include_usage")))
    if not own_span and tracker is None and llm_call is None:
        return None
    return Exchange(telemetry, request, library, own_span, llm_call, tracker, endpoint)


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


def _make_send(module_name: str) -> tuple[Any, Any]:
    def send(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        exchange = _guarded_begin(module_name, client, args, kwargs)
        if exchange is None:
            return wrapped(*args, **kwargs)
        read_body = not kwargs.get("stream", False)
        token = exchange.make_current()
        try:
            response = wrapped(*args, **{**kwargs, "stream": True})
        except BaseException as exc:
            _guard(exchange.failed, exc)
            raise
        finally:
            exchange.restore(token)
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
        token = exchange.make_current()
        try:
            response = await wrapped(*args, **{**kwargs, "stream": True})
        except BaseException as exc:
            _guard(exchange.failed, exc)
            raise
        finally:
            exchange.restore(token)
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

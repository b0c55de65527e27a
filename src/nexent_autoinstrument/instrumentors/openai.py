"""The openai SDK (1.x, 2.x and 3.x): its request chokepoint and its own stream classes.

Every API call of the SDK, sync or async, goes through ``SyncAPIClient.request`` /
``AsyncAPIClient.request`` in ``openai._base_client``: create, parse, the ``stream()``
helpers, ``with_raw_response`` and ``with_streaming_response``, Azure and any
OpenAI-compatible ``base_url``. Wrapping that method once, and choosing what to measure from
the endpoint table in ``adapters.openai``, starts and ends every call.

Streams are measured inside the SDK's own ``Stream`` and ``AsyncStream`` classes, whose
construction (``__stream__``), iteration (``__iter__``/``__aiter__``, ``__next__``/``__anext__``)
and ``close`` are patched: the
caller gets the SDK's genuine object back (type, repr, copy, the raw response's parse cache),
however it was made, including ``raw.parse()`` long after the request. Streams read through the
raw accessors (``iter_lines()``, ``iter_bytes()``, ``text()``...) are measured from the bytes by
the httpx layer instead. Patches are applied by a post-import hook: the agent never imports
openai itself.
"""

from __future__ import annotations

import contextlib
import json
import sys
import weakref
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from .. import bootstrap, lifecycle
from .. import conventions as names
from ..adapters.openai import endpoint_for, read_response
from ..guard import report_internal_error
from ..lifecycle import Call
from ..streams import ItemStream, ameasure, anext_measured, measure, next_measured
from .exchange import observe_body

SUPPORTED = ("openai >= 1.40.0, < 4",)
#: The SDK marks ``with_raw_response`` / ``with_streaming_response`` requests with this header.
_RAW_RESPONSE_HEADER = "x-stainless-raw-response"


class _State:
    active = False
    telemetry: Any = None
    raw_types: tuple[Any, ...] = ()
    #: Servers (host:port) that answered 400 to an injected ``stream_options``: never asked again.
    rejects_stream_options: set[str] = set()


# -- starting a call --------------------------------------------------------------------------------

def _effective_body(options: Any) -> dict[str, Any]:
    """The JSON body the SDK will send: ``json_data`` with ``extra_body`` merged over it."""
    body = getattr(options, "json_data", None)
    body = body if isinstance(body, dict) else {}
    extra = getattr(options, "extra_json", None)
    return {**body, **extra} if isinstance(extra, dict) and extra else body


def _is_raw_response(options: Any) -> bool:
    headers = getattr(options, "headers", None)
    return isinstance(headers, dict) and any(str(k).lower() == _RAW_RESPONSE_HEADER for k in headers)


def _start(telemetry: Any, client: Any, options: Any, stream_kwarg: Any) -> Call | None:
    endpoint = endpoint_for(str(getattr(options, "method", "")), str(getattr(options, "url", "") or ""))
    if endpoint is None:
        return None
    body = _effective_body(options)
    stream = bool(stream_kwarg or body.get("stream"))
    # Ask the server for usage at the end of the stream only where nobody can tell: the user did
    # not ask for stream_options anywhere, will not read the raw bytes, and the host accepts it.
    inject = (stream and telemetry.settings.inject_stream_usage and endpoint.accepts_stream_options
              and "stream_options" not in body and not _is_raw_response(options)
              and _server_of(getattr(client, "base_url", None)) not in _State.rejects_stream_options)
    if inject:
        options.json_data = {**(options.json_data or {}), "stream_options": {"include_usage": True}}
    return lifecycle.start_http_call(
        telemetry, endpoint, body, getattr(client, "base_url", None), stream=stream,
        azure="azure" in type(client).__name__.lower(), usage_expected=True if inject else None,
        drop_usage_only=inject)


def _telemetry() -> Any:
    return _State.telemetry or bootstrap.current_telemetry()


def _server_of(url: Any) -> str:
    """``host:port`` of an httpx URL (two servers on one host are two servers)."""
    return f"{getattr(url, 'host', '')}:{getattr(url, 'port', None) or getattr(url, 'scheme', '')}"


def _guarded_start(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
    telemetry = _telemetry()
    if telemetry is None or not _State.active:
        return None
    try:
        options = kwargs.get("options", args[1] if len(args) > 1 else None)
        return None if options is None else _start(telemetry, client, options, kwargs.get("stream"))
    except Exception as exc:
        report_internal_error("openai.start", exc)
        return None


def _retry_without_injection(call: Call, exc: BaseException, args: tuple[Any, ...],
                             kwargs: dict[str, Any]) -> bool:
    """A server refused the ``stream_options`` we added (400): send the user's own request
    again, once, and never inject for that host again. Without the agent the call succeeds."""
    if not call.drop_usage_only or getattr(exc, "status_code", None) != 400:
        return False
    options: Any = kwargs.get("options", args[1] if len(args) > 1 else None)
    body = dict(getattr(options, "json_data", None) or {})
    body.pop("stream_options", None)
    options.json_data = body
    _State.rejects_stream_options.add(_server_of(getattr(getattr(exc, "request", None), "url", None)))
    call.drop_usage_only = False
    return True


def _keep_answer(call: Call) -> None:
    """The server answered 2xx but the SDK failed to parse the answer (a validation error, a
    ``length`` finish reason under ``parse()``): the tokens were generated and billed, keep them."""
    exchange = call.exchange
    if exchange is None or exchange.status is None or exchange.status >= 300:
        return
    with contextlib.suppress(Exception):  # the body is not read, or not JSON: nothing to keep
        read_response(call.tracker, json.loads(exchange.response().content))


# -- what the request returns -----------------------------------------------------------------------

#: Raw responses of streamed calls, by the id of their HTTP response: ``raw.parse()`` may make
#: the SDK stream long after the request, and the stream then finds its call here.
_raw_stream_calls: dict[int, tuple[Any, Call]] = {}


def _finish_value(call: Call, value: Any, is_async: bool) -> None:
    if isinstance(value, _State.raw_types):
        http = value.http_response
        if http.is_stream_consumed:  # with_raw_response of a whole answer: the body is read
            with contextlib.suppress(ValueError):
                read_response(call.tracker, json.loads(http.content))
            lifecycle.end(call.tracker)
        else:  # measured as it is read: parsed into a stream, or through the raw accessors
            key = id(http)
            _raw_stream_calls[key] = (weakref.ref(http, lambda _ref: _raw_stream_calls.pop(key, None)), call)
            observe_body(_telemetry(), call, http, is_async)
    elif id(value) in _streams:  # a stream found its call while the SDK made it (_make_stream)
        observe_body(_telemetry(), call, value.response, is_async)
    else:
        read_response(call.tracker, value)
        lifecycle.end(call.tracker)


def _guarded_finish(call: Call, value: Any, is_async: bool) -> None:
    try:
        _finish_value(call, value, is_async)
    except Exception as exc:
        report_internal_error("openai.finish", exc)


def _sync_request(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _guarded_start(client, args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    with lifecycle.sending(call):
        while True:  # a second time only if a server refused the stream_options we added
            try:
                value = wrapped(*args, **kwargs)
                break
            except Exception as exc:
                if not _retry_without_injection(call, exc, args, kwargs):
                    _keep_answer(call)
                    raise
    _guarded_finish(call, value, False)
    return value


async def _async_request(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _guarded_start(client, args, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    with lifecycle.sending(call):
        while True:
            try:
                value = await wrapped(*args, **kwargs)
                break
            except Exception as exc:
                if not _retry_without_injection(call, exc, args, kwargs):
                    _keep_answer(call)
                    raise
    _guarded_finish(call, value, True)
    return value


# -- the SDK's stream classes -------------------------------------------------------------------------

#: SDK streams under measurement, by id; an entry leaves when its stream is collected. An
#: ``ItemStream`` holds no reference to its stream, so this keeps no stream alive.
_streams: dict[int, ItemStream] = {}


def _call_of(stream: Any) -> Call | None:
    call = lifecycle.current_llm_call.get()  # made inside the request (create(stream=True))
    if call is not None:
        return call
    entry = _raw_stream_calls.pop(id(stream.response), None)  # made by raw.parse() later
    if entry is not None and entry[0]() is stream.response:
        return entry[1]
    return None


def _make_stream(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Stream.__stream__``, called once by the SDK's ``__init__``: the stream finds its call.
    The SDK's item iterator is handed back untouched; iterating and ``next()`` are measured."""
    inner = wrapped(*args, **kwargs)
    try:
        call = _call_of(instance)
        if call is not None and not call.tracker.finished:
            key, tracker = id(instance), call.tracker

            def collected(_ref: Any) -> None:  # may run inside the garbage collector: only records
                _streams.pop(key, None)
                lifecycle.suspend(tracker, names.ABANDONED)

            _streams[key] = ItemStream(tracker, call.endpoint.read_item or _count_only, call.drop_usage_only,
                                       weakref.ref(instance, collected))
    except Exception as exc:
        report_internal_error("openai.stream", exc)
    return inner


def _count_only(tracker: Any, item: Any) -> None:
    """For endpoints whose stream items carry nothing to measure beyond their count."""


def _iterate(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Stream.__iter__``/``AsyncStream.__aiter__``: a loop over the SDK's items, measured, in
    place of the SDK's own loop (and named like it); a loop that breaks off ends the call."""
    item_stream = _streams.get(id(instance))
    if item_stream is None:
        return wrapped(*args, **kwargs)
    inner = instance._iterator
    items: Any = ameasure(item_stream, inner) if hasattr(inner, "__anext__") else measure(item_stream, inner)
    items.__name__, items.__qualname__ = wrapped.__name__, wrapped.__qualname__
    return items


def _next(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Stream.__next__``: one item, measured."""
    item_stream = _streams.get(id(instance))
    return wrapped(*args, **kwargs) if item_stream is None else next_measured(item_stream, wrapped)


async def _anext(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``AsyncStream.__anext__``: one item, measured."""
    item_stream = _streams.get(id(instance))
    if item_stream is None:
        return await wrapped(*args, **kwargs)
    return await anext_measured(item_stream, wrapped)


def _close(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    item_stream = _streams.get(id(instance))
    if item_stream is None:
        return wrapped(*args, **kwargs)
    return lifecycle.close_then_end(wrapped, item_stream.tracker, *args)


async def _aclose(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    item_stream = _streams.get(id(instance))
    if item_stream is None:
        return await wrapped(*args, **kwargs)
    return await lifecycle.aclose_then_end(wrapped, item_stream.tracker, *args)


#: (module, attribute, wrapper) of every patch; undone by ``uninstrument``.
_PATCHES: tuple[tuple[str, str, Any], ...] = (
    ("openai._base_client", "SyncAPIClient.request", _sync_request),
    ("openai._base_client", "AsyncAPIClient.request", _async_request),
    ("openai._streaming", "Stream.__stream__", _make_stream),
    ("openai._streaming", "Stream.__iter__", _iterate),
    ("openai._streaming", "Stream.__next__", _next),
    ("openai._streaming", "Stream.close", _close),
    ("openai._streaming", "AsyncStream.__stream__", _make_stream),
    ("openai._streaming", "AsyncStream.__aiter__", _iterate),
    ("openai._streaming", "AsyncStream.__anext__", _anext),
    ("openai._streaming", "AsyncStream.close", _aclose),
)


def _patch(module: Any) -> None:
    if not _State.active:
        return
    try:
        raw_types: list[type] = []
        for module_name, class_name in (("openai._response", "BaseAPIResponse"),
                                        ("openai._legacy_response", "LegacyAPIResponse")):
            cls = getattr(__import__(module_name, fromlist=[class_name]), class_name, None)
            if isinstance(cls, type):
                raw_types.append(cls)
        _State.raw_types = tuple(raw_types)
        for module_name, target, wrapper in _PATCHES:
            owner_name, method = target.split(".")
            owner = getattr(sys.modules[module_name], owner_name)
            if not isinstance(owner.__dict__.get(method), wrapt.FunctionWrapper):
                wrapt.wrap_function_wrapper(module_name, target, wrapper)
    except Exception as exc:
        report_internal_error("openai.patch", exc)


class OpenAIInstrumentor(BaseInstrumentor):
    """Traces and measures every openai SDK call. ``instrument(telemetry=...)`` is for tests."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return SUPPORTED

    def _instrument(self, **kwargs: Any) -> None:
        _State.active = True
        _State.telemetry = kwargs.get("telemetry")
        wrapt.register_post_import_hook(_patch, "openai")

    def _uninstrument(self, **kwargs: Any) -> None:
        _State.active = False
        _State.telemetry = None
        for module_name, target, _ in _PATCHES:
            module = sys.modules.get(module_name)
            if module is None:
                continue
            owner_name, method = target.split(".")
            owner = getattr(module, owner_name)
            current = owner.__dict__.get(method)
            if isinstance(current, wrapt.FunctionWrapper):
                setattr(owner, method, current.__wrapped__)

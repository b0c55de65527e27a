"""The openai SDK (1.x, 2.x and 3.x), patched at its one chokepoint.

Every API call of the SDK, sync or async, goes through ``SyncAPIClient.request`` /
``AsyncAPIClient.request`` in ``openai._base_client``: create, parse, the ``stream()``
helpers, ``with_raw_response`` and ``with_streaming_response``, Azure and any
OpenAI-compatible ``base_url``. Wrapping that method once, and choosing what to measure
from the endpoint table in ``adapters.openai``, covers them all. The patch is applied by a
post-import hook, so the agent never imports openai itself.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator
from typing import Any

import wrapt
from opentelemetry import context, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from .. import bootstrap
from .. import conventions as names
from ..adapters.openai import Endpoint, endpoint_for, provider_for, read_response, request_attributes
from ..guard import report_internal_error
from ..streams import AsyncTracedStream, TracedStream, abandon_call, end_call
from .context import current_llm_call, take_over_manual_call

SUPPORTED = ("openai >= 1.40.0, < 4",)
_TARGETS = (("SyncAPIClient.request", False), ("AsyncAPIClient.request", True))


class _State:
    active = False
    telemetry: Any = None
    stream_types: tuple[type, ...] = ()
    raw_types: tuple[type, ...] = ()


def _server(client: Any) -> dict[str, Any]:
    url = getattr(client, "base_url", None)
    host = getattr(url, "host", None)
    if not host:
        return {}
    port = getattr(url, "port", None) or (443 if getattr(url, "scheme", "") == "https" else 80)
    return {names.SERVER_ADDRESS: host, names.SERVER_PORT: port}


class _Call:
    """One traced SDK request: its tracker, endpoint, and whether we injected stream usage."""

    __slots__ = ("attempts", "drop_usage_only", "endpoint", "stream", "tracker")

    def __init__(self, tracker: Any, endpoint: Endpoint, stream: bool, drop_usage_only: bool) -> None:
        self.attempts = 0  # HTTP attempts, counted by the httpx layer (retries = attempts - 1)
        self.tracker = tracker
        self.endpoint = endpoint
        self.stream = stream
        self.drop_usage_only = drop_usage_only


def _start(telemetry: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call | None:
    options = kwargs.get("options", args[1] if len(args) > 1 else None)
    endpoint = endpoint_for(getattr(options, "url", "") or "")
    if endpoint is None or options is None:
        return None
    body = getattr(options, "json_data", None)
    body = body if isinstance(body, dict) else {}
    stream = bool(kwargs.get("stream") or body.get("stream"))
    settings = telemetry.settings
    inject = (stream and settings.inject_stream_usage and endpoint.accepts_stream_options
              and body.get("stream_options") is None)
    if inject:
        options.json_data = {**body, "stream_options": {"include_usage": True}}
    attributes = {**_server(client), **request_attributes(body, settings.capture_content)}
    model = body.get("model")
    take_over_manual_call()
    usage_expected = inject or bool((body.get("stream_options") or {}).get("include_usage"))
    tracker = telemetry.start_call(endpoint.operation, model if isinstance(model, str) else None,
                                   provider=_provider(client), stream=stream, attributes=attributes,
                                   usage_expected=usage_expected)
    return _Call(tracker, endpoint, stream, inject)


def _provider(client: Any) -> str:
    name = type(client).__name__.lower()
    if "azure" in name:
        return "azure.ai.openai"
    return provider_for(str(getattr(getattr(client, "base_url", None), "host", "") or ""))


def _ignore_item(tracker: Any, item: Any) -> None:
    """For endpoints whose stream items carry nothing to measure beyond their count."""


def _finish_value(call: _Call, value: Any, is_async: bool) -> Any:
    """What the user gets back: streams and unread raw responses are proxied, the rest is untouched."""
    if isinstance(value, _State.stream_types):
        proxy = AsyncTracedStream if is_async else TracedStream
        return proxy(value, call.tracker, call.endpoint.read_item or _ignore_item, call.drop_usage_only)
    if isinstance(value, _State.raw_types):
        return _raw_response(call, value, is_async)
    read_response(call.tracker, value)
    end_call(call.tracker, None)
    return value


def _raw_response(call: _Call, raw: Any, is_async: bool) -> Any:
    http = getattr(raw, "http_response", None)
    if not call.stream and http is not None and getattr(http, "is_stream_consumed", False):
        with contextlib.suppress(ValueError):  # the body is read: usage without touching the SDK's parse cache
            read_response(call.tracker, json.loads(http.content))
        end_call(call.tracker, None)
        return raw
    return (AsyncTracedRawResponse if is_async else TracedRawResponse)(raw, call)


class TracedRawResponse(wrapt.ObjectProxy):
    """A raw response whose body is not read yet (``with_streaming_response``)."""

    def __init__(self, raw: Any, call: _Call) -> None:
        super().__init__(raw)
        self._self_call = call

    def _self_parsed(self, value: Any) -> Any:
        try:
            return _finish_value(self._self_call, value, isinstance(self, AsyncTracedRawResponse))
        except Exception as exc:
            report_internal_error("openai.parse", exc)
            return value

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_parsed(self.__wrapped__.parse(*args, **kwargs))

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            end_call(self._self_call.tracker, None, names.CLOSED_EARLY)

    def __del__(self) -> None:
        call = getattr(self, "_self_call", None)
        if call is not None:
            abandon_call(call.tracker)


class AsyncTracedRawResponse(TracedRawResponse):
    """The async form of ``TracedRawResponse``."""

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_parsed(await self.__wrapped__.parse(*args, **kwargs))

    async def close(self) -> Any:
        try:
            return await self.__wrapped__.close()
        finally:
            end_call(self._self_call.tracker, None, names.CLOSED_EARLY)


def _guarded_start(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call | None:
    telemetry = _State.telemetry or bootstrap.current_telemetry()
    if telemetry is None or not _State.active:
        return None
    try:
        return _start(telemetry, client, args, kwargs)
    except Exception as exc:
        report_internal_error("openai.start", exc)
        return None


def _guarded_finish(call: _Call, value: Any, is_async: bool) -> Any:
    try:
        return _finish_value(call, value, is_async)
    except Exception as exc:
        report_internal_error("openai.finish", exc)
        return value


@contextlib.contextmanager
def _in_call(call: _Call) -> Iterator[None]:
    """While the SDK sends the request: the call's span is current (HTTP attempts nest under
    it), the httpx layer sees the call, and a failure ends the call. Undone before returning,
    so a stream's span never stays current in the caller."""
    token = context.attach(trace.set_span_in_context(call.tracker.span))
    call_token = current_llm_call.set(call)
    try:
        yield
    except BaseException as exc:
        end_call(call.tracker, exc)
        raise
    finally:
        current_llm_call.reset(call_token)
        context.detach(token)


def _sync_request(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _guarded_start(client, args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    with _in_call(call):
        value = wrapped(*args, **kwargs)
    return _guarded_finish(call, value, False)


async def _async_request(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _guarded_start(client, args, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    with _in_call(call):
        value = await wrapped(*args, **kwargs)
    return _guarded_finish(call, value, True)


def _patch(module: Any) -> None:
    if not _State.active:
        return
    try:
        import openai
        from openai import _base_client

        _State.stream_types = (openai.Stream, openai.AsyncStream)
        raw_types: list[type] = []
        for module_name, class_name in (("openai._response", "BaseAPIResponse"),
                                        ("openai._legacy_response", "LegacyAPIResponse")):
            cls = getattr(__import__(module_name, fromlist=[class_name]), class_name, None)
            if isinstance(cls, type):
                raw_types.append(cls)
        _State.raw_types = tuple(raw_types)
        for target, is_async in _TARGETS:
            owner, method = target.split(".")
            if not isinstance(getattr(getattr(_base_client, owner), method), wrapt.FunctionWrapper):
                wrapt.wrap_function_wrapper(_base_client, target, _async_request if is_async else _sync_request)
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
        import sys

        base = sys.modules.get("openai._base_client")
        if base is None:
            return
        for target, _ in _TARGETS:
            owner_name, method = target.split(".")
            owner = getattr(base, owner_name)
            current = owner.__dict__.get(method)
            if isinstance(current, wrapt.FunctionWrapper):
                setattr(owner, method, current.__wrapped__)

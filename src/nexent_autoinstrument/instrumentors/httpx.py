"""httpx and httpx2 (the same API; openai 3.x sends through httpx2), patched at ``Client.send``
and ``AsyncClient.send``.

Every request gets a CLIENT span with the HTTP semantic conventions, W3C trace context in its
headers and an ``http.client.request.duration`` record. The span ends when the body has been
read or the response closed, not when the headers arrive: the response's byte stream is
wrapped, so the agent sees exactly the bytes the user pulls, when the user pulls them.

Under an openai call (``lifecycle.current_llm_call``) each attempt is a child of the openai span,
and the response headers worth having go on that span; the call is measured there, once. A
request to an LLM path of the endpoint table (OpenAI-compatible, Anthropic, Ollama, Gemini) sent
with httpx directly, or by an SDK that sends with httpx (ollama, google-genai), is measured here,
as an LLM call, by the same engine and the same readers, fed from the body as the user reads it.

When the official opentelemetry-instrumentation-httpx is active it owns the HTTP spans and the
propagation; this layer then only measures raw LLM calls.
"""

from __future__ import annotations

import sys
from typing import Any

import wrapt

from .. import bootstrap, lifecycle
from ..adapters.endpoints import HTTP_CLIENTS, endpoint_for
from ..adapters.sse import decode_json
from ..guard import report_internal_error
from ..imports import when_imported
from .body import MAX_JSON_BODY, guarded
from .exchange import Exchange, observe_response, unwatch_request, watch_request


def _request_body(request: Any) -> dict[str, Any]:
    try:
        content = request.content
    except Exception:  # a streamed request body that was not read: nothing to learn from it
        return {}
    if not content or len(content) > MAX_JSON_BODY:
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


class _State:
    telemetry: Any = None
    active: dict[str, bool] = {}


def _begin(library: str, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exchange | None:
    if not _State.active.get(library):
        return None
    telemetry = _State.telemetry or bootstrap.current_telemetry()
    if telemetry is None:
        return None
    request = _request_of(args, kwargs)
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
    exchange = Exchange(telemetry, request.method, request.url, library, own_span, call, owns_call,
                        bool(kwargs.get("stream", False)))
    exchange.inject(request.headers)
    return exchange


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs["request"]


def _guarded_begin(library: str, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exchange | None:
    try:
        return _begin(library, client, args, kwargs)
    except Exception as exc:
        report_internal_error("httpx.begin", exc)
        return None


def _make_send(module_name: str) -> tuple[Any, Any]:
    def send(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        exchange = _guarded_begin(module_name, client, args, kwargs)
        if exchange is None:
            return wrapped(*args, **kwargs)
        read_body = not kwargs.get("stream", False)
        module, request = sys.modules[module_name], _request_of(args, kwargs)
        with exchange.sending():
            body = watch_request(module, request, exchange, False)
            try:
                response = wrapped(*args, **{**kwargs, "stream": True})
            except BaseException as exc:
                guarded(exchange.failed, exc)
                raise
            finally:
                unwatch_request(request, body)
        observe_response(module, response, exchange, False)
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
        module, request = sys.modules[module_name], _request_of(args, kwargs)
        with exchange.sending():
            body = watch_request(module, request, exchange, True)
            try:
                response = await wrapped(*args, **{**kwargs, "stream": True})
            except BaseException as exc:
                guarded(exchange.failed, exc)
                raise
            finally:
                unwatch_request(request, body)
        observe_response(module, response, exchange, True)
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
        telemetry = _State.telemetry or bootstrap.current_telemetry()
        if telemetry is not None:  # (made now, when the library is imported, not by the first request)
            telemetry.prepare()
    except Exception as exc:
        report_internal_error("httpx.patch", exc)


#: The releases supported, per library.
SUPPORTED = HTTP_CLIENTS


def activate(library: str, telemetry: Any = None) -> None:
    """Trace and measure ``library``'s requests from now on (patched as soon as it is imported).
    ``telemetry``: where to record (tests); by default the agent's pipeline."""
    _State.active[library] = True
    if telemetry is not None:
        _State.telemetry = telemetry
    when_imported(library, _patch)


def deactivate(library: str) -> None:
    """Stop, and give ``Client.send``/``AsyncClient.send`` back."""
    _State.active[library] = False
    if not any(_State.active.values()):
        _State.telemetry = None
    module = sys.modules.get(library)
    if module is None:
        return
    for owner_name in ("Client", "AsyncClient"):
        owner = getattr(module, owner_name)
        current = owner.__dict__.get("send")
        if isinstance(current, wrapt.FunctionWrapper):
            owner.send = current.__wrapped__

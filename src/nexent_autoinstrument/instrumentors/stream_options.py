"""The one change the agent may make to what a caller sends: ``stream_options.include_usage``
(``LLM_INJECT_STREAM_USAGE``), which asks an OpenAI-compatible server for a stream's usage.

A server that does not take the option answers 400 and names it. Only then is the request sent
again, without it, once per host: at the client's transport hop (``_send_single_request``), below
its event hooks, its redirects and the SDK's retries, so that the caller sees one request and one
answer, as without the agent. A 400 about anything else is the caller's own answer. A host that
refused the option is never asked again, and a later attempt of the same call goes without it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import wrapt

from .. import lifecycle
from ..guard import report_internal_error
from ..imports import when_imported

OPTION = "stream_options"
#: Words a server's 400 uses when it is about the option (its name, or its one field).
_NAMES = (b"stream_options", b"include_usage")
#: Servers (``host:port``) that refused the option: never asked again.
_refused: set[str] = set()


def server_of(url: Any) -> str:
    """``host:port`` of an httpx URL (two servers on one host are two servers)."""
    return f"{getattr(url, 'host', '')}:{getattr(url, 'port', None) or getattr(url, 'scheme', '')}"


def accepted_by(url: Any) -> bool:
    """Whether the option may be asked of the server at ``url``."""
    return server_of(url) not in _refused


def watch_refusals() -> None:
    """Install the retry at httpx's and httpx2's transport hop, once each is imported."""
    for library in ("httpx", "httpx2"):
        when_imported(library, _patch)


def _patch(module: Any) -> None:
    try:
        for owner, hop in (("Client", _hop), ("AsyncClient", _async_hop)):
            method = getattr(module, owner).__dict__.get("_send_single_request")
            if method is not None and not isinstance(method, wrapt.FunctionWrapper):
                wrapt.wrap_function_wrapper(module, f"{owner}._send_single_request", hop)
    except Exception as exc:
        report_internal_error("stream_options.patch", exc)


def _injected() -> bool:
    """Whether the request being sent carries the option the agent added (the call being sent is
    the SDK layer's, which added it)."""
    call = lifecycle.current_llm_call.get()
    return call is not None and call.drop_usage_only


def _refusal(request: Any, response: Any, body: bytes) -> Any:
    """The request again without the option, if ``body`` (a 400's) names it; else None."""
    if response.status_code != 400 or not any(name in body for name in _NAMES):
        return None
    return _without_option(request)


def _without_option(request: Any) -> Any:
    """``request``, its JSON body without the option (as the caller's own request was)."""
    payload = json.loads(request.content)
    payload.pop(OPTION, None)
    module = sys.modules[type(request).__module__.partition(".")[0]]
    headers = [(name, value) for name, value in request.headers.raw if name.lower() != b"content-length"]
    retried = module.Request(request.method, request.url, headers=headers, json=payload,
                             extensions=request.extensions)
    _refused.add(server_of(request.url))
    call = lifecycle.current_llm_call.get()
    if call is not None:
        call.drop_usage_only = False
    return retried


def _prepared(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, tuple[Any, ...], dict[str, Any]]:
    """Whether this hop sends the option the agent added, and its arguments (without the option
    where its host refused it before). Never raises: a bug of ours sends the request as it is."""
    try:
        if not _injected():
            return False, args, kwargs
        request = args[0] if args else kwargs["request"]
        if not accepted_by(request.url):  # (refused by an earlier attempt)
            return False, (_without_option(request),), {}
        return True, args, kwargs
    except Exception as exc:
        report_internal_error("stream_options.hop", exc)
        return False, args, kwargs


def _retry(request: Any, response: Any, body: bytes) -> Any:
    """The request again without the option, if this 400 is about it; None otherwise (or on a bug of ours)."""
    try:
        return _refusal(request, response, body)
    except Exception as exc:
        report_internal_error("stream_options.refusal", exc)
        return None


def _hop(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    injected, args, kwargs = _prepared(args, kwargs)
    response = wrapped(*args, **kwargs)
    if not injected or response.status_code != 400:
        return response
    retried = _retry(args[0] if args else kwargs["request"], response, response.read())
    if retried is None:
        return response
    response.close()
    return wrapped(retried)


async def _async_hop(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    injected, args, kwargs = _prepared(args, kwargs)
    response = await wrapped(*args, **kwargs)
    if not injected or response.status_code != 400:
        return response
    retried = _retry(args[0] if args else kwargs["request"], response, await response.aread())
    if retried is None:
        return response
    await response.aclose()
    return await wrapped(retried)

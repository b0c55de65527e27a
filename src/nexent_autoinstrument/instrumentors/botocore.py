"""botocore: Amazon Bedrock's runtime calls (``converse``, ``converse_stream``, ``invoke_model``,
``invoke_model_with_response_stream``), made with boto3 directly or by a framework on top of it.

Each patch sits where one fact passes:

- ``BaseClient._make_api_call``: every operation of every client passes here; a Bedrock runtime
  operation of ``adapters.bedrock.OPERATIONS`` starts a call (model and settings from its
  parameters, or from the model's own JSON body), current while botocore sends it, retries
  included. A whole answer is read when it returns; a failure ends the call with botocore's error
  (its class is the service's error code) and the HTTP status.
- ``EventStream.__iter__`` and ``close``: a stream's events are measured as the caller pulls them
  from botocore, which reads and decodes the frames on that pull. A pull that had to wait for
  the network is an arrival; one that found its frame already decoded was waiting for the caller
  (the same judgement the HTTP layers make of each read).
- ``StreamingBody.read`` and ``close``: an ``invoke_model`` answer is read when the caller reads
  its body to the end.

Nothing of the request's headers (credentials, SigV4 signature) is read. The layer sends nothing
and adds no header: botocore signs what it sends.

The official opentelemetry-instrumentation-botocore traces every AWS call; for Bedrock's runtime
it would make a second LLM span per call, with GenAI metrics of its own, and record the error
messages botocore raises, which quote the server. While this layer is on, that instrumentation
leaves the four operations measured here to it (its table's Bedrock runtime entry is replaced,
and put back after): every other AWS call, other Bedrock runtime operations included, it still
traces as before.
"""

from __future__ import annotations

import sys
import time
import weakref
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .. import bootstrap, guest, lifecycle
from .. import conventions as names
from ..adapters import bedrock
from ..adapters.endpoints import request_attributes
from ..guard import report_internal_error
from ..imports import when_imported
from ..lifecycle import Call
from ..streams import ItemStream, measure
from ..timing import ReadTiming
from . import patching
from .body import MAX_JSON_BODY

_clock = time.perf_counter

#: The releases supported.
SUPPORTED = bedrock.BOTOCORE.supported


class _State:
    telemetry: Any = None
    active = False
    #: The official instrumentation's entry for Bedrock's runtime (None: it had none), and whether
    #: this layer replaces it now.
    official_extension: Any = None
    replaced = False


#: Where the official botocore instrumentation keeps its extensions, by service.
_OFFICIAL_EXTENSIONS = "opentelemetry.instrumentation.botocore.extensions"


def _take_over_from_official(module: Any) -> None:
    """The official instrumentation's Bedrock runtime entry becomes a plain extension of its own
    kind that does not trace the operations this layer measures (its module is imported then)."""
    if not _State.active:
        return
    try:
        from opentelemetry.instrumentation.botocore.extensions.types import _AwsSdkExtension as plain

        class _LeftToTheAgent(plain):
            def should_trace_service_call(self) -> bool:
                return self._call_context.operation not in bedrock.OPERATIONS

        table = module._BOTOCORE_EXTENSIONS
        if not _State.replaced:
            _State.official_extension, _State.replaced = table.get(bedrock.SERVICE), True
        table[bedrock.SERVICE] = lambda: _LeftToTheAgent
    except Exception as exc:
        report_internal_error("botocore.official", exc)


# -- starting a call ----------------------------------------------------------------------------------

def _server(client: Any) -> dict[str, Any]:
    parts = urlsplit(str(client.meta.endpoint_url))
    if not parts.hostname:
        return {}
    return {names.SERVER_ADDRESS: parts.hostname,
            names.SERVER_PORT: parts.port or (443 if parts.scheme == "https" else 80)}


class Invocation(NamedTuple):
    """What a call is (its ``Call.endpoint``): the operation, and for ``invoke_model*`` the
    family whose bodies it sends and gets (None for Converse)."""

    operation: bedrock.Operation
    family: bedrock.Family | None


def _start(telemetry: Any, client: Any, operation: bedrock.Operation, params: dict[str, Any]) -> Call:
    model = params.get("modelId")
    model = model if isinstance(model, str) else ""
    capture = telemetry.settings.capture_content
    family = None
    if operation.model_body:
        body = bedrock.model_body(params.get("body"), MAX_JSON_BODY)
        family = bedrock.family_of(model, body)
        attributes = request_attributes(body, capture, family.request_fields)
        kind = family.operation
    else:
        attributes = request_attributes(params, capture, bedrock.CONVERSE_FIELDS)
        kind = "chat"
    lifecycle.take_over_manual_call()
    tracker = lifecycle.begin(telemetry, kind, model, provider=bedrock.PROVIDER, stream=operation.streams,
                              attributes={**_server(client), **attributes}, usage_expected=True)
    return Call(tracker, Invocation(operation, family))


def _guarded_start(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
    if not _State.active:
        return None
    try:
        name = args[0] if args else kwargs.get("operation_name")
        operation = bedrock.OPERATIONS.get(name) if isinstance(name, str) else None
        if operation is None or client.meta.service_model.service_name != bedrock.SERVICE:
            return None
        telemetry = _State.telemetry or bootstrap.current_telemetry()
        if telemetry is None:
            return None
        params = args[1] if len(args) > 1 else kwargs.get("api_params")
        return _start(telemetry, client, operation, params if isinstance(params, dict) else {})
    except Exception as exc:
        report_internal_error("botocore.start", exc)
        return None


def _note_error(tracker: Any, exc: BaseException) -> None:
    """What a botocore error says that is no free text (its message quotes the server's): the
    service's code, the HTTP status and the retries."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return
    error = response.get("Error")
    code = names.identifier(error.get("Code")) if isinstance(error, dict) else None
    if code is not None:
        tracker.annotate({names.LLM_ERROR_CODE: code})
    metadata = response.get("ResponseMetadata")
    if isinstance(metadata, dict):
        _note_metadata(tracker, metadata)


def _note_metadata(tracker: Any, metadata: dict[str, Any]) -> None:
    status, retries = metadata.get("HTTPStatusCode"), metadata.get("RetryAttempts")
    if isinstance(status, int):
        tracker.annotate({"http.response.status_code": status})
    if isinstance(retries, int) and retries > 0:
        tracker.annotate({"llm.request.retries": retries})


# -- what the call returns ------------------------------------------------------------------------------

def _answered(call: Call, result: Any) -> None:
    operation, family = call.endpoint
    tracker = call.tracker
    metadata = result.get("ResponseMetadata")
    if isinstance(metadata, dict):
        _note_metadata(tracker, metadata)
    if operation.answer_key is None:  # Converse: the answer is the result
        bedrock.read_converse(tracker, result)
        lifecycle.end(tracker)
        return
    answer = result.get(operation.answer_key)
    if operation.streams:
        reader = bedrock.read_chunk(family) if family is not None else bedrock.read_converse_event
        _watch_stream(tracker, answer, reader)
    else:
        if isinstance(metadata, dict):
            bedrock.read_answer_headers(tracker, metadata.get("HTTPHeaders"))
        _watch_body(tracker, answer, family or bedrock.OTHER)


def _make_api_call(wrapped: Any, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _guarded_start(client, args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    # (Its span is current while botocore sends, but it goes out through urllib3, none of the
    # agent's HTTP layers: an HTTP request made meanwhile, by an event hook, is not one of its.)
    with lifecycle.Sending(call, over_http=False):  # (which ends the call with the error it raises)
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            _guarded(_note_error, call.tracker, exc)
            raise
    try:
        _answered(call, result)
    except Exception as exc:  # (a bug of ours: the call still ends, with what it has)
        report_internal_error("botocore.answered", exc)
        lifecycle.end(call.tracker)
    return result


def _guarded(action: Any, *args: Any) -> None:
    try:
        action(*args)
    except Exception as exc:
        report_internal_error(f"botocore.{action.__name__.strip('_')}", exc)


# -- event streams (converse_stream, invoke_model_with_response_stream) ----------------------------

#: Event streams under measurement, by id; an entry leaves when its stream is collected. An
#: ``ItemStream`` holds no reference to its stream, so this keeps no stream alive.
_streams: dict[int, tuple[ItemStream, ReadTiming]] = {}


def _watch_stream(tracker: Any, stream: Any, reader: Any) -> None:
    key = id(stream)

    def collected(_ref: Any) -> None:  # may run inside the garbage collector: only records
        _streams.pop(key, None)
        lifecycle.suspend(tracker, names.ABANDONED, by_caller=not tracker.progress.pulling)

    timing = ReadTiming()
    timing.timed = True
    timing.headers_at = timing.read_time = _clock()  # (botocore returns when the headers are in)
    tracker.timed_by(timing)
    _streams[key] = (ItemStream(tracker, reader, None, weakref.ref(stream, collected)), timing)


def _timed_pulls(events: Any, timing: ReadTiming, tracker: Any) -> Any:
    """botocore's events, each pull timed as a read: how long it waited (for the network, when
    botocore had no decoded frame left), and how long the caller was away before it."""
    returned = timing.read_time
    pull = iter(events).__next__
    while True:
        asked = _clock()
        try:
            event = pull()
        except StopIteration:
            return
        except Exception as exc:  # (an exception event of the stream: botocore's EventStreamError)
            _guarded(_note_error, tracker, exc)
            raise
        now = timing.read_time = _clock()
        timing.asked, timing.previous_read_time = asked, returned
        timing.reader_seconds += asked - returned
        returned = now
        yield event


def _iterate(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``EventStream.__iter__``: botocore's events, measured."""
    entry = _streams.get(id(instance))
    if entry is None:
        return wrapped(*args, **kwargs)
    item_stream, timing = entry
    return measure(item_stream, _timed_pulls(wrapped(*args, **kwargs), timing, item_stream.tracker))


def _close_stream(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    entry = _streams.get(id(instance))
    if entry is None:
        return wrapped(*args, **kwargs)
    return lifecycle.close_then_end(wrapped, entry[0].tracker, *args)


# -- whole answers (invoke_model) ------------------------------------------------------------------------

class _Body:
    """An ``invoke_model`` answer's body while the caller has not read it to its end."""

    __slots__ = ("chunks", "family", "ref", "returned_at", "size", "tracker")

    def __init__(self, tracker: Any, family: bedrock.Family, ref: Any) -> None:
        self.tracker = tracker
        self.family = family
        self.ref = ref
        #: When botocore returned the answer: the server had generated all of it by then (its
        #: headers came after), so the call ends there, however late the caller reads the body.
        self.returned_at = _clock()
        self.chunks: list[bytes] = []
        self.size = 0


#: ``invoke_model`` bodies not read to their end, by id; an entry leaves when its body is collected.
_bodies: dict[int, _Body] = {}


def _forget_inherited() -> None:
    _streams.clear()
    _bodies.clear()


guest.on_fork(_forget_inherited)  # (a fork child owns none of its parent's calls: its reads are its own)


def _watch_body(tracker: Any, body: Any, family: bedrock.Family) -> None:
    key = id(body)

    def collected(_ref: Any) -> None:  # may run inside the garbage collector: only records
        if _bodies.pop(key, None) is not None:
            lifecycle.suspend(tracker, names.ABANDONED)

    _bodies[key] = _Body(tracker, family, weakref.ref(body, collected))


def _whole(instance: Any, body: _Body, data: bytes | None) -> None:
    """The caller has read the whole body (``data``: its bytes, if the agent saw them all)."""
    if _bodies.pop(id(instance), None) is None:
        return
    tracker = body.tracker
    if data is not None:
        body.family.read_response(tracker, bedrock.model_body(data, MAX_JSON_BODY))
    lifecycle.end(tracker, at=body.returned_at)


def _length(instance: Any) -> int | None:
    length = getattr(instance, "_content_length", None)
    return int(length) if isinstance(length, (int, str)) and str(length).isdigit() else None


def _read_some(body: _Body, instance: Any, asked: Any, chunk: bytes) -> None:
    """``chunk`` was read, of at most ``asked`` bytes (None or negative: all the rest)."""
    if body.size <= MAX_JSON_BODY:
        body.chunks.append(chunk)
    body.size += len(chunk)
    length = _length(instance)
    if (asked is None or asked < 0 or (not chunk and asked != 0)
            or (length is not None and body.size >= length)):
        _whole(instance, body, b"".join(body.chunks) if body.size <= MAX_JSON_BODY else None)


def _reading(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], got: Any) -> Any:
    """A read of a watched body; ``got(result, args, kwargs)``: the bytes it read, and how many were asked."""
    body = _bodies.get(id(instance))
    if body is None:
        return wrapped(*args, **kwargs)
    try:
        result = wrapped(*args, **kwargs)
    except Exception as exc:
        _bodies.pop(id(instance), None)
        lifecycle.end(body.tracker, exc)
        raise
    try:
        chunk, asked = got(result, args, kwargs)
        if isinstance(chunk, bytes):
            _read_some(body, instance, asked, chunk)
    except Exception as exc:
        report_internal_error("botocore.read", exc)
    return result


def _read(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``StreamingBody.read`` (also under ``iter_lines``, ``iter_chunks`` and iteration)."""
    return _reading(wrapped, instance, args, kwargs,
                    lambda chunk, args, kwargs: (chunk, args[0] if args else kwargs.get("amt")))


def _read_into(count: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bytes, int]:
    buffer = memoryview(args[0] if args else kwargs["b"])
    return bytes(buffer[:count]), len(buffer)


def _readinto(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``StreamingBody.readinto`` (what ``io`` readers on top of the body call)."""
    return _reading(wrapped, instance, args, kwargs, _read_into)


def _readlines(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``StreamingBody.readlines``: the rest of the body at once."""
    return _reading(wrapped, instance, args, kwargs, lambda lines, args, kwargs: (b"".join(lines), None))


def _consumed(instance: Any) -> bool:
    """Whether the body was read to its end through its raw stream (``with body as raw:``)."""
    length = _length(instance)
    try:
        return length is not None and instance._raw_stream.tell() >= length
    except Exception:  # (a raw stream that cannot tell)
        return False


def _close_body(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``StreamingBody.close`` and ``__exit__``: a body the agent did not see read to its end ends
    its call: complete if its raw stream was read to the end, else closed early."""
    body = _bodies.get(id(instance))
    if body is None:
        return wrapped(*args, **kwargs)
    if _consumed(instance):
        try:
            return wrapped(*args, **kwargs)
        finally:
            _whole(instance, body, None)
    _bodies.pop(id(instance), None)
    return lifecycle.close_then_end(lambda: wrapped(*args, **kwargs), body.tracker)


# -- switching on and off --------------------------------------------------------------------------------

#: What is patched: (module, attribute path, wrapper).
_PATCHES = (("botocore.client", "BaseClient._make_api_call", _make_api_call),
            ("botocore.eventstream", "EventStream.__iter__", _iterate),
            ("botocore.eventstream", "EventStream.close", _close_stream),
            ("botocore.response", "StreamingBody.read", _read),
            ("botocore.response", "StreamingBody.readinto", _readinto),
            ("botocore.response", "StreamingBody.readlines", _readlines),
            ("botocore.response", "StreamingBody.close", _close_body),
            ("botocore.response", "StreamingBody.__exit__", _close_body))


def _patch(module: Any) -> None:
    if not _State.active:
        return
    try:
        patching.apply(_PATCHES)
        telemetry = _State.telemetry or bootstrap.current_telemetry()
        if telemetry is not None:  # (made now, when the library is imported, not by the first call)
            telemetry.prepare()
    except Exception as exc:
        report_internal_error("botocore.patch", exc)


def activate(library: str = "botocore", telemetry: Any = None) -> None:
    """Measure Bedrock runtime calls from now on (patched as soon as botocore's client is imported).
    ``telemetry``: where to record (tests); by default the agent's pipeline."""
    _State.active = True
    if telemetry is not None:
        _State.telemetry = telemetry
    when_imported("botocore.client", _patch)
    when_imported(_OFFICIAL_EXTENSIONS, _take_over_from_official)


def deactivate(library: str = "botocore") -> None:
    """Stop, and give botocore its functions back."""
    _State.active = False
    _State.telemetry = None
    official = sys.modules.get(_OFFICIAL_EXTENSIONS)
    if official is not None and _State.replaced:
        if _State.official_extension is None:
            official._BOTOCORE_EXTENSIONS.pop(bedrock.SERVICE, None)
        else:
            official._BOTOCORE_EXTENSIONS[bedrock.SERVICE] = _State.official_extension
        _State.official_extension, _State.replaced = None, False
    patching.remove(_PATCHES)

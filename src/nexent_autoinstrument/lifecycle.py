"""When LLM calls start and end: the one owner of a call's lifecycle.

Every layer (the openai SDK, raw httpx/httpx2 calls, the manual API) starts its calls with
``begin``/``start_http_call`` and ends them with ``end``. A call that stops being read without
ending (a ``break``, a dropped stream, a closed response while the SDK still reads) is
``suspend``-ed: it ends, with the time it stopped, at the next safe point. That is a small
reaper thread that never depends on traffic, or process exit; never the garbage collector, which
may interrupt code holding the locks that ending a call takes. The reaper sleeps until a call is
suspended, woken through a socket (a send takes no lock, so the collector may wake it). At exit
(``end_unfinished``, before the providers flush) every call still open is ended with the data it has.

Outcomes: see ``conventions.OUTCOMES`` and the README's outcome table.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

from opentelemetry import context, trace

from . import conventions as names
from .guard import report_internal_error
from .tracker import CallTracker, Telemetry, clock

T = TypeVar("T")

#: The HTTP call the SDK layer is sending right now: the HTTP layer then knows the call is
#: measured already, and where attempts and response headers belong.
current_llm_call: ContextVar[Call | None] = ContextVar("nexent_current_llm_call", default=None)
#: The manual API's call around the user's code; an automatic call inside it is the more precise
#: measurement, so it takes over the metrics and the manual call keeps only its span.
current_manual_call: ContextVar[CallTracker | None] = ContextVar("nexent_current_manual_call", default=None)

#: Calls started and not finished yet, by id: what exit has to end.
_live: dict[int, CallTracker] = {}
#: Suspended calls waiting for the reaper.
_pending: deque[CallTracker] = deque()
#: Other ends that a finalizer handed over (an HTTP exchange whose body was dropped).
_deferred: deque[tuple[Callable[[str, float], None], str, float]] = deque()
#: A call broken off (``break``) can still be resumed for this long before it is ended.
RESUME_GRACE_SECONDS = 0.5
REAPER_TICK_SECONDS = 0.2
#: How long a cancelled call waits for the cancellation to unwind before it is called cancelled.
CANCELLATION_VERDICT_SECONDS = 1.0
_reaper_pid: int | None = None
#: The reaper's socket pair: it waits on the first; a byte sent on the second (non-blocking) wakes it.
_wake: tuple[socket.socket, socket.socket] | None = None


# -- start ------------------------------------------------------------------------------------------

def begin(telemetry: Telemetry, operation: str, model: str | None, *, provider: str = "openai",
          stream: bool = False, attributes: dict[str, Any] | None = None,
          usage_expected: bool = False, adopt: Any = None) -> CallTracker:
    """Open the span of one LLM call and start its clock. ``usage_expected``: the response will
    carry usage, so there is no need to keep text for an estimate. ``adopt``: the span an SDK
    started for this call (``adoption.Adoption``), measured instead of starting one."""
    ensure_reaper()
    tracker = CallTracker(telemetry, operation, model or "unknown", provider, stream, attributes, usage_expected,
                          adopt)
    _live[id(tracker)] = tracker
    return tracker


class Call:
    """An LLM call made over HTTP, as the SDK layer and the HTTP layer share it while in flight."""

    __slots__ = ("attempts", "drop_usage_only", "endpoint", "exchange", "tracker")

    def __init__(self, tracker: CallTracker, endpoint: Any, drop_usage_only: bool = False) -> None:
        self.tracker = tracker
        self.endpoint = endpoint
        #: The usage-only chunk at the end of a stream was asked for by the agent, not the user.
        self.drop_usage_only = drop_usage_only
        self.attempts = 0  # HTTP attempts, counted by the HTTP layer (retries = attempts - 1)
        self.exchange: Any = None  # the HTTP layer's latest request/response of this call


def take_over_manual_call() -> None:
    """An automatic layer measures a call made inside a manual one: the manual one records no metrics."""
    outer = current_manual_call.get()
    if outer is not None:
        outer.delegated = True


def server_attributes(url: Any) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of an httpx-style URL (port from the scheme if absent)."""
    host = getattr(url, "host", None)
    if not host:
        return {}
    port = getattr(url, "port", None) or (443 if getattr(url, "scheme", "") == "https" else 80)
    return {names.SERVER_ADDRESS: host, names.SERVER_PORT: port}


def start_http_call(telemetry: Telemetry, endpoint: Any, body: dict[str, Any], url: Any, *,
                    azure: bool = False, stream: bool | None = None, usage_expected: bool | None = None,
                    drop_usage_only: bool = False, adopt: Any = None) -> Call:
    """Start an LLM call sent over HTTP (by an SDK or by raw httpx): what the endpoint (see
    ``adapters.endpoints``) reads from the request body and URL (model, streaming, provider),
    server attributes from the URL. An automatic layer is the more precise measurement, so a
    manual call around it hands over its metrics."""
    from .adapters.endpoints import request_attributes

    if stream is None:
        stream = endpoint.is_streamed(body)
    if usage_expected is None:
        usage_expected = endpoint.usage_expected(body)
    attributes = {**server_attributes(url), **request_attributes(body, telemetry.settings.capture_content)}
    take_over_manual_call()
    tracker = begin(telemetry, endpoint.operation, endpoint.model_of(body, url),
                    provider=endpoint.provider(getattr(url, "host", None), azure), stream=stream,
                    attributes=attributes, usage_expected=usage_expected, adopt=adopt)
    return Call(tracker, endpoint, drop_usage_only)


# -- while it is sent ---------------------------------------------------------------------------------

class Sending:
    """While the request is sent: the call's span is current (HTTP spans nest under it) and the
    HTTP layer sees the call; a failure ends the call. Undone before returning, so the span of a
    stream never stays current in the caller. (A class: cheaper than a generator, on every call.)"""

    __slots__ = ("_call", "_call_token", "_token")

    def __init__(self, call: Call) -> None:
        self._call = call

    def __enter__(self) -> None:
        self._token = context.attach(trace.set_span_in_context(self._call.tracker.span))
        self._call_token = current_llm_call.set(self._call)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> None:
        try:
            if exc is not None:
                end(self._call.tracker, exc)
        finally:
            current_llm_call.reset(self._call_token)
            context.detach(self._token)


# -- the end ------------------------------------------------------------------------------------------

class Stop(NamedTuple):
    """Why and when a call stopped being read, before it ended."""

    outcome: str
    at: float
    #: The caller stopped (a break, a dropped stream): nothing after that changes the outcome.
    #: Otherwise the response was closed under the SDK's stream, which normally ends it next.
    by_caller: bool


def end(tracker: CallTracker, exc: BaseException | None = None, outcome: str | None = None,
        at: float | None = None) -> None:
    """End a call, once: because of ``exc`` (None: it completed), or with ``outcome``, now or ``at``.
    A call that had stopped ends at the time it stopped; once the caller had stopped reading, an
    exception after that (one thrown into a dropped stream) does not change how it ended. Never raises."""
    try:
        stop = tracker.suspended
        if tracker.finished or (stop is not None and stop.outcome == names.CANCELLED):
            return  # ended, or a cancellation's verdict is pending: that decides
        if exc is not None and stop is not None and stop.by_caller:
            _finish(tracker, stop.outcome, stop.at)
            return
        if outcome is None:
            outcome = names.outcome_of(exc)
            if outcome == names.CANCELLED and exc is not None and _judge_cancellation_later(tracker, at):
                return
        if exc is not None and outcome == names.ERROR:
            status = getattr(exc, "status_code", None)
            if isinstance(status, int):
                tracker.annotate({"http.response.status_code": status})
            tracker.fail(exc)
        _finish(tracker, outcome, stop.at if at is None and stop is not None else at)
    except Exception as error:
        report_internal_error("lifecycle.end", error)


def _finish(tracker: CallTracker, outcome: str, at: float | None) -> None:
    if tracker.finish(outcome, at):
        _live.pop(id(tracker), None)


def suspend(tracker: CallTracker, outcome: str, at: float | None = None, by_caller: bool = True) -> None:
    """The call stopped being read, and may not end otherwise: it ends as ``outcome`` at the time
    it stopped, unless it resumes (``closed_early``) within ``RESUME_GRACE_SECONDS`` or ends first.
    Safe inside the garbage collector: it only records and queues."""
    if tracker.finished or tracker.suspended is not None:
        return  # the first reason to stop is the one that counts
    tracker.suspended = Stop(outcome, clock() if at is None else at, by_caller)
    _pending.append(tracker)
    _wake_reaper()


def resume(tracker: CallTracker) -> None:
    """The caller reads the call again after a ``break``: it is not ending after all."""
    if tracker.suspended is not None and not tracker.finished:
        tracker.suspended = None


def defer(end_later: Callable[[str, float], None], outcome: str) -> None:
    """For a finalizer: ``end_later(outcome, now)`` runs at the next safe point."""
    _deferred.append((end_later, outcome, clock()))
    _wake_reaper()


def end_suspended(grace: float = RESUME_GRACE_SECONDS) -> None:
    """End the suspended calls whose grace has passed, and run deferred ends (the reaper's tick)."""
    while _deferred:
        try:
            end_later, outcome, when = _deferred.popleft()
        except IndexError:
            break
        try:
            end_later(outcome, when)
        except Exception as exc:
            report_internal_error("lifecycle.deferred", exc)
    now = clock()
    for _ in range(len(_pending)):
        try:
            tracker = _pending.popleft()
        except IndexError:
            return
        stop = tracker.suspended
        if stop is None or tracker.finished:
            continue  # resumed, or ended by its owner
        if stop.outcome == names.CLOSED_EARLY and now - stop.at < grace:
            _pending.append(tracker)
            continue
        _finish(tracker, stop.outcome, stop.at)


def end_unfinished() -> None:
    """At exit: end every call still open. Suspended ones as they stopped; the rest as
    ``interrupted``, with the data they have."""
    end_suspended(grace=0.0)
    while True:
        try:
            open_calls = list(_live.values())
            break
        except RuntimeError:  # another thread started or ended a call meanwhile
            continue
    for tracker in open_calls:
        stop = tracker.suspended
        try:
            _finish(tracker, stop.outcome if stop else names.INTERRUPTED, stop.at if stop else None)
        except Exception as exc:
            report_internal_error("lifecycle.exit", exc)


def ensure_reaper() -> None:
    """Start the reaper thread of this process unless it runs already."""
    global _reaper_pid, _wake
    if _reaper_pid == os.getpid():
        return
    _reaper_pid = os.getpid()  # a forked child has no threads: it starts its own
    for inherited in _wake or ():  # (this process's copies of its parent's pair)
        inherited.close()
    receiver: socket.socket | None = None
    try:
        receiver, sender = _wake = socket.socketpair()
        sender.setblocking(False)
    except OSError:  # no sockets here (a sandbox): the reaper polls instead
        _wake = None
    threading.Thread(target=_reap_forever, args=(receiver,), name="nexent-call-reaper", daemon=True).start()


def _wake_reaper() -> None:
    """Safe inside the garbage collector: a send that neither blocks nor takes a lock. (Plain
    ``try``: finalizers also run at interpreter shutdown, when other modules may be torn down.)"""
    wake = _wake
    if wake is not None:
        try:  # noqa: SIM105
            wake[1].send(b"\0")
        except OSError:  # full: wake-ups are waiting already (or closed by a fork)
            pass


def _reap_forever(receiver: socket.socket | None) -> None:
    """Sleep until a call is suspended or an end deferred, then end what is due; tick while some
    call waits out its grace. A process that is not ending calls wakes nothing."""
    while True:
        if receiver is None:
            time.sleep(REAPER_TICK_SECONDS)
        else:
            receiver.settimeout(REAPER_TICK_SECONDS if _pending or _deferred else None)
            try:
                if not receiver.recv(4096):
                    return
            except TimeoutError:
                pass
            except OSError:
                return
        if _pending or _deferred:
            try:
                end_suspended()
            except Exception as exc:
                report_internal_error("lifecycle.reaper", exc)


def _judge_cancellation_later(tracker: CallTracker, at: float | None) -> bool:
    """An asyncio cancellation reached the call. If the task takes the cancellation back once it
    has unwound (``Task.uncancel``, which ``asyncio.timeout`` does, and from Python 3.12
    ``asyncio.wait_for``, when they turn it into ``TimeoutError``), the caller saw a timeout: an
    error. Otherwise it was a cancellation. Decided on the event loop; False if there is no task."""
    asyncio = sys.modules.get("asyncio")
    try:
        task = asyncio.current_task() if asyncio is not None else None
    except RuntimeError:
        task = None
    if task is None or not hasattr(task, "cancelling"):
        return False
    when = clock() if at is None else at
    tracker.suspended = Stop(names.CANCELLED, when, True)  # exit ends it as cancelled if no verdict comes
    requested = task.cancelling()
    deadline = clock() + CANCELLATION_VERDICT_SECONDS
    loop = task.get_loop()

    def verdict() -> None:
        if tracker.finished:
            return
        if task.cancelling() < requested:
            tracker.fail("TimeoutError")
            _finish(tracker, names.ERROR, when)
        elif task.done() or clock() > deadline:
            _finish(tracker, names.CANCELLED, when)
        else:
            loop.call_later(0.01, verdict)

    loop.call_soon(verdict)
    return True


# -- closing ----------------------------------------------------------------------------------------

def close_then_end(close: Callable[..., T], tracker: CallTracker, *args: Any) -> T:
    """``close(*args)``, then end the call as closed early (nothing happens if it had ended)."""
    try:
        return close(*args)
    finally:
        end(tracker, outcome=names.CLOSED_EARLY)


async def aclose_then_end(aclose: Callable[..., Awaitable[T]], tracker: CallTracker, *args: Any) -> T:
    """The async form of ``close_then_end``."""
    try:
        return await aclose(*args)
    finally:
        end(tracker, outcome=names.CLOSED_EARLY)

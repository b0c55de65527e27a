"""When LLM calls start and end: the one owner of a call's lifecycle.

Every layer (the openai SDK, raw httpx/httpx2 calls, the manual API) starts its calls with
``begin``/``start_http_call`` and ends them with ``end``. A call that stops being read without
ending (a ``break``, a dropped stream, a closed response while the SDK still reads) is
``suspend``-ed: it ends, dated when the caller stopped, at the next safe point, on the agent's
thread (``guest``), which never depends on traffic; or at process exit. A call asked to end
while the garbage collector runs is ended by the agent's thread too: ending takes locks that the
interrupted code may hold (see ``guest``). At exit (``end_unfinished``, before the providers
flush) every call still open is ended with the data it has. A fork child owns none of its
parent's calls.

Outcomes: see ``conventions.OUTCOMES`` and the README's outcome table.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

from opentelemetry import context, trace

from . import conventions as names
from . import guest
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
#: Suspended calls waiting for the agent's thread.
_pending: deque[CallTracker] = deque()
#: A call broken off (``break``) can still be resumed for this long before it is ended.
RESUME_GRACE_SECONDS = 0.5
#: How often the agent's thread looks at suspended calls while one waits out its grace.
REAPER_TICK_SECONDS = 0.2
#: How long a cancelled call waits for the cancellation to unwind before it is called cancelled.
CANCELLATION_VERDICT_SECONDS = 1.0
#: How anyio's cancel scopes word the cancellations they send to an asyncio task (4.0, 4.x).
_ANYIO_SCOPE_CANCEL = ("Cancelled by cancel scope", "Cancelled via cancel scope")
#: Outcomes of a call the caller stopped reading: dated when it took its last item.
_STOPPED_EARLY = frozenset({names.CLOSED_EARLY, names.ABANDONED, names.INTERRUPTED})


# -- start ------------------------------------------------------------------------------------------

class Progress:
    """Where a call is in its lifecycle: the lifecycle's own state of a call, beside its tracker's
    measurements. The stream layer reports what the consumer does through its methods; the HTTP
    layer reads it."""

    __slots__ = ("delegated", "items_claimed", "pulling", "suspended")

    def __init__(self) -> None:
        #: A more precise layer measures this call from inside it (see ``current_manual_call``).
        self.delegated = False
        #: The SDK's parsed items are being read: the HTTP layer then leaves the bytes alone.
        self.items_claimed = False
        #: The SDK is asked for its next item: a response closed then is the SDK's own doing (at
        #: the end of its stream); closed between two items, it is the caller's.
        self.pulling = False
        #: A ``Stop`` while the call has stopped being read but is not ended yet.
        self.suspended: Stop | None = None

    def claim(self) -> None:
        """The consumer asks for an item of the SDK's stream (the items are measured from now)."""
        self.items_claimed = self.pulling = True

    def handed(self) -> None:
        """An item goes to the consumer."""
        self.pulling = False

    def asking(self) -> None:
        """The consumer asks for the next item."""
        self.pulling = True


def begin(telemetry: Telemetry, operation: str, model: str | None, *, provider: str = "openai",
          stream: bool = False, attributes: dict[str, Any] | None = None,
          usage_expected: bool = False, adopt: Any = None) -> CallTracker:
    """Open the span of one LLM call and start its clock. ``usage_expected``: the response will
    carry usage, so there is no need to keep text for an estimate. ``adopt``: the span an SDK
    started for this call (``adoption.Adoption``), measured instead of starting one."""
    telemetry.prepare()
    guest.start()
    tracker = CallTracker(telemetry, operation, model or "unknown", provider, stream, attributes, usage_expected,
                          adopt, Progress())
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
        outer.progress.delegated = True


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
    attributes = {**server_attributes(url),
                  **request_attributes(body, telemetry.settings.capture_content, endpoint.request_fields)}
    take_over_manual_call()
    tracker = begin(telemetry, endpoint.operation, endpoint.model_of(body, url),
                    provider=endpoint.provider(getattr(url, "host", None), azure), stream=stream,
                    attributes=attributes, usage_expected=usage_expected, adopt=adopt)
    return Call(tracker, endpoint, drop_usage_only)


# -- while it is sent ---------------------------------------------------------------------------------

class Sending:
    """While the request is sent: the call's span is current (HTTP spans nest under it) and,
    where it goes out through one of the agent's HTTP layers (``over_http``), that layer sees the
    call; a failure ends the call. Undone before returning, so the span of a stream never stays
    current in the caller. (A class: cheaper than a generator, on every call.)"""

    __slots__ = ("_call", "_call_token", "_over_http", "_token")

    def __init__(self, call: Call, over_http: bool = True) -> None:
        self._call = call
        self._over_http = over_http

    def __enter__(self) -> None:
        self._token = context.attach(trace.set_span_in_context(self._call.tracker.span))
        self._call_token = current_llm_call.set(self._call) if self._over_http else None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> None:
        try:
            if exc is not None:
                end(self._call.tracker, exc)
        finally:
            if self._call_token is not None:
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
    #: How long the caller held the stream open after its last item, when that is when it stopped.
    held: float | None = None


def stopped_at(tracker: CallTracker, now: float) -> tuple[float, float | None]:
    """When the caller stopped reading a call that ends early ``now``, and for how long it held
    it open since: a stream whose consumer was between two items stopped at the last one it
    took (a relay generator kept alive keeps the SDK's stream open long after its last item)."""
    last = tracker.last_activity() if tracker.stream and not tracker.progress.pulling else None
    if last is None or last > now:
        return now, None
    return last, now - last


def end(tracker: CallTracker, exc: BaseException | None = None, outcome: str | None = None,
        at: float | None = None) -> None:
    """End a call, once: because of ``exc`` (None: it completed), or with ``outcome``, now or ``at``.
    A call that had stopped ends at the time it stopped; once the caller had stopped reading, an
    exception after that (one thrown into a dropped stream) does not change how it ended. Inside
    the garbage collector this only posts the end to the agent's thread. Never raises."""
    if guest.in_collector():
        guest.post(end, tracker, exc, outcome, clock() if at is None else at)
        return
    try:
        stop = tracker.progress.suspended
        if tracker.finished or (stop is not None and stop.outcome == names.CANCELLED):
            return  # ended, or a cancellation's verdict is pending: that decides
        if exc is not None and stop is not None and stop.by_caller:
            _finish(tracker, stop.outcome, stop.at, stop.held)
            return
        if outcome is None:
            outcome = names.outcome_of(exc)
            if outcome == names.CANCELLED and exc is not None and _judge_cancellation_later(exc, tracker, at):
                return
        if exc is not None and outcome == names.ERROR:
            status = getattr(exc, "status_code", None)
            if isinstance(status, int):
                tracker.annotate({"http.response.status_code": status})
            tracker.fail(exc)
        held = None
        if stop is not None and at is None:
            at, held = stop.at, stop.held
        elif at is None and outcome in _STOPPED_EARLY:
            at, held = stopped_at(tracker, clock())
        _finish(tracker, outcome, at, held)
    except Exception as error:
        report_internal_error("lifecycle.end", error)


def _finish(tracker: CallTracker, outcome: str, at: float | None, held: float | None = None) -> None:
    if held is not None:
        tracker.annotate({names.LLM_STREAM_HELD: held})
    tracker.finish(outcome, at)
    _live.pop(id(tracker), None)  # (ended now, or before: by another thread, or disowned in a fork child)


def suspend(tracker: CallTracker, outcome: str, at: float | None = None, by_caller: bool = True) -> None:
    """The call stopped being read, and may not end otherwise: it ends as ``outcome``, dated when
    the caller stopped, unless it resumes (``closed_early``) within ``RESUME_GRACE_SECONDS`` or
    ends first. Safe inside the garbage collector: it only records and wakes the agent's thread."""
    if tracker.finished or tracker.progress.suspended is not None:
        return  # the first reason to stop is the one that counts
    held = None
    if at is None:
        at, held = stopped_at(tracker, clock())
    tracker.progress.suspended = Stop(outcome, at, by_caller, held)
    _pending.append(tracker)
    guest.wake()


def resume(tracker: CallTracker) -> None:
    """The caller reads the call again after a ``break``: it is not ending after all."""
    if tracker.progress.suspended is not None and not tracker.finished:
        tracker.progress.suspended = None


def defer(end_later: Callable[[str, float], None], outcome: str) -> None:
    """For a finalizer: ``end_later(outcome, now)`` runs on the agent's thread."""
    guest.post(end_later, outcome, clock())


def end_suspended(grace: float = RESUME_GRACE_SECONDS) -> None:
    """End the suspended calls that are due: a broken-off call, or one whose response was closed
    under the SDK's stream, once its grace has passed (the caller may resume it, the SDK end
    it); a cancelled one once its verdict is overdue (the event loop that was to give it has
    gone). At exit, ``grace`` is 0: every one is due."""
    now = clock()
    for _ in range(len(_pending)):
        try:
            tracker = _pending.popleft()
        except IndexError:
            return
        stop = tracker.progress.suspended
        if stop is None or tracker.finished:
            continue  # resumed, or ended by its owner
        if stop.outcome == names.CANCELLED:
            wait = grace and CANCELLATION_VERDICT_SECONDS + grace
        else:
            wait = grace if stop.outcome == names.CLOSED_EARLY or not stop.by_caller else 0.0
        if now - stop.at < wait:
            _pending.append(tracker)
            continue
        _finish(tracker, stop.outcome, stop.at, stop.held)


def _tick() -> float | None:
    """The agent thread's look at suspended calls: again in a moment while one waits out its grace."""
    end_suspended()
    return REAPER_TICK_SECONDS if _pending else None


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
    now = clock()
    for tracker in open_calls:
        stop = tracker.progress.suspended
        try:
            if stop is not None:
                _finish(tracker, stop.outcome, stop.at, stop.held)
            else:
                _finish(tracker, names.INTERRUPTED, *stopped_at(tracker, now))
        except Exception as exc:
            report_internal_error("lifecycle.exit", exc)


def _disown_inherited() -> None:
    """In a fork child: the calls in flight are the parent's, which ends and exports them."""
    for tracker in list(_live.values()):
        tracker.disown()
    _live.clear()
    _pending.clear()


guest.on_tick(_tick)
guest.on_fork(_disown_inherited)


def _judge_cancellation_later(exc: BaseException, tracker: CallTracker, at: float | None) -> bool:
    """An asyncio cancellation reached the call. If the task takes the cancellation back once it
    has unwound (``Task.uncancel``, which ``asyncio.timeout`` does, and from Python 3.12
    ``asyncio.wait_for``, when they turn it into ``TimeoutError``), the caller saw a timeout: an
    error. Otherwise it was a cancellation. Decided on the event loop; False if there is no task,
    or if an anyio cancel scope sent it (it takes its cancellations back too, timed out or not,
    and trio's, the same scopes, are cancellations)."""
    if str(exc).startswith(_ANYIO_SCOPE_CANCEL):
        return False
    asyncio = sys.modules.get("asyncio")
    try:
        task = asyncio.current_task() if asyncio is not None else None
    except RuntimeError:
        task = None
    if task is None or not hasattr(task, "cancelling"):
        return False
    when = clock() if at is None else at
    tracker.progress.suspended = Stop(names.CANCELLED, when, True)  # ended as cancelled if no verdict comes
    _pending.append(tracker)
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

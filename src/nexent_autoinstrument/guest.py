"""The agent as a guest in the host process: its one thread, the way to hand that thread work,
and what code run by a garbage collection, a fork or a signal handler may do.

- **Finalizers and signal handlers only record and post.** Ending a call takes the locks of the
  OpenTelemetry SDK, prometheus_client and ours; a finalizer may run while its own thread holds
  any of them (the collector runs wherever an allocation triggers it). ``post`` is a
  ``SimpleQueue.put``, which takes no lock a caller can hold, and the agent's thread does the
  rest. On the thread the collector runs on (``in_collector()``), the lifecycle posts the ends it
  is asked for.
- **Nothing starts before it is needed.** The thread, its queue and the collector hook start
  with the first call (``start``), after the application has set itself up: under gevent they
  are then greenlets and cooperative queues, as the application's own threads are.
- **A fork child owns none of its parent's work.** ``generation`` moves on in the child, the
  queue and the thread are the parent's no longer (the child starts its own when it first needs
  one), and the hooks registered with ``on_fork`` drop what the child inherited.
"""

from __future__ import annotations

import gc
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: The thread (``threading.get_ident()``, a greenlet's under gevent) that the garbage collector
#: runs on, and with it the finalizers of what it collects; None while it does not run.
collecting: int | None = None
#: Changes in every fork child: what was made under another generation is the parent's.
generation = 0

THREAD_NAME = "nexent-agent"

_queue: Any = None  # a SimpleQueue of (action, args), or None before ``start`` (and in a fork child)
_thread: Any = None  # a daemon thread, or a greenlet (see ``_spawn``)
_serving: int | None = None  # the thread ident of ``_serve`` (``threading.get_ident``, a greenlet's under gevent)
_start_lock = threading.Lock()
_hooked = False  # the collector hook is installed (once per process, fork children included)
_tickers: list[Callable[[], float | None]] = []
_fork_hooks: list[Callable[[], None]] = []
_on_start: list[Callable[[], None]] = []
_STOP = object()


def started() -> bool:
    """Whether this process's agent thread has been started."""
    return _queue is not None


def on_agent_thread() -> bool:
    """Whether this code runs on the agent's thread."""
    return _serving is not None and _serving == threading.get_ident()


def start() -> None:
    """Start the agent's thread in this process, unless it runs already. Never blocks: a thread
    that finds another one starting it goes on (its posts wait in the queue)."""
    global _queue, _thread, _hooked
    if _queue is not None or not _start_lock.acquire(blocking=False):
        return
    try:
        if _queue is not None:
            return
        if not _hooked:
            _hooked = True
            gc.callbacks.append(_on_collection)
        work: Any = queue.SimpleQueue()  # (looked up now: gevent may have patched it since import)
        for action in _on_start:
            work.put((action, ()))
        _queue = work  # (before the thread runs: it serves while the queue is this one)
        try:
            _thread = _spawn(work)
        except RuntimeError:  # no more threads can be started: work posted from now on is dropped
            _queue = None
    finally:
        _start_lock.release()


def post(action: Callable[..., Any], *args: Any) -> None:
    """Run ``action(*args)`` on the agent's thread, soon. Safe in a finalizer or a signal
    handler. Dropped if the thread was never started in this process (nothing of ours is then
    in flight; in a fork child, what was in flight is the parent's)."""
    work = _queue
    if work is not None:
        work.put((action, args))


def wake() -> None:
    """Let the agent's thread run its tickers now. Safe in a finalizer or a signal handler."""
    work = _queue
    if work is not None:
        work.put(None)


def on_tick(ticker: Callable[[], float | None]) -> None:
    """Call ``ticker()`` on the agent's thread after every wake-up; it returns in how many
    seconds it wants to be called again, or None if only a wake-up need call it."""
    _tickers.append(ticker)


def on_fork(hook: Callable[[], None]) -> None:
    """Call ``hook()`` in every fork child, before anything else of ours runs there. It must
    only drop state: no lock, no thread, no I/O."""
    _fork_hooks.append(hook)


def on_start(action: Callable[[], None]) -> None:
    """Run ``action()`` on the agent's thread first thing when it starts (work that must not
    delay the application's own start-up)."""
    if action not in _on_start:
        _on_start.append(action)


def run_and_wait(action: Callable[[], Any], seconds: float) -> bool:
    """Run ``action()`` on the agent's thread and wait for it, at most ``seconds``; False if it
    did not finish in time or there is no thread. For a signal handler: what the interrupted
    code holds cannot block this wait, only delay the action."""
    if _queue is None or on_agent_thread():
        return False
    done = threading.Event()
    post(_run_then_set, action, done)
    return done.wait(seconds)


def stop(seconds: float) -> None:
    """At exit: let the thread finish the work it was given (in order), for at most ``seconds``,
    then run whatever is left here. Later posts are dropped."""
    global _queue
    work, thread = _queue, _thread
    if work is None:
        return
    if thread is not None and not on_agent_thread():
        work.put(_STOP)
        thread.join(seconds)
    _queue = None
    _drain(work)


def _run_then_set(action: Callable[[], Any], done: threading.Event) -> None:
    try:
        action()
    finally:
        done.set()


def wait_until(done: Callable[[], bool], seconds: float) -> bool:
    """Wait, at most ``seconds``, until ``done()``: polls with ``time.sleep``, which gevent makes
    cooperative (a lock or event made before it patched would block every greenlet)."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _spawn(work: Any) -> Any:
    """The agent's thread: a daemon thread, or where gevent has patched ``threading``, a plain
    greenlet (a patched thread is a greenlet too, but registered with ``threading``, and a fork
    before it first runs leaves it half-registered in the child, which then complains)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return sys.modules["gevent"].spawn(_serve, work)
    thread = threading.Thread(target=_serve, args=(work,), name=THREAD_NAME, daemon=True)
    thread.start()
    return thread


def _serve(work: Any) -> None:
    global _serving
    _serving = threading.get_ident()
    timeout: float | None = None
    while True:
        try:
            item = work.get(timeout=timeout)
        except queue.Empty:
            item = None
        if item is _STOP or work is not _queue:
            return  # stopped at exit, or a fork child's copy of its parent's thread (gevent)
        if item is not None:
            _run(item)
        if _drain(work):
            return
        timeout = _tick()


def _drain(work: Any) -> bool:
    """Run what is queued without waiting; True if that included the stop."""
    while True:
        try:
            item = work.get_nowait()
        except queue.Empty:
            return False
        if item is _STOP:
            return True
        if item is not None:
            _run(item)


def _run(item: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
    action, args = item
    try:
        action(*args)
    except Exception as exc:
        from .guard import report_internal_error

        report_internal_error(f"agent.{getattr(action, '__qualname__', 'action')}", exc)


def _tick() -> float | None:
    soonest: float | None = None
    for ticker in _tickers:
        try:
            delay = ticker()
        except Exception as exc:
            from .guard import report_internal_error

            report_internal_error("agent.tick", exc)
            continue
        if delay is not None and (soonest is None or delay < soonest):
            soonest = delay
    return soonest


def in_collector() -> bool:
    """Whether this code runs inside the garbage collector (a finalizer, or what it called)."""
    return collecting is not None and collecting == threading.get_ident()


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    global collecting
    collecting = threading.get_ident() if phase == "start" else None


def _forked() -> None:
    global generation, _queue, _thread, _serving, _start_lock
    generation += 1
    _queue = _thread = _serving = None
    _start_lock = threading.Lock()  # (another thread of the parent may have held it)
    for hook in _fork_hooks:
        try:  # noqa: SIM105 - (no import in a fork child's hook)
            hook()
        except Exception:
            pass


os.register_at_fork(after_in_child=_forked)

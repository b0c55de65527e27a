"""multiprocessing pools: a worker exports the calls of a task before it reports the task's result.

A pool's parent may terminate its workers as soon as it has their results (``with Pool() as
pool:`` ends with ``terminate()``), and a worker has no SIGTERM handler of ours (see
``pipeline._flush_on_sigterm``): it dies at once, as without the agent. So the worker flushes
before each result leaves it, wrapping the ``put`` of the result queue that
``multiprocessing.pool.worker`` is given. The function keeps its module and name, so that a
spawned worker, which unpickles it by name, gets it too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..guard import report_internal_error


def patch(module: ModuleType, flush: Callable[[], None]) -> None:
    """Make ``module`` (``multiprocessing.pool``)'s workers call ``flush()`` before each result."""
    original = module.worker
    if getattr(original, "__wrapped__", None) is not None:
        return

    @functools.wraps(original)
    def worker(inqueue: Any, outqueue: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            outqueue.put = _flushing(outqueue.put, flush)
        except Exception as exc:
            report_internal_error("pools.worker", exc)
        return original(inqueue, outqueue, *args, **kwargs)

    module.worker = worker  # type: ignore[attr-defined]


def _flushing(put: Callable[[Any], None], flush: Callable[[], None]) -> Callable[[Any], None]:
    def put_after_flush(item: Any) -> None:
        try:
            flush()
        except Exception as exc:
            report_internal_error("pools.flush", exc)
        put(item)

    return put_after_flush

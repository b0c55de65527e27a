"""Spans and metrics exported by the agent's one thread (``guest``).

The OpenTelemetry SDK's batch span processor and periodic metric reader each run a thread of
their own, which they restart inside every fork child's fork hook: under gevent, a subprocess
child then runs a greenlet that the fork left half-registered, and prints its complaints. Here
the exporting is the agent thread's work, through the SDK's public interfaces (a
``SpanProcessor``, a ``MetricReader``, and its exporters): one thread of ours in all, nothing
started in a fork hook (a child's queue is emptied, and its own thread starts when it needs
one), and ending a span only appends to a queue, which a finalizer may do.

The standard settings apply: ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE``,
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, ``OTEL_METRIC_EXPORT_INTERVAL`` and
``OTEL_METRIC_EXPORT_TIMEOUT``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from . import guest
from .guard import report_internal_error

logger = logging.getLogger("nexent_autoinstrument")
_clock = time.monotonic


def _setting(name: str, default: int) -> int:
    """A positive integer from the environment, else ``default`` (as the SDK reads these)."""
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def _quietly(action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``action(...)`` with instrumentation suppressed: an exporter's own requests are not traced."""
    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        return action(*args, **kwargs)
    finally:
        detach(token)


class SpanBatches(SpanProcessor):
    """Ended spans, queued and exported in batches by the agent's thread: a batch as soon as
    one is full, the rest ``OTEL_BSP_SCHEDULE_DELAY`` after the first of them ended. A full
    queue drops new spans (counted; the first drop is logged)."""

    def __init__(self, make_exporter: Callable[[], SpanExporter], max_queue_size: int) -> None:
        self._make_exporter = make_exporter
        self._exporter: SpanExporter | None = None
        self._queue: deque[ReadableSpan] = deque()
        self._max_queue = _setting("OTEL_BSP_MAX_QUEUE_SIZE", max_queue_size)
        self._batch = min(_setting("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self._max_queue)
        self._delay = _setting("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self._due: float | None = None  # when the oldest queued span must be exported
        self.dropped = 0
        self._shut_down = False
        guest.on_tick(self._tick)
        guest.on_fork(self._forget_parent)

    def make_exporter(self) -> None:
        """Build the exporter (it imports a network stack), unless it is built already."""
        if self._exporter is None:
            self._exporter = self._make_exporter()

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if self._shut_down or context is None or not context.trace_flags.sampled:
            return
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped += 1
            if self.dropped == 1:
                guest.post(logger.warning, "nexent-autoinstrument: span queue full (%s); dropping spans",
                           self._max_queue)
            return
        queue.append(span)
        if len(queue) == 1 or len(queue) >= self._batch:
            guest.wake()  # (the first span schedules the export; a full batch goes now)

    def _tick(self) -> float | None:
        """On the agent's thread: export what is due; in how long to look again."""
        queue = self._queue
        if not queue:
            self._due = None
            return None
        now = _clock()
        if self._due is None:
            self._due = now + self._delay
        if now >= self._due:
            self._send(len(queue))
            self._due = now + self._delay if queue else None
        elif len(queue) >= self._batch:
            self._send(len(queue) - len(queue) % self._batch)  # (the full batches)
        return None if self._due is None else max(0.0, self._due - now)

    def _send(self, count: int) -> None:
        """Export the ``count`` oldest queued spans, in batches."""
        queue = self._queue
        while count > 0 and queue:
            batch = [queue.popleft() for _ in range(min(count, self._batch, len(queue)))]
            count -= len(batch)
            try:
                self.make_exporter()
                assert self._exporter is not None
                _quietly(self._exporter.export, batch)
            except Exception as exc:
                report_internal_error("export.spans", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every queued span now (on the agent's thread, waited for)."""
        def flush() -> None:
            self._send(len(self._queue))
            if self._exporter is not None:
                self._exporter.force_flush(timeout_millis)

        if guest.started() and not guest.on_agent_thread():
            return guest.run_and_wait(flush, timeout_millis / 1000)
        flush()
        return True

    def shutdown(self) -> None:
        self.force_flush()
        self._shut_down = True
        if self._exporter is not None:
            self._exporter.shutdown()

    def drop_queued(self) -> int:
        """Drop the spans not exported yet (counted as dropped); how many there were."""
        count = len(self._queue)
        self._queue.clear()
        self.dropped += count
        return count

    def _forget_parent(self) -> None:
        self._queue.clear()  # the parent exports them
        self._due = None


def otlp_http_session() -> Any:
    """A ``requests`` session for an OTLP/HTTP exporter: the environment's proxy and CA-bundle
    settings (``HTTPS_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``...) apply as requests applies
    them, read once per destination instead of on every export (requests walks all of
    ``os.environ`` for them each time: a third of the cost of exporting a small batch)."""
    import requests

    class SettledSession(requests.Session):
        # The arguments, and what requests made of them and the environment. (The session's own
        # verify, cert and proxies, which requests merges in too, are set before its first request.)
        _settled: Any = None

        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
            key = (url, stream, verify, cert, tuple(sorted(proxies.items())) if proxies else ())
            settled = self._settled
            if settled is None or settled[0] != key:
                settled = self._settled = (key, super().merge_environment_settings(url, proxies, stream, verify, cert))
            merged = settled[1]
            return {**merged, "proxies": dict(merged["proxies"])}

    return SettledSession()


def metric_reader(exporter: Any) -> Any:
    """A metric reader that the agent's thread collects every ``OTEL_METRIC_EXPORT_INTERVAL``
    and passes to ``exporter`` (the SDK's ``MetricReader``, made when first needed: it imports
    the metrics SDK). ``exporter`` gets None when no instrument of the SDK had data: it adds the
    agent's own metrics (``metric_export.WithAgentPoints``)."""
    from opentelemetry.sdk.metrics.export import MetricReader

    class PeriodicOnAgentThread(MetricReader):
        """``PeriodicExportingMetricReader``'s work, on the agent's thread."""

        def __init__(self) -> None:
            super().__init__(preferred_temporality=exporter._preferred_temporality,
                             preferred_aggregation=exporter._preferred_aggregation)
            self._interval = _setting("OTEL_METRIC_EXPORT_INTERVAL", 60000) / 1000
            self._timeout = _setting("OTEL_METRIC_EXPORT_TIMEOUT", 30000)
            self._due = _clock() + self._interval
            self._closed = False
            self._received = False
            guest.on_tick(self._tick)

        def _tick(self) -> float | None:
            if self._closed:
                return None
            now = _clock()
            if now >= self._due:
                self._due = now + self._interval
                try:
                    self._collect_and_export(self._timeout)
                except Exception as exc:
                    report_internal_error("export.metrics", exc)
            return max(0.0, self._due - now)

        def _collect_and_export(self, timeout_millis: float) -> None:
            self._received = False
            try:
                self.collect(timeout_millis=timeout_millis)
            finally:  # (no instrument of the SDK had data, or collecting them failed: the agent's own still go)
                if not self._received:
                    self._receive_metrics(None, timeout_millis)

        def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
            self._received = True
            try:
                _quietly(exporter.export, metrics_data, timeout_millis=timeout_millis)
            except Exception as exc:
                report_internal_error("export.metrics", exc)

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            if guest.started() and not guest.on_agent_thread():
                return guest.run_and_wait(lambda: self._flush(timeout_millis), timeout_millis / 1000)
            self._flush(timeout_millis)
            return True

        def _flush(self, timeout_millis: float) -> None:
            self._collect_and_export(timeout_millis)
            exporter.force_flush(timeout_millis=timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            if self._closed:
                return
            self.force_flush(timeout_millis)
            self._closed = True
            exporter.shutdown(timeout_millis=timeout_millis)

    return PeriodicOnAgentThread()


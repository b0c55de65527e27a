"""The telemetry pipeline: resource, tracer and meter providers, exporters, /metrics server.

Built once per process by ``bootstrap.initialize``, as plain objects: what starts a thread or
imports a network stack starts when first needed (the span processors when the first span ends,
their exporters on their first export, the meter provider with the first call), so that it is
made of what the application uses by then (gevent's greenlets, once it has patched). Exporters
run on the SDK's batching threads with bounded queues, so an unreachable collector costs
dropped data and one warning, never a blocked or failing application.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from . import __version__, guest
from .guard import export_warnings, report_internal_error
from .settings import Settings
from .tracker import Telemetry

logger = logging.getLogger("nexent_autoinstrument")

#: Upper bound on how long flushing telemetry may hold up process exit.
SHUTDOWN_BOUND_SECONDS = 5.0
#: At exit, how long the agent's thread may take to finish the work it was given.
AGENT_STOP_SECONDS = 1.0
EXPORT_TIMEOUT_SECONDS = 5
MAX_QUEUED_SPANS = 2048

#: Loggers under these names belong to exporters and the SDK's export machinery.
_EXPORTER_LOGGER_PREFIXES = ("opentelemetry.exporter", "opentelemetry.sdk._shared_internal",
                             "opentelemetry.sdk.trace.export", "opentelemetry.sdk.metrics")


class _FirstWarningOnly(logging.Filter):
    """Lets the first export complaint through and counts the repeats (an unreachable collector
    would otherwise log on every export interval, for every signal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        export_warnings["total"] += 1
        if export_warnings["total"] > 1:
            return False
        record.msg = f"{record.msg} (nexent-autoinstrument: further export errors are counted, not logged)"
        return True


EXPORT_WARNINGS = _FirstWarningOnly()


def make_resource(settings: Settings) -> Resource:
    """service.name/version, a per-process instance id, host and process facts, OTEL_RESOURCE_ATTRIBUTES.

    Built without ``Resource.create``/``get_aggregated_resources``: they run detectors on a
    thread pool, which deadlocks when this runs in a pre-fork server's worker right after fork."""
    from opentelemetry.sdk.version import __version__ as sdk_version

    own = Resource({
        "service.name": settings.service_name,
        "service.version": settings.service_version,
        "service.instance.id": str(uuid.uuid4()),
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": ".".join(map(str, sys.version_info[:3])),
        "process.executable.name": os.path.basename(sys.executable),
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "telemetry.distro.name": "nexent-autoinstrument",
        "telemetry.distro.version": __version__,
    })
    # The user's explicit OTEL_RESOURCE_ATTRIBUTES win, except service.name which settings resolved.
    merged = own.merge(OTELResourceDetector().detect())
    return merged.merge(Resource({"service.name": settings.service_name}))


#: Longest span attribute value unless OTEL_*ATTRIBUTE_VALUE_LENGTH_LIMIT says otherwise: a
#: free-form model name or error message must not make spans unbounded.
MAX_ATTRIBUTE_LENGTH = 8192


def _span_limits() -> SpanLimits:
    configured = any(os.environ.get(name) for name in ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                                                        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"))
    return SpanLimits(max_span_attribute_length=None if configured else MAX_ATTRIBUTE_LENGTH)


def _otlp_timeout() -> dict[str, Any]:
    return {} if os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") else {"timeout": EXPORT_TIMEOUT_SECONDS}


def _otlp_span_exporter(settings: Settings) -> Any:
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc(**_otlp_timeout())
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http(**_otlp_timeout())


def _otlp_metric_exporter(settings: Settings) -> Any:
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(**_otlp_timeout())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(**_otlp_timeout())


def _jaeger_span_exporter(settings: Settings) -> Any:
    from .jaeger_thrift import make_exporter

    return make_exporter(settings.jaeger_endpoint, EXPORT_TIMEOUT_SECONDS)


def _console_metric_exporter(settings: Settings) -> Any:
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

    return ConsoleMetricExporter()


SPAN_EXPORTERS: dict[str, Callable[[Settings], Any]] = {
    "otlp": _otlp_span_exporter,
    "jaeger": _jaeger_span_exporter,
    # One compact JSON object per line (JSON Lines), so that stdout redirected to a file can be parsed.
    "console": lambda settings: ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n"),
}
METRIC_EXPORTERS: dict[str, Callable[[Settings], Any]] = {
    "otlp": _otlp_metric_exporter,
    "console": _console_metric_exporter,
}


def _quiet_repeated_exporter_warnings() -> None:
    """Attach the shared filter to every exporter logger (filters do not apply to child loggers,
    so each one needs it; call after the exporters are imported)."""
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith(_EXPORTER_LOGGER_PREFIXES):
            exporter_logger = logging.getLogger(name)
            if EXPORT_WARNINGS not in exporter_logger.filters:
                exporter_logger.addFilter(EXPORT_WARNINGS)


class ExporterOnFirstExport(SpanExporter):
    """A span exporter made on its first export, on the batch processor's thread: importing and
    building an exporter (protobuf, an HTTP session, TLS) costs neither the application's
    start-up nor its threads, and happens after the application has set itself up."""

    def __init__(self, make: Callable[[], SpanExporter]) -> None:
        self._make = make
        self._exporter: SpanExporter | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._exporter is None:
            self._exporter = self._make()
            _quiet_repeated_exporter_warnings()
        return self._exporter.export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter is None or bool(self._exporter.force_flush(timeout_millis))

    def shutdown(self) -> None:
        if self._exporter is not None:
            self._exporter.shutdown()


class ProcessorOnFirstSpan(SpanProcessor):
    """A span processor made when the first span ends (a batch processor starts its thread when
    made). Spans that end meanwhile, or inside the garbage collector (starting a thread takes
    locks the interrupted code may hold), wait in a bounded queue for the next span to end."""

    def __init__(self, make: Callable[[], SpanProcessor]) -> None:
        self._make = make
        self._processor: SpanProcessor | None = None
        self._early: deque[ReadableSpan] = deque(maxlen=MAX_QUEUED_SPANS)
        self._claim = [True]  # popped by the one thread that makes the processor

    def on_end(self, span: ReadableSpan) -> None:
        processor = self._processor
        if processor is not None:
            processor.on_end(span)
            return
        self._early.append(span)
        if guest.collecting:
            return
        try:
            self._claim.pop()
        except IndexError:  # another thread makes it right now: it hands this span on (or the next span does)
            pass
        else:
            try:
                self._processor = self._make()
            except Exception as exc:
                report_internal_error("pipeline.span_processor", exc)
                self._processor = SpanProcessor()  # (nothing to export to: spans are dropped)
            guest.start()  # (a SIGTERM's flush runs on the agent's thread)
        processor = self._processor
        if processor is None:
            return
        while True:
            try:
                early = self._early.popleft()
            except IndexError:
                return
            processor.on_end(early)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor is None or self._processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if self._processor is not None:
            self._processor.shutdown()


def _run_bounded(action: Callable[[], Any], seconds: float) -> None:
    worker = threading.Thread(target=action, name="nexent-telemetry-shutdown", daemon=True)
    worker.start()
    worker.join(seconds)


class Pipeline:
    """The providers this process exports through, and how to flush them at exit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics_server_port: int | None = None
        self._shut_down = False
        self.resource = make_resource(settings)  # one instance id for the traces and the metrics
        existing = trace.get_tracer_provider()
        # When another SDK configuration came first, join its provider and add nothing to it.
        self.owns_tracer_provider = not isinstance(existing, TracerProvider)
        self.tracer_provider: Any = self._make_tracer_provider(settings) if self.owns_tracer_provider else existing
        self.bulk_histograms: Any = None
        self.meter_provider: Any = None
        self._telemetry = Telemetry(settings, trace.get_tracer("nexent_autoinstrument", __version__,
                                                               tracer_provider=self.tracer_provider),
                                    make_metrics=self._make_metrics)
        if settings.prometheus_port is not None:
            self._telemetry.prepare()  # (the instruments exist before the first scrape)
            self.metrics_server_port = serve_metrics(settings.prometheus_port)
        atexit.register(self.shutdown)
        _flush_on_sigterm(self)
        os.register_at_fork(after_in_child=self._flush_when_forked_child_exits)

    def _make_tracer_provider(self, settings: Settings) -> TracerProvider:
        provider = TracerProvider(resource=self.resource, shutdown_on_exit=False,
                                  sampler=ParentBased(TraceIdRatioBased(settings.sample_rate)),
                                  span_limits=_span_limits())
        for name in settings.traces_exporters:
            if name in SPAN_EXPORTERS:
                make_exporter = SPAN_EXPORTERS[name]
                provider.add_span_processor(ProcessorOnFirstSpan(
                    lambda make=make_exporter: BatchSpanProcessor(  # type: ignore[misc]
                        ExporterOnFirstExport(lambda: make(settings)), max_queue_size=MAX_QUEUED_SPANS,
                        export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000)))
        trace.set_tracer_provider(provider)
        return provider

    def _make_meter_provider(self, settings: Settings) -> Any:
        exporters = [METRIC_EXPORTERS[n](settings) for n in settings.metrics_exporters if n in METRIC_EXPORTERS]
        if not exporters:
            return None
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        from .bulk_export import WithBulkHistograms
        from .metrics import BulkHistograms

        self.bulk_histograms = BulkHistograms()
        readers = [PeriodicExportingMetricReader(WithBulkHistograms(e, self.bulk_histograms, self.resource),
                                                 export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000)
                   for e in exporters]
        provider = MeterProvider(metric_readers=readers, resource=self.resource, shutdown_on_exit=False)
        otel_metrics.set_meter_provider(provider)
        _quiet_repeated_exporter_warnings()
        return provider

    def _make_metrics(self) -> tuple[Any, Any]:
        """The metric instruments, and the OpenTelemetry meter provider (its reader starts a
        thread), made when the first call starts (see ``Telemetry.prepare``)."""
        from .metrics import HTTPMetrics, LLMMetrics

        self.meter_provider = self._make_meter_provider(self.settings)
        meter = self.meter_provider.get_meter("nexent_autoinstrument", __version__) if self.meter_provider else None
        return (LLMMetrics(meter=meter, max_model_labels=self.settings.max_model_labels, bulk=self.bulk_histograms),
                HTTPMetrics(meter=meter))

    def telemetry(self) -> Telemetry:
        """The shared state every call tracker records into."""
        return self._telemetry

    def _flush_when_forked_child_exits(self) -> None:
        """multiprocessing ends a forked child with os._exit, which skips atexit; its own exit
        hook (multiprocessing.util finalizers) still runs. The child's bootstrap clears the
        finalizers it inherited and then runs the after-fork callbacks, so register from one."""
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            util.register_after_fork(self, _finalize_on_exit)

    def shutdown(self) -> None:
        """At exit: the agent's thread finishes what it was given, every call still open is
        ended and the providers flush, once; exit is held up at most ``SHUTDOWN_BOUND_SECONDS``."""
        if self._shut_down:
            return
        guest.stop(AGENT_STOP_SECONDS)
        self.end_and_flush(bounded=True)

    def end_and_flush(self, bounded: bool = False) -> None:
        """End every call still open and flush and shut the providers down, once (``bounded``:
        on a thread of its own, waited for at most ``SHUTDOWN_BOUND_SECONDS``)."""
        if self._shut_down:
            return
        self._shut_down = True
        from .lifecycle import end_unfinished

        end_unfinished()  # before the providers flush: every call still open is ended and exported

        def flush_all() -> None:
            if self.owns_tracer_provider:
                self.tracer_provider.shutdown()
            if self.meter_provider is not None:
                self.meter_provider.shutdown(timeout_millis=SHUTDOWN_BOUND_SECONDS * 1000)

        if bounded:
            _run_bounded(flush_all, SHUTDOWN_BOUND_SECONDS)
        else:
            flush_all()

    def flush(self) -> None:
        """Export what has ended so far; the process goes on."""
        if self.owns_tracer_provider:
            self.tracer_provider.force_flush(int(SHUTDOWN_BOUND_SECONDS * 1000))
        if self.meter_provider is not None:
            self.meter_provider.force_flush(SHUTDOWN_BOUND_SECONDS * 1000)


def _finalize_on_exit(pipeline: Pipeline) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(pipeline, pipeline.shutdown, exitpriority=100)


def _flush_on_sigterm(pipeline: Pipeline) -> None:
    """Flush before dying of SIGTERM, which skips atexit. Installed only where nobody handles
    SIGTERM yet, so an application's own handler replaces it; servers such as uvicorn restore
    and re-raise the previous handler after their graceful shutdown, which brings us here.

    The handler runs wherever the main thread was interrupted, which may hold any lock: it only
    hands the work to the agent's thread and waits for it, at most ``SHUTDOWN_BOUND_SECONDS``.
    Still the installed handler, it then dies of the signal, as without the agent. Called by an
    application's own handler that chains to it, it flushes and returns: the application decides."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is not on_sigterm:
            guest.run_and_wait(pipeline.flush, SHUTDOWN_BOUND_SECONDS)
            return
        guest.run_and_wait(pipeline.end_and_flush, SHUTDOWN_BOUND_SECONDS)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # die of the signal, as without the agent

    signal.signal(signal.SIGTERM, on_sigterm)


def serve_metrics(port: int, addr: str = "0.0.0.0") -> int | None:
    """Serve /metrics on ``port`` (0 picks a free one); returns the port, or None if it is taken."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.registry import REGISTRY

    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        logger.warning("nexent-autoinstrument: cannot serve /metrics on PROMETHEUS_PORT=%s (%s)", port, exc)
        return None
    return int(server.server_address[1])

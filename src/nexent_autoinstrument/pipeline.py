"""The telemetry pipeline: resource, tracer and meter providers, exporters, /metrics server.

Built once per process by ``bootstrap.initialize``, as plain objects. The one-time set-up that
starts a thread or imports a network stack (the metric instruments, the meter provider, the
exporters, the agent's thread) happens when the application imports a library we instrument
(``Telemetry.prepare``): after its own start-up (gevent's ``patch_all`` included), never on an
event loop's first call, never at exit. Spans and metrics are exported by the agent's thread
(``exporting``) from bounded queues, so an unreachable collector costs dropped data and one
warning, never a blocked or failing application.
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
from collections.abc import Callable
from functools import partial
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from . import __version__, guest
from .exporting import SpanBatches, metric_reader, otlp_http_session
from .guard import export_warnings
from .lifecycle import end_unfinished
from .net import accepts_connections
from .process import multiprocessing_child
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
    """Lets the first export complaint through, saying where the data was going, and counts the
    repeats (an unreachable collector would otherwise log on every export interval and retry,
    for every signal)."""

    def __init__(self) -> None:
        super().__init__()
        #: Where the exporters send, as the first complaint names it (set when the pipeline is built).
        self.destinations = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        export_warnings["total"] += 1
        if export_warnings["total"] > 1:
            return False
        record.msg = (f"nexent-autoinstrument: exporting to {self.destinations or 'the collector'} failed: "
                      f"{record.getMessage()} (further export errors are counted, not logged)")
        record.args = None
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


_identities: dict[int, Resource] = {}


def fork_child_identity() -> Resource:
    """A fork child's own ``process.pid`` and ``service.instance.id`` (its metrics are its own,
    not its parent's), the same for the traces and the metrics."""
    pid = os.getpid()
    identity = _identities.get(pid)
    if identity is None:
        identity = _identities[pid] = Resource({"service.instance.id": str(uuid.uuid4()), "process.pid": pid})
    return identity


class ForkSafeTracerProvider(TracerProvider):
    """The SDK's tracer provider, but a fork child takes its own identity from
    ``fork_child_identity`` instead of re-running resource detection on a thread pool inside the
    fork hook (SDK 1.45 and later): that deadlocks the child whenever ``concurrent.futures``
    registered its own fork hook after the provider did, and starts threads in every child."""

    def _handle_fork(self) -> None:
        self._tracers_lock = threading.Lock()
        self._update_resource(fork_child_identity())


#: Longest span attribute value unless OTEL_*ATTRIBUTE_VALUE_LENGTH_LIMIT says otherwise: a
#: free-form model name or error message must not make spans unbounded.
MAX_ATTRIBUTE_LENGTH = 8192


def _span_limits() -> SpanLimits:
    configured = any(os.environ.get(name) for name in ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                                                        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"))
    return SpanLimits(max_span_attribute_length=None if configured else MAX_ATTRIBUTE_LENGTH)


def _otlp_timeout() -> dict[str, Any]:
    return {} if os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") else {"timeout": EXPORT_TIMEOUT_SECONDS}


def _signal_has_its_own_endpoint(signal: str) -> bool:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (or METRICS_): the exporter reads it, and it wins."""
    return bool(os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"))


def _otlp_options(settings: Settings, signal: str) -> dict[str, Any]:
    """The exporter's endpoint, from the validated settings: the exporters would read
    OTEL_EXPORTER_OTLP_ENDPOINT themselves, a rejected value too."""
    options = _otlp_timeout()
    if not _signal_has_its_own_endpoint(signal):
        base = settings.otlp_base
        options["endpoint"] = base if settings.otlp_protocol == "grpc" else f"{base}/v1/{signal}"
    return options


def _http_session(signal: str) -> dict[str, Any]:
    """The agent's session for an OTLP/HTTP exporter, unless a credential provider is named
    (``OTEL_PYTHON_EXPORTER_OTLP_HTTP_[TRACES_|METRICS_]CREDENTIAL_PROVIDER``): the exporter then
    exports through the session that provider makes."""
    named = ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
             f"OTEL_PYTHON_EXPORTER_OTLP_HTTP_{signal.upper()}_CREDENTIAL_PROVIDER")
    if any(os.environ.get(name) for name in named):
        return {}
    return {"session": otlp_http_session()}


def _otlp_span_exporter(settings: Settings) -> Any:
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc(**_otlp_options(settings, "traces"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http(**_otlp_options(settings, "traces"), **_http_session("traces"))


def _otlp_metric_exporter(settings: Settings) -> Any:
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(**_otlp_options(settings, "metrics"))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(**_otlp_options(settings, "metrics"), **_http_session("metrics"))


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


def _quieted(make: Callable[[Settings], Any], settings: Settings) -> Any:
    """An exporter whose loggers (made when its module is imported, which may be at the first
    export or at exit) complain once."""
    exporter = make(settings)
    _quiet_repeated_exporter_warnings()
    return exporter


def _destinations(settings: Settings) -> str:
    """Where the exporters send, as an export error names it."""
    named = []
    if "otlp" in settings.traces_exporters or "otlp" in settings.metrics_exporters:
        named.append(f"OTLP {settings.otlp_base}")
    if "jaeger" in settings.traces_exporters:
        from .jaeger_thrift import DEFAULT_COLLECTOR_ENDPOINT

        named.append(f"Jaeger {settings.jaeger_endpoint or DEFAULT_COLLECTOR_ENDPOINT}")
    return ", ".join(named)


def _run_bounded(action: Callable[[], Any], seconds: float) -> None:
    worker = threading.Thread(target=action, name="nexent-telemetry-shutdown", daemon=True)
    worker.start()
    worker.join(seconds)


class Pipeline:
    """The providers this process exports through, and how to flush them at exit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics_server_port: int | None = None
        self._shut_down = False  # a shutdown has begun ...
        self._flushed = False  # ... and ended
        self.resource = make_resource(settings)  # one instance id for the traces and the metrics
        self._span_processors: list[SpanBatches] = []
        self._otlp_spans: SpanBatches | None = None  # (the OTLP exporter's, if traces go over OTLP)
        EXPORT_WARNINGS.destinations = _destinations(settings)
        existing = trace.get_tracer_provider()
        # When another SDK configuration came first, join its provider and add nothing to it.
        self.owns_tracer_provider = not isinstance(existing, TracerProvider)
        self.tracer_provider: Any = self._make_tracer_provider(settings) if self.owns_tracer_provider else existing
        self.otel_points: Any = None
        self.meter_provider: Any = None
        self._telemetry = Telemetry(settings, trace.get_tracer("nexent_autoinstrument", __version__,
                                                               tracer_provider=self.tracer_provider),
                                    make_metrics=self._make_metrics)
        if settings.prometheus_port is not None:
            self._telemetry.prepare()  # (the instruments exist before the first scrape)
            self.metrics_server_port = serve_metrics(settings.prometheus_port)
        guest.on_fork(self._take_fork_child_identity)  # (also a fork before the metrics are made)
        atexit.register(self.shutdown)
        _flush_on_sigterm(self)
        os.register_at_fork(after_in_child=self._flush_when_forked_child_exits)

    def _make_tracer_provider(self, settings: Settings) -> TracerProvider:
        provider = ForkSafeTracerProvider(resource=self.resource, shutdown_on_exit=False,
                                  sampler=ParentBased(TraceIdRatioBased(settings.sample_rate)),
                                  span_limits=_span_limits())
        for name in settings.traces_exporters:
            if name in SPAN_EXPORTERS:
                processor = SpanBatches(partial(_quieted, SPAN_EXPORTERS[name], settings), MAX_QUEUED_SPANS)
                self._span_processors.append(processor)
                if name == "otlp":
                    self._otlp_spans = processor
                provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        return provider

    def _make_meter_provider(self, settings: Settings) -> Any:
        exporters = [METRIC_EXPORTERS[n](settings) for n in settings.metrics_exporters if n in METRIC_EXPORTERS]
        if not exporters:
            return None
        from opentelemetry.sdk.metrics import MeterProvider

        class ForkSafeMeterProvider(MeterProvider):
            """The SDK's meter provider, with a fork child's identity as ``ForkSafeTracerProvider``'s."""

            def _handle_fork(self) -> None:
                self._lock = threading.Lock()
                self._meter_lock = threading.Lock()
                type(self)._all_metric_readers_lock = threading.Lock()
                self._update_resource(fork_child_identity())

        from .metric_export import WithAgentPoints
        from .metrics import OTelPoints

        self.otel_points = OTelPoints(exemplars=settings.metrics_exemplar_filter != "always_off")
        guest.on_fork(self.otel_points.forget)
        readers = [metric_reader(WithAgentPoints(e, self.otel_points, lambda: self.resource)) for e in exporters]
        provider = ForkSafeMeterProvider(metric_readers=readers, resource=self.resource, shutdown_on_exit=False)
        otel_metrics.set_meter_provider(provider)
        _quiet_repeated_exporter_warnings()
        return provider

    def _take_fork_child_identity(self) -> None:
        """In a fork child: the identity its providers take too (``fork_child_identity``)."""
        self.resource = self.resource.merge(fork_child_identity())

    def _make_metrics(self) -> tuple[Any, Any, Any]:
        """The one-time set-up, when the application imports a library we instrument (or at
        the latest when its first call starts; see ``Telemetry.prepare``): the metric
        instruments, the OpenTelemetry meter provider (its reader starts a thread), the span
        processors and their exporters, and the price book."""
        from .cost import load_price_book
        from .metrics import HTTPMetrics, LLMMetrics

        guest.start()
        for processor in self._span_processors:
            processor.make_exporter()
        self.meter_provider = self._make_meter_provider(self.settings)
        points = self.otel_points
        service = (self.settings.service_name, self.settings.service_version)
        return (LLMMetrics(points=points, max_model_labels=self.settings.max_model_labels, service=service),
                HTTPMetrics(points=points), load_price_book(self.settings.prices_file) if self.settings.cost else None)

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
        end_unfinished()  # before the providers flush: every call still open is ended and exported

        def flush_all() -> None:
            try:
                self._drop_spans_nobody_takes()
                if self.owns_tracer_provider:
                    self.tracer_provider.shutdown()
                if self.meter_provider is not None:
                    self.meter_provider.shutdown(timeout_millis=SHUTDOWN_BOUND_SECONDS * 1000)
            finally:
                self._flushed = True

        if bounded:
            _run_bounded(flush_all, SHUTDOWN_BOUND_SECONDS)
        else:
            flush_all()

    def _drop_spans_nobody_takes(self) -> None:
        """At exit, with nothing accepting connections at the OTLP endpoint: say so once, with the
        number of spans that stay unexported, instead of retrying the export until the bound."""
        processor, url = self._otlp_spans, self.settings.otlp_base
        if processor is None or _signal_has_its_own_endpoint("traces") or accepts_connections(url):
            return
        dropped = processor.drop_queued()
        if dropped and export_warnings["total"] == 0:  # (else the first export error said where, once)
            logger.warning("nexent-autoinstrument: %d span(s) not exported: nothing accepts connections at %s "
                           "(start a collector there, or set OTEL_TRACES_EXPORTER=console to print them)",
                           dropped, url)
        export_warnings["total"] += bool(dropped)

    def flush(self) -> None:
        """Export what has ended so far; the process goes on."""
        if self.owns_tracer_provider:
            self.tracer_provider.force_flush(int(SHUTDOWN_BOUND_SECONDS * 1000))
        if self.meter_provider is not None:
            self.meter_provider.force_flush(SHUTDOWN_BOUND_SECONDS * 1000)

    def flush_ended_calls(self) -> None:
        """``flush``, after the agent's thread has ended what it was given (an application's own
        code only: a signal handler or a finalizer may not wait for it)."""
        if not guest.run_and_wait(self.flush, SHUTDOWN_BOUND_SECONDS) and not guest.started():
            self.flush()

    def wait_for_shutdown(self) -> None:
        """Once a shutdown has begun, wait until its flush has ended (at most the bound)."""
        guest.wait_until(lambda: self._flushed, SHUTDOWN_BOUND_SECONDS)


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
    application's own handler that chains to it, it flushes and returns: the application decides.

    Not in a fork child (the handler is given back to the default there) nor in a process that
    multiprocessing started: a pool's ``terminate()`` signals workers that may be about to block
    in a wait that no Python handler interrupts (the handler would never run, and the pool would
    wait for ever), where the default action kills them. Pool workers flush before each result
    instead (``instrumentors.multiprocessing``)."""
    if threading.current_thread() is not threading.main_thread() or multiprocessing_child():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        if pipeline._shut_down:  # exiting already: let its flush finish
            pipeline.wait_for_shutdown()
        elif signal.getsignal(signal.SIGTERM) is not on_sigterm:
            guest.run_and_wait(pipeline.flush, SHUTDOWN_BOUND_SECONDS)
            return
        else:
            guest.run_and_wait(pipeline.end_and_flush, SHUTDOWN_BOUND_SECONDS)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # die of the signal, as without the agent

    def default_in_fork_child() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, on_sigterm)
    guest.on_fork(default_in_fork_child)


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

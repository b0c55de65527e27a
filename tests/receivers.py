"""Real telemetry receivers for tests: OTLP/HTTP and OTLP/gRPC (protobuf decoded) and Jaeger Thrift."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


class _Store:
    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.lock = threading.Lock()

    def spans(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        with self.lock:
            requests = list(self.traces)
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        yield resource, span

    def metric_names(self) -> set[str]:
        with self.lock:
            return {m.name for r in self.metrics for rm in r.resource_metrics for sm in rm.scope_metrics
                    for m in sm.metrics}

    def metric_last(self, name: str) -> Any:
        """The metric ``name`` of the last export that had it."""
        with self.lock:
            found = None
            for request in self.metrics:
                for rm in request.resource_metrics:
                    for sm in rm.scope_metrics:
                        for metric in sm.metrics:
                            if metric.name == name:
                                found = metric
            return found

    def metric(self, name: str) -> Any:
        with self.lock:
            for request in self.metrics:
                for rm in request.resource_metrics:
                    for sm in rm.scope_metrics:
                        for metric in sm.metrics:
                            if metric.name == name:
                                return metric
        return None


def serve_posts(handle: Any) -> ThreadingHTTPServer:
    """A loopback HTTP server on a free port, calling ``handle(path, headers, body)`` for each
    POST; ``handle`` returns (status, content type, response body)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, content_type, payload = handle(self.path, self.headers, body)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class OTLPHTTPReceiver(_Store):
    """Accepts OTLP/HTTP protobuf on /v1/traces and /v1/metrics; also as a forward proxy would
    get them (the whole URL as the request's target). ``posts``: each one's target and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[str, dict[str, str]]] = []
        self.server = serve_posts(self._receive)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _receive(self, target: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        kinds = {"/v1/traces": (ExportTraceServiceRequest, self.traces),
                 "/v1/metrics": (ExportMetricsServiceRequest, self.metrics)}
        path = urlsplit(target).path
        if path in kinds:
            kind, store = kinds[path]
            message = kind()
            message.ParseFromString(body)
            with self.lock:
                self.posts.append((target, {k.lower(): v for k, v in headers.items()}))
                store.append(message)
        return 200, "application/x-protobuf", ExportTraceServiceResponse().SerializeToString()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OTLPGrpcReceiver(_Store):
    """Accepts OTLP/gRPC traces with the generated service stubs."""

    def __init__(self) -> None:
        super().__init__()
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        store = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
                with store.lock:
                    store.traces.append(request)
                return ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.stop(0)


class JaegerThriftReceiver:
    """Accepts Jaeger Thrift batches over HTTP and decodes them with the exporter's own classes."""

    def __init__(self) -> None:
        from nexent_autoinstrument.jaeger_thrift import _restore_environment_constants

        _restore_environment_constants()
        from opentelemetry.exporter.jaeger.thrift.gen.jaeger import ttypes
        from thrift.protocol import TBinaryProtocol
        from thrift.transport import TTransport

        self.batches: list[Any] = []  # (content type, decoded batch)
        self.raw: list[bytes] = []  # each batch's body, as it came

        def receive(path: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
            batch = ttypes.Batch()
            batch.read(TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(body)))
            self.raw.append(body)
            self.batches.append((headers.get("Content-Type"), batch))
            return 202, "text/plain", b""

        self.server = serve_posts(receive)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/api/traces"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

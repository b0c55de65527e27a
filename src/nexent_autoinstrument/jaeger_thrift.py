"""Jaeger Thrift over HTTP, made to import on current OpenTelemetry SDKs.

opentelemetry-exporter-jaeger-thrift (last released for SDK 1.21) imports constants that
left ``opentelemetry.sdk.environment_variables`` in SDK 1.40, and uses ``deprecated``
without declaring it. This module supplies the missing constant names before the import and
nothing else; the exporter's own code does the translation and the sending.
"""

from __future__ import annotations

from typing import Any

DEFAULT_COLLECTOR_ENDPOINT = "http://localhost:14268/api/traces"

_MISSING_CONSTANTS = (
    "OTEL_EXPORTER_JAEGER_AGENT_HOST",
    "OTEL_EXPORTER_JAEGER_AGENT_PORT",
    "OTEL_EXPORTER_JAEGER_AGENT_SPLIT_OVERSIZED_BATCHES",
    "OTEL_EXPORTER_JAEGER_ENDPOINT",
    "OTEL_EXPORTER_JAEGER_PASSWORD",
    "OTEL_EXPORTER_JAEGER_TIMEOUT",
    "OTEL_EXPORTER_JAEGER_USER",
)


def _restore_environment_constants() -> None:
    import opentelemetry.sdk.environment_variables as env_names

    for constant in _MISSING_CONSTANTS:
        if not hasattr(env_names, constant):
            setattr(env_names, constant, constant)


def make_exporter(endpoint: str | None, timeout_seconds: int = 5) -> Any:
    """A Jaeger exporter that posts Thrift batches to ``endpoint`` (the collector's /api/traces)."""
    import warnings

    _restore_environment_constants()
    from opentelemetry.exporter.jaeger.thrift import JaegerExporter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter warns on every construction
        return JaegerExporter(collector_endpoint=endpoint or DEFAULT_COLLECTOR_ENDPOINT, timeout=timeout_seconds)

"""Configuration: the environment, read once into one immutable, validated object.

Every variable the agent reads is declared in ``_VARIABLES`` below. A bad value never
stops the application: it produces exactly one warning that names the variable, the
bad value and the default used instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("nexent_autoinstrument")

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off", ""})
TRACE_EXPORTERS = frozenset({"otlp", "jaeger", "console", "none"})
METRIC_EXPORTERS = frozenset({"otlp", "console", "none"})
OTLP_PROTOCOLS = frozenset({"http/protobuf", "grpc"})
EXEMPLAR_FILTERS = frozenset({"trace_based", "always_on", "always_off"})
#: Which HTTP attempts of an LLM call get a span of their own under the call's span.
HTTP_ATTEMPT_SPANS = frozenset({"retries", "all"})


def telemetry_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """True when ``ENABLE_TELEMETRY`` holds one of true/1/yes/on, in any case."""
    return environ.get("ENABLE_TELEMETRY", "").strip().lower() in TRUE_WORDS


@dataclass(frozen=True)
class Settings:
    """Everything the agent was told by the environment, validated."""

    enabled: bool = False
    service_name: str = "python-service"
    service_version: str = "unknown"
    jaeger_endpoint: str | None = None
    sample_rate: float = 1.0
    slow_request_threshold_seconds: float = 5.0
    slow_token_rate_threshold: float = 10.0
    stall_threshold_seconds: float = 2.0
    token_timestamps_max: int = 1000
    inject_stream_usage: bool = False
    http_attempt_spans: str = "retries"
    capture_content: bool = False
    max_model_labels: int = 100
    prometheus_port: int | None = None
    traces_exporters: tuple[str, ...] = ("otlp",)
    metrics_exporters: tuple[str, ...] = ("none",)
    #: Whether OpenTelemetry metric points carry exemplars (of sampled calls): all but ``always_off``.
    metrics_exemplar_filter: str = "trace_based"
    #: The collector's base URL (None: the default of ``otlp_protocol``, see ``otlp_base``).
    otlp_endpoint: str | None = None
    otlp_protocol: str = "http/protobuf"
    disabled_instrumentations: frozenset[str] = frozenset()
    #: Whether calls are priced (``cost.py``), and a JSON file of the user's own prices, which win
    #: over genai-prices' table.
    cost: bool = True
    prices_file: str | None = None

    @property
    def otlp_base(self) -> str:
        """Where the OTLP exporters send: the validated base URL, else the protocol's default."""
        return self.otlp_endpoint or OTLP_DEFAULT_ENDPOINTS[self.otlp_protocol]


class _Invalid(ValueError):
    """A value that cannot be used; the message says why."""


class _Corrected(ValueError):
    """A value that is used once corrected (``value``); the message says why."""

    def __init__(self, why: str, value: Any) -> None:
        super().__init__(why)
        self.value = value


#: Where the OTLP exporters send without OTEL_EXPORTER_OTLP_ENDPOINT, by protocol.
OTLP_DEFAULT_ENDPOINTS = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}
_SIGNAL_PATHS = ("/v1/traces", "/v1/metrics", "/v1/logs")


def _parse_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise _Invalid("expected true/false, 1/0, yes/no or on/off")


def _number(kind: type, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise _Invalid(f"not a{'n integer' if kind is int else ' number'}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise _Invalid("not a finite number")
        if low is not None and (value < low or (low_open and value == low)):
            raise _Invalid(f"must be {'above' if low_open else 'at least'} {low}")
        if high is not None and value > high:
            raise _Invalid(f"must be at most {high}")
        return value
    return parse


def _name_list(allowed: frozenset[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(raw: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
        unknown = [n for n in names if n not in allowed]
        if not names or unknown:
            raise _Invalid(f"expected a comma-separated list of {', '.join(sorted(allowed))}")
        if "none" in names:
            return ("none",)
        return names
    return parse


def _choice(allowed: frozenset[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        word = raw.strip().lower()
        if word not in allowed:
            raise _Invalid(f"expected one of {', '.join(sorted(allowed))}")
        return word
    return parse


def _url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("http://", "https://")):
        raise _Invalid("expected an http:// or https:// URL")
    return value


def _otlp_base(raw: str) -> str:
    """The base URL of an OTLP collector: the exporters add each signal's path to it."""
    value = _url(raw).rstrip("/")
    for path in _SIGNAL_PATHS:
        if value.endswith(path):
            raise _Corrected(f"it ends with the signal path {path}, which the exporters add to the base URL "
                             f"themselves (a full signal URL goes in OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)",
                             value[:-len(path)])
    return value


def _text(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise _Invalid("must not be empty")
    return value


def _name_set(raw: str) -> frozenset[str]:
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


# (environment variable, Settings field, parser). Order matters only where two
# variables feed one field: the later one that is set wins.
_VARIABLES: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("ENABLE_TELEMETRY", "enabled", _parse_bool),
    ("SERVICE_NAME", "service_name", _text),
    ("OTEL_SERVICE_NAME", "service_name", _text),
    ("SERVICE_VERSION", "service_version", _text),
    ("JAEGER_ENDPOINT", "jaeger_endpoint", _url),
    ("TELEMETRY_SAMPLE_RATE", "sample_rate", _number(float, 0.0, 1.0)),
    ("LLM_SLOW_REQUEST_THRESHOLD_SECONDS", "slow_request_threshold_seconds", _number(float, 0.0, low_open=True)),
    ("LLM_SLOW_TOKEN_RATE_THRESHOLD", "slow_token_rate_threshold", _number(float, 0.0)),
    ("LLM_STALL_THRESHOLD_SECONDS", "stall_threshold_seconds", _number(float, 0.0, low_open=True)),
    ("LLM_TOKEN_TIMESTAMPS_MAX", "token_timestamps_max", _number(int, 0, 1_000_000)),
    ("LLM_INJECT_STREAM_USAGE", "inject_stream_usage", _parse_bool),
    ("LLM_HTTP_ATTEMPT_SPANS", "http_attempt_spans", _choice(HTTP_ATTEMPT_SPANS)),
    ("LLM_MAX_MODEL_LABELS", "max_model_labels", _number(int, 1, 10_000)),
    ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "capture_content", _parse_bool),
    ("PROMETHEUS_PORT", "prometheus_port", _number(int, 0, 65535)),
    ("OTEL_TRACES_EXPORTER", "traces_exporters", _name_list(TRACE_EXPORTERS)),
    ("OTEL_METRICS_EXPORTER", "metrics_exporters", _name_list(METRIC_EXPORTERS)),
    ("OTEL_METRICS_EXEMPLAR_FILTER", "metrics_exemplar_filter", _choice(EXEMPLAR_FILTERS)),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "otlp_endpoint", _otlp_base),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "otlp_protocol", _choice(OTLP_PROTOCOLS)),
    ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "disabled_instrumentations", _name_set),
    ("LLM_COST", "cost", _parse_bool),
    ("LLM_PRICES_FILE", "prices_file", _text),
)

DOCUMENTED_VARIABLES: tuple[str, ...] = tuple(name for name, _, _ in _VARIABLES)

#: What a default of None means, as a warning says it.
_NONE_MEANS = {
    "otlp_endpoint": " or ".join(f"{url} ({protocol})" for protocol, url in OTLP_DEFAULT_ENDPOINTS.items()),
    "prometheus_port": "none (no /metrics server)",
    "jaeger_endpoint": "none (no Jaeger export)",
    "prices_file": "none (genai-prices' table alone)",
}


def _described(field: str, value: Any) -> str:
    """``value`` of ``field`` as a person reads it in a warning."""
    if value is None:
        return _NONE_MEANS.get(field, "none")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, frozenset)):
        return ",".join(sorted(value)) or "none"
    return str(value)


def _resource_service_name(environ: Mapping[str, str]) -> str | None:
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    return None


def _default_service_name() -> str:
    """A name from the program itself, so that no process shows up as unknown_service."""
    argv = getattr(sys, "argv", None) or [""]
    script = os.path.basename(argv[0] or "")
    stem = script.rsplit(".", 1)[0] if script.endswith(".py") else script
    return stem if stem and stem not in ("-c", "-m", "python", "__main__") else "python-service"


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Read the environment into ``Settings``, warning once per bad value."""
    values: dict[str, Any] = {}
    defaults = Settings()
    for name, field, parse in _VARIABLES:
        raw = environ.get(name)
        if raw is None or (raw.strip() == "" and field != "enabled"):
            continue
        try:
            values[field] = parse(raw)
        except _Invalid as why:
            logger.warning("nexent-autoinstrument: ignoring %s=%r (%s); using the default: %s",
                           name, raw, why, _described(field, getattr(defaults, field)))
        except _Corrected as why:
            values[field] = why.value
            logger.warning("nexent-autoinstrument: %s=%r: %s; using %s", name, raw, why,
                           _described(field, why.value))
    if "OTEL_SERVICE_NAME" not in environ:
        from_resource = _resource_service_name(environ)
        if from_resource:
            values["service_name"] = from_resource
    values.setdefault("service_name", _default_service_name())
    if "OTEL_TRACES_EXPORTER" not in environ and values.get("jaeger_endpoint"):
        values["traces_exporters"] = ("jaeger",)
    return Settings(**values)


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _cached
    if _cached is None:
        _cached = load_settings()
    return _cached

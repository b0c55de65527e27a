"""Every variable the agent reads: valid values are used, bad ones give one clear warning."""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

import pytest

from nexent_autoinstrument import settings as settings_module
from nexent_autoinstrument.settings import DOCUMENTED_VARIABLES, Settings, load_settings

DEFAULTS = Settings()


@pytest.mark.parametrize("word", ["true", "TRUE", "1", "yes", "On", " on "])
def test_enable_telemetry_accepts_true_words_in_any_case(word: str) -> None:
    assert load_settings({"ENABLE_TELEMETRY": word}).enabled


@pytest.mark.parametrize("word", ["", "false", "0", "no", "off"])
def test_enable_telemetry_is_off_by_default_and_for_false_words(word: str) -> None:
    assert not load_settings({}).enabled
    assert not load_settings({"ENABLE_TELEMETRY": word}).enabled


GOOD = [
    ({"SERVICE_NAME": "svc"}, "service_name", "svc"),
    ({"SERVICE_NAME": "svc", "OTEL_SERVICE_NAME": "otel-svc"}, "service_name", "otel-svc"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-res,team=a"}, "service_name", "from-res"),
    ({"SERVICE_VERSION": "1.2.3"}, "service_version", "1.2.3"),
    ({"JAEGER_ENDPOINT": "http://j:14268/api/traces"}, "traces_exporters", ("jaeger",)),
    ({"JAEGER_ENDPOINT": "http://j:14268/api/traces", "OTEL_TRACES_EXPORTER": "otlp"}, "traces_exporters", ("otlp",)),
    ({"TELEMETRY_SAMPLE_RATE": "0.25"}, "sample_rate", 0.25),
    ({"LLM_SLOW_REQUEST_THRESHOLD_SECONDS": "2.5"}, "slow_request_threshold_seconds", 2.5),
    ({"LLM_SLOW_TOKEN_RATE_THRESHOLD": "3"}, "slow_token_rate_threshold", 3.0),
    ({"LLM_STALL_THRESHOLD_SECONDS": "0.5"}, "stall_threshold_seconds", 0.5),
    ({"LLM_TOKEN_TIMESTAMPS_MAX": "10"}, "token_timestamps_max", 10),
    ({"LLM_INJECT_STREAM_USAGE": "true"}, "inject_stream_usage", True),
    ({"LLM_HTTP_ATTEMPT_SPANS": "ALL"}, "http_attempt_spans", "all"),
    ({"LLM_MAX_MODEL_LABELS": "5"}, "max_model_labels", 5),
    ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}, "capture_content", True),
    ({"PROMETHEUS_PORT": "9464"}, "prometheus_port", 9464),
    ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "traces_exporters", ("otlp", "console")),
    ({"OTEL_TRACES_EXPORTER": "none"}, "traces_exporters", ("none",)),
    ({"OTEL_METRICS_EXPORTER": "otlp"}, "metrics_exporters", ("otlp",)),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "otlp_endpoint", "http://c:4318"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp_protocol", "grpc"),
    ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai, fastapi"}, "disabled_instrumentations",
     frozenset({"openai", "fastapi"})),
]


@pytest.mark.parametrize(("env", "field", "expected"), GOOD, ids=[next(iter(e)) for e, _, _ in GOOD])
def test_valid_values_are_used(env: dict[str, str], field: str, expected: object) -> None:
    assert getattr(load_settings(env), field) == expected


BAD = [
    ("ENABLE_TELEMETRY", "maybe"),
    ("TELEMETRY_SAMPLE_RATE", "abc"),
    ("TELEMETRY_SAMPLE_RATE", "7"),
    ("TELEMETRY_SAMPLE_RATE", "-0.1"),
    ("TELEMETRY_SAMPLE_RATE", "nan"),
    ("LLM_SLOW_REQUEST_THRESHOLD_SECONDS", "-1"),
    ("LLM_SLOW_REQUEST_THRESHOLD_SECONDS", "0"),
    ("LLM_SLOW_REQUEST_THRESHOLD_SECONDS", "slow"),
    ("LLM_SLOW_TOKEN_RATE_THRESHOLD", "-5"),
    ("LLM_STALL_THRESHOLD_SECONDS", "inf"),
    ("LLM_TOKEN_TIMESTAMPS_MAX", "1.5"),
    ("LLM_TOKEN_TIMESTAMPS_MAX", "-3"),
    ("LLM_INJECT_STREAM_USAGE", "sometimes"),
    ("LLM_HTTP_ATTEMPT_SPANS", "some"),
    ("LLM_MAX_MODEL_LABELS", "0"),
    ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "all"),
    ("PROMETHEUS_PORT", "http"),
    ("PROMETHEUS_PORT", "70000"),
    ("JAEGER_ENDPOINT", "localhost:14268"),
    ("OTEL_TRACES_EXPORTER", "zipkin"),
    ("OTEL_METRICS_EXPORTER", "prometheus,otlp"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
]


@pytest.mark.parametrize(("name", "raw"), BAD, ids=[f"{n}={r}" for n, r in BAD])
def test_bad_value_gives_exactly_one_warning_with_variable_value_and_default(
        name: str, raw: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nexent_autoinstrument"):
        loaded = load_settings({name: raw})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert name in warnings[0] and repr(raw) in warnings[0] and "default" in warnings[0]
    assert loaded == load_settings({})  # the default is what is used


def test_every_documented_variable_is_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name in DOCUMENTED_VARIABLES if f"`{name}`" not in readme]
    assert not missing


@pytest.mark.parametrize(("argv", "expected"), [
    (["/srv/app/main_service.py", "--port", "1"], "main_service"),
    (["worker"], "worker"),
    (["-c"], "python-service"),
    (["-m"], "python-service"),
    (["/venv/lib/python3.11/site-packages/pkg/__main__.py"], "python-service"),
    ([""], "python-service"),
    ([], "python-service"),
])
def test_service_name_is_never_unknown_service(argv: list[str], expected: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    assert load_settings({}).service_name == expected
    assert load_settings({"SERVICE_NAME": "svc"}).service_name == "svc"


def test_settings_are_immutable_and_read_once(monkeypatch: Any) -> None:
    loaded = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.enabled = True  # type: ignore[misc]
    assert loaded.enabled is False
    monkeypatch.setattr(settings_module, "_cached", None)
    monkeypatch.setenv("ENABLE_TELEMETRY", "true")
    first = settings_module.get_settings()
    monkeypatch.setenv("ENABLE_TELEMETRY", "false")  # a later change is not seen: read once, at start
    assert settings_module.get_settings() is first and first.enabled is True


@pytest.mark.parametrize("raw", ["http://collector:4318/v1/traces", "https://collector:4318/v1/metrics/"])
def test_a_signal_path_in_the_base_endpoint_is_named_and_cut(raw: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nexent_autoinstrument"):
        loaded = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": raw})
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert repr(raw) in warning and "/v1/" in warning and f"using {loaded.otlp_endpoint}" in warning
    assert loaded.otlp_endpoint == raw.split("/v1/")[0] == loaded.otlp_base

"""``nexent-autoinstrument doctor``: the troubleshooting guide as one command.

Each check prints OK, WARN or FAIL, and every problem comes with its fix. The exit code
is 1 when a check failed, else 0. Nothing is changed and nothing is exported.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

from . import __version__
from .bootstrap import opentelemetry_installed
from .demo import reachable
from .settings import Settings, load_settings

Check = tuple[str, str, str]  # (status, what, fix)
OK, WARN, FAIL = "OK", "WARN", "FAIL"

LIBRARIES = {"openai": "openai >= 1.40.0, < 4", "httpx": "httpx >= 0.23", "httpx2": "httpx2 >= 2"}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _settings_with_warnings() -> tuple[Settings, list[str]]:
    handler = _Collect()
    logger = logging.getLogger("nexent_autoinstrument")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        return load_settings(), handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def check_enabled(settings: Settings, warnings: list[str]) -> Iterator[Check]:
    raw = os.environ.get("ENABLE_TELEMETRY")
    if settings.enabled:
        yield OK, f"telemetry is enabled (ENABLE_TELEMETRY={raw})", ""
    else:
        yield WARN, f"telemetry is off (ENABLE_TELEMETRY={raw!r})", "export ENABLE_TELEMETRY=true"
    if opentelemetry_installed():
        yield OK, "MONITORING_AVAILABLE=True: OpenTelemetry and prometheus_client are installed", ""
    else:
        yield FAIL, "MONITORING_AVAILABLE=False: OpenTelemetry is not installed", \
            "pip install 'nexent-autoinstrument[performance]'"


def check_configuration(settings: Settings, warnings: list[str]) -> Iterator[Check]:
    for message in warnings:
        yield FAIL, message.replace("nexent-autoinstrument: ", ""), "fix or unset that variable"
    if not warnings:
        yield OK, "every environment variable the agent reads has a valid value", ""
    source = ("OTEL_SERVICE_NAME" if os.environ.get("OTEL_SERVICE_NAME") else
              "SERVICE_NAME" if os.environ.get("SERVICE_NAME") else "the program's name")
    if settings.service_name.startswith("unknown_service"):
        yield FAIL, f"service name is {settings.service_name!r}", "export SERVICE_NAME=my-service"
    elif source == "the program's name":
        yield WARN, "SERVICE_NAME is not set: each process is named after its script (never unknown_service)", \
            "export SERVICE_NAME=my-service to choose the name"
    else:
        yield OK, f"service name {settings.service_name!r} (from {source})", ""
    if settings.capture_content:
        yield WARN, "prompts and completions are recorded on spans (content capture is on)", \
            "unset OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT unless you need it"


def _otlp_endpoint(settings: Settings) -> str:
    default = "http://localhost:4317" if settings.otlp_protocol == "grpc" else "http://localhost:4318"
    return settings.otlp_endpoint or default


def check_endpoints(settings: Settings, warnings: list[str]) -> Iterator[Check]:
    uses_otlp = "otlp" in settings.traces_exporters or "otlp" in settings.metrics_exporters
    if uses_otlp:
        endpoint = _otlp_endpoint(settings)
        if reachable(endpoint):
            yield OK, f"OTLP collector reachable at {endpoint} ({settings.otlp_protocol})", ""
        else:
            yield FAIL, f"nothing listens at the OTLP endpoint {endpoint}: traces will be dropped", \
                "start the stack (./docker/start-monitoring.sh) or set OTEL_EXPORTER_OTLP_ENDPOINT"
    if "jaeger" in settings.traces_exporters:
        from .jaeger_thrift import DEFAULT_COLLECTOR_ENDPOINT

        endpoint = settings.jaeger_endpoint or DEFAULT_COLLECTOR_ENDPOINT
        try:
            from .jaeger_thrift import _restore_environment_constants

            _restore_environment_constants()
            import opentelemetry.exporter.jaeger.thrift  # noqa: F401
        except ImportError as exc:
            yield FAIL, f"the Jaeger Thrift exporter does not import ({exc})", \
                "pip install 'nexent-autoinstrument[jaeger]'"
        if reachable(endpoint):
            yield OK, f"Jaeger collector reachable at {endpoint}", ""
        else:
            yield FAIL, f"nothing listens at JAEGER_ENDPOINT {endpoint}", \
                "start Jaeger (./docker/start-monitoring.sh) or use OTLP: unset JAEGER_ENDPOINT"
    if settings.traces_exporters == ("none",):
        yield WARN, "OTEL_TRACES_EXPORTER=none: no traces leave the process", "set it to otlp"
    if settings.prometheus_port is not None:
        url = f"http://127.0.0.1:{settings.prometheus_port}"
        state = "something already listens there" if reachable(url) else "free"
        yield OK, f"PROMETHEUS_PORT={settings.prometheus_port}: /metrics is served there ({state} now)", ""
    else:
        yield WARN, "PROMETHEUS_PORT is not set: /metrics exists only where setup_fastapi_app(app) is called", \
            "export PROMETHEUS_PORT=9464 for services that are not FastAPI apps"
    for name, url in (("Prometheus", "http://localhost:9090"), ("Grafana", "http://localhost:3005"),
                      ("Jaeger UI", "http://localhost:16686")):
        if reachable(url):
            yield OK, f"{name} reachable at {url}", ""
        else:
            yield WARN, f"{name} is not running at {url}", "./docker/start-monitoring.sh"


def check_libraries(settings: Settings, warnings: list[str]) -> Iterator[Check]:
    from importlib.metadata import PackageNotFoundError, version

    for library, supported in LIBRARIES.items():
        try:
            installed = version(library)
        except PackageNotFoundError:
            yield OK, f"{library} is not installed (nothing to instrument)", ""
            continue
        if library in settings.disabled_instrumentations:
            yield WARN, f"{library} {installed}: disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", ""
            continue
        if _in_range(installed, supported):
            yield OK, f"{library} {installed} is in the supported range ({supported})", ""
        else:
            yield FAIL, f"{library} {installed} is outside the supported range ({supported})", \
                f"pip install '{supported}'"


def _in_range(installed: str, requirement: str) -> bool:
    try:
        from packaging.requirements import Requirement

        return Requirement(requirement).specifier.contains(installed, prereleases=True)
    except ImportError:  # packaging comes with opentelemetry-instrumentation; without it, trust
        return True


def check_loading(settings: Settings, warnings: list[str]) -> Iterator[Check]:
    from importlib.metadata import entry_points

    purelib = Path(sysconfig.get_paths()["purelib"])
    pth = purelib / "nexent_autoinstrument.pth"
    if pth.exists():
        yield OK, f"auto-load hook installed ({pth})", ""
    else:
        yield WARN, "auto-load hook not found: plain `python app.py` is not instrumented", \
            "reinstall the package with pip, or run under opentelemetry-instrument"
    distros = sorted(ep.name for ep in entry_points(group="opentelemetry_distro"))
    if len(distros) > 1 and os.environ.get("OTEL_PYTHON_DISTRO") != "nexent":
        yield FAIL, f"several OpenTelemetry distros are installed ({', '.join(distros)})", \
            "export OTEL_PYTHON_DISTRO=nexent OTEL_PYTHON_CONFIGURATOR=nexent"
    elif distros:
        yield OK, f"OpenTelemetry distro(s): {', '.join(distros)}", ""
    instrumentors = sorted(ep.name for ep in entry_points(group="opentelemetry_instrumentor"))
    if instrumentors:
        yield OK, f"instrumentors opentelemetry-instrument will load: {', '.join(instrumentors)}", ""


CHECKS: tuple[tuple[str, Callable[[Settings, list[str]], Iterator[Check]]], ...] = (
    ("Telemetry", check_enabled),
    ("Configuration", check_configuration),
    ("Endpoints", check_endpoints),
    ("Libraries", check_libraries),
    ("Loading", check_loading),
)


def main(argv: list[str] | None = None) -> None:
    """Run every check and print the report."""
    argparse.ArgumentParser(prog="nexent-autoinstrument doctor", description=__doc__.split("\n")[0]).parse_args(argv)
    settings, warnings = _settings_with_warnings()
    print(f"nexent-autoinstrument {__version__} doctor (python {sys.version.split()[0]})")
    failed = 0
    for title, check in CHECKS:
        print(f"\n{title}")
        for status, what, fix in check(settings, warnings):
            if status == FAIL and title == "Endpoints" and not settings.enabled:
                status = WARN  # nothing is exported while telemetry is off
            failed += status == FAIL
            print(f"  [{status:<4}] {what}" + (f"\n         fix: {fix}" if fix and status != OK else ""))
    print(f"\n{failed} problem(s) found." if failed else "\nNo problems found.")
    sys.exit(1 if failed else 0)

"""``nexent-autoinstrument doctor``: the troubleshooting guide as one command.

Each check prints OK, WARN, FAIL or SKIP, and every problem comes with its fix. The exit code
is 1 when a check failed, else 0. Nothing is changed and nothing is exported. With telemetry
off, the collectors and the monitoring stack are not checked: nothing would be sent to them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import __version__
from ..adapters import bedrock
from ..adapters.endpoints import HTTP_CLIENTS, PROTOCOLS
from ..bootstrap import opentelemetry_installed
from ..cli import COMMANDS
from ..settings import Settings, load_settings
from .net import reachable

Check = tuple[str, str, str]  # (status, what, fix)
OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"

#: The SDKs (patched, or measured over httpx), botocore (Bedrock) and the HTTP clients the agent
#: instruments, with the releases supported: from the protocol registry and Bedrock's declaration.
LIBRARIES = {**{protocol.sdk.package: ", ".join(protocol.sdk.supported) for protocol in PROTOCOLS if protocol.sdk},
             bedrock.BOTOCORE.package: ", ".join(bedrock.BOTOCORE.supported),
             **{client: ", ".join(supported) for client, supported in HTTP_CLIENTS.items()}}
START_SCRIPT = Path("docker") / "start-monitoring.sh"
INSTALL_PERFORMANCE = "pip install '.[performance]' in a checkout (or the wheel with [performance])"


def start_stack_hint() -> str:
    """How to start the monitoring stack from here: the checkout's script when there is one (in the
    current directory, or the checkout this package is installed from), else where to read about it."""
    if START_SCRIPT.is_file():
        return f"./{START_SCRIPT}"
    for parent in Path(__file__).resolve().parents:
        if (parent / START_SCRIPT).is_file() and (parent / "pyproject.toml").is_file():
            return str(parent / START_SCRIPT)
    return "see \"Monitoring stack\" in the README: docker/docker-compose-monitoring.yml in the source repository"


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
        value = "unset" if raw is None else repr(raw)
        yield WARN, f"ENABLE_TELEMETRY is {value} (telemetry off): the agent measures and exports nothing", \
            "export ENABLE_TELEMETRY=true in the service's environment"
    if opentelemetry_installed():
        yield OK, "MONITORING_AVAILABLE=True: OpenTelemetry and prometheus_client are installed", ""
    else:
        yield FAIL, "MONITORING_AVAILABLE=False: OpenTelemetry is not installed", INSTALL_PERFORMANCE


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


def check_endpoints(settings: Settings, warnings: list[str]) -> Iterator[Check]:
    if not settings.enabled:
        yield SKIP, "collectors and the monitoring stack not checked: telemetry is off, nothing is sent", ""
        return
    start = start_stack_hint()
    uses_otlp = "otlp" in settings.traces_exporters or "otlp" in settings.metrics_exporters
    if uses_otlp:
        endpoint = settings.otlp_base
        if reachable(endpoint):
            yield OK, f"OTLP collector reachable at {endpoint} ({settings.otlp_protocol})", ""
        else:
            yield FAIL, f"nothing listens at the OTLP endpoint {endpoint}: traces will be dropped", \
                f"start the monitoring stack: {start}; or set OTEL_EXPORTER_OTLP_ENDPOINT"
    if "jaeger" in settings.traces_exporters:
        from ..jaeger_thrift import DEFAULT_COLLECTOR_ENDPOINT

        endpoint = settings.jaeger_endpoint or DEFAULT_COLLECTOR_ENDPOINT
        try:
            from ..jaeger_thrift import _restore_environment_constants

            _restore_environment_constants()
            import opentelemetry.exporter.jaeger.thrift  # noqa: F401
        except ImportError as exc:
            yield FAIL, f"the Jaeger Thrift exporter does not import ({exc})", \
                "pip install '.[jaeger]' in a checkout (or the wheel with [jaeger])"
        if reachable(endpoint):
            yield OK, f"Jaeger collector reachable at {endpoint}", ""
        else:
            yield FAIL, f"nothing listens at JAEGER_ENDPOINT {endpoint}", \
                f"start Jaeger: {start}; or use OTLP: unset JAEGER_ENDPOINT"
    if settings.traces_exporters == ("none",):
        yield WARN, "OTEL_TRACES_EXPORTER=none: no traces leave the process", "set it to otlp"
    if settings.prometheus_port is not None:
        url = f"http://127.0.0.1:{settings.prometheus_port}"
        state = "something already listens there" if reachable(url) else "free"
        yield OK, f"PROMETHEUS_PORT={settings.prometheus_port}: /metrics is served there ({state} now)", ""
    else:
        yield WARN, "PROMETHEUS_PORT is not set: /metrics exists only where setup_fastapi_app(app) is called", \
            "export PROMETHEUS_PORT=9464 for services that are not FastAPI apps"
    down = []
    for name, url in (("Prometheus", "http://localhost:9090"), ("Grafana", "http://localhost:3005"),
                      ("Jaeger UI", "http://localhost:16686")):
        if reachable(url):
            yield OK, f"{name} reachable at {url}", ""
        else:
            down.append(f"{name} ({url})")
    if down:
        yield WARN, f"not running: {', '.join(down)}; the dashboards and trace search need them", start


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
    if shutil.which("opentelemetry-instrument") is None:
        yield OK, "opentelemetry-instrument is not installed: auto-load (ENABLE_TELEMETRY=true) is the way in", \
            ""
        return
    instrumentors = sorted({ep.name for ep in entry_points(group="opentelemetry_instrumentor")})
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
    argparse.ArgumentParser(prog="nexent-autoinstrument doctor", description=COMMANDS["doctor"][1]).parse_args(argv)
    settings, warnings = _settings_with_warnings()
    print(f"nexent-autoinstrument {__version__} doctor (python {sys.version.split()[0]})")
    failed = warned = 0
    for title, check in CHECKS:
        print(f"\n{title}")
        for status, what, fix in check(settings, warnings):
            failed += status == FAIL
            warned += status == WARN
            print(f"  [{status:<4}] {what}" + (f"\n         fix: {fix}" if fix and status != OK else ""))
    print()
    print(summary(failed, warned, settings.enabled))
    sys.exit(1 if failed else 0)


def summary(failed: int, warned: int, enabled: bool) -> str:
    """The last line of the report, consistent with the lines above it."""
    counts = ", ".join(f"{n} {word}{'s' if n > 1 else ''}" for n, word in ((failed, "problem"), (warned, "warning"))
                       if n)
    if not enabled:
        return (f"Telemetry is off ({counts} above): the agent measures nothing. Turn it on with "
                "ENABLE_TELEMETRY=true in the service's environment, and run the doctor again with it set "
                "to check the collectors.")
    if failed:
        return f"{counts} found above: see each fix."
    return f"No problems found ({counts})." if warned else "No problems found."

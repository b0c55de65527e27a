"""Bootstrap: the single, idempotent way into the agent, whichever door was used.

Doors: the ``opentelemetry-instrument`` distro, configurator and post-instrument hooks
(entry points named ``nexent``), the auto-load .pth hook, and the manual API. All of them
call ``initialize``; the first call builds the pipeline, the others return what it built.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from .guard import report_internal_error
from .process import PREFORK_SERVERS, program_name
from .settings import get_settings

logger = logging.getLogger("nexent_autoinstrument")

_lock = threading.Lock()
_initialized = False
_telemetry: Any = None
_pipeline: Any = None
#: How many pipelines this process built: 1 when telemetry is on, whichever doors were used.
pipelines_built = 0
#: How the agent was started in this process ("auto-load", "opentelemetry-instrument", "manual").
started_by: str | None = None


def opentelemetry_installed() -> bool:
    """True when the OpenTelemetry SDK and prometheus_client are installed; imports neither
    (``find_spec`` of a submodule would import the parent package, so look at the directory)."""
    from importlib.util import find_spec

    try:
        otel = find_spec("opentelemetry")
        if otel is None or find_spec("prometheus_client") is None:
            return False
        return any(os.path.isdir(os.path.join(path, "sdk")) for path in otel.submodule_search_locations or ())
    except (ImportError, ValueError):
        return False


#: Keyword arguments our doors give other libraries' instrumentors. The ASGI instrumentation
#: otherwise makes one span per streamed body chunk: for an LLM relay, one span per token.
INSTRUMENTOR_OPTIONS: dict[str, dict[str, Any]] = {"fastapi": {"exclude_spans": ["receive", "send"]}}


def _instrument_fastapi(module: Any) -> None:
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        instrumentor = FastAPIInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(skip_dep_check=True, **INSTRUMENTOR_OPTIONS["fastapi"])
        if _telemetry is not None:
            _telemetry.prepare()  # (its spans end on the event loop: nothing is made there)
    except ImportError:
        logger.info("nexent-autoinstrument: opentelemetry-instrumentation-fastapi is not installed; "
                    "FastAPI requests are not traced")
    except Exception as exc:
        report_internal_error("instrument.fastapi", exc)


def _activate(layer: str, library: str) -> Callable[[Any], None]:
    """When ``library`` is imported: switch on our layer for it (its module is imported then)."""
    def on_import(module: Any) -> None:
        from importlib import import_module

        import_module(f"nexent_autoinstrument.instrumentors.{layer}").activate(library)
    return on_import


#: What auto-load and the manual API instrument, by the names of
#: OTEL_PYTHON_DISABLED_INSTRUMENTATIONS (``opentelemetry-instrument`` does this itself, through
#: our entry points): when the library is imported, and not before, so that a process that never
#: imports it pays nothing for it.
ON_IMPORT: dict[str, tuple[str, Callable[[Any], None]]] = {
    "openai": ("openai", _activate("stainless", "openai")),
    "anthropic": ("anthropic", _activate("stainless", "anthropic")),
    "httpx": ("httpx", _activate("httpx", "httpx")),
    "httpx2": ("httpx2", _activate("httpx", "httpx2")),
    "aiohttp": ("aiohttp", _activate("aiohttp", "aiohttp")),
    "bedrock": ("botocore", _activate("botocore", "botocore")),
    "fastapi": ("fastapi", _instrument_fastapi),
}


#: The libraries the agent's own layers instrument (the rest are other projects' instrumentations).
OWN_INSTRUMENTATIONS = frozenset({"openai", "anthropic", "httpx", "httpx2", "aiohttp", "bedrock"})


def _instrument_libraries(disabled: frozenset[str]) -> None:
    from .imports import when_imported

    for name, (library, hook) in ON_IMPORT.items():
        if name not in disabled:
            when_imported(library, hook)


def initialize(source: str = "manual") -> Any:
    """Build the pipeline once per process; returns the shared ``Telemetry`` or None when off."""
    global _initialized, started_by
    if _initialized:
        return _telemetry
    with _lock:
        if _initialized:
            return _telemetry
        _initialized = True
        settings = get_settings()
        if not settings.enabled:
            return None
        if not opentelemetry_installed():
            logger.warning("nexent-autoinstrument: ENABLE_TELEMETRY is on but OpenTelemetry is not installed; "
                           "install 'nexent-autoinstrument[performance]'. Telemetry stays off.")
            return None
        started_by = source
        try:
            if source != "opentelemetry-instrument":  # there, entry points instrument each library
                _instrument_libraries(settings.disabled_instrumentations)
            if program_name().lower() in PREFORK_SERVERS:
                # Patches are in place (they look up the telemetry at call time); each worker
                # builds its own pipeline, with its own instance id and export threads.
                os.register_at_fork(after_in_child=_build_pipeline)
                return None
            _build_pipeline()
        except Exception as exc:
            report_internal_error("bootstrap", exc)
    return _telemetry


def _build_pipeline() -> None:
    global _telemetry, _pipeline, pipelines_built
    try:
        from . import guest
        from .adapters import tokens
        from .imports import when_imported
        from .pipeline import Pipeline

        _pipeline = Pipeline(get_settings())
        pipelines_built += 1
        _telemetry = _pipeline.telemetry()
        guest.on_start(tokens.load_offline)
        when_imported("multiprocessing.pool", _flush_pool_results)
    except Exception as exc:
        report_internal_error("bootstrap", exc)
        _telemetry = None


def _flush_pool_results(module: Any) -> None:
    from .instrumentors import pools

    pipeline = _pipeline
    if pipeline is not None:
        pools.patch(module, pipeline.flush_ended_calls)


def current_telemetry() -> Any:
    """The shared ``Telemetry`` if the agent is running, else None. Never initializes."""
    return _telemetry


def ensure_initialized() -> None:
    """``opentelemetry_post_instrument`` hook: initialize if no distro or configurator of ours did."""
    initialize("opentelemetry-instrument")

"""The ``opentelemetry-instrument`` door: our distro and configurator entry points (both named
``nexent``). Kept apart from ``bootstrap`` so the manual API never imports the SDK."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator

from .bootstrap import INSTRUMENTOR_OPTIONS, OWN_INSTRUMENTATIONS, initialize

logger = logging.getLogger("nexent_autoinstrument")


class NexentDistro(BaseDistro):
    """The ``opentelemetry_distro`` entry point: configures everything through ``initialize``."""

    def _configure(self, **kwargs: Any) -> None:
        initialize("opentelemetry-instrument")

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Instrument one library, with our options for it (see ``INSTRUMENTOR_OPTIONS``).

        Our httpx and httpx2 layers take the place of the official ones here: the same HTTP
        spans, and ``url.full`` redacted more widely than the conventions' four names (see
        ``redaction``)."""
        if entry_point.name in OWN_INSTRUMENTATIONS and not entry_point.value.startswith(__package__ or ""):
            logger.debug("nexent-autoinstrument: %s is instrumented by the agent; skipping %s",
                         entry_point.name, entry_point.value)
            return
        super().load_instrumentor(entry_point, **{**INSTRUMENTOR_OPTIONS.get(entry_point.name, {}), **kwargs})


class NexentConfigurator(_BaseConfigurator):
    """The ``opentelemetry_configurator`` entry point; the distro has usually done the work."""

    def _configure(self, **kwargs: Any) -> None:
        initialize("opentelemetry-instrument")

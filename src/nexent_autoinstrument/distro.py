"""The ``opentelemetry-instrument`` door: our distro and configurator entry points (both named
``nexent``). Kept apart from ``bootstrap`` so the manual API never imports the SDK."""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator

from .bootstrap import INSTRUMENTOR_OPTIONS, initialize


class NexentDistro(BaseDistro):
    """The ``opentelemetry_distro`` entry point: configures everything through ``initialize``."""

    def _configure(self, **kwargs: Any) -> None:
        initialize("opentelemetry-instrument")

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Instrument one library, with our options for it (see ``INSTRUMENTOR_OPTIONS``)."""
        super().load_instrumentor(entry_point, **{**INSTRUMENTOR_OPTIONS.get(entry_point.name, {}), **kwargs})


class NexentConfigurator(_BaseConfigurator):
    """The ``opentelemetry_configurator`` entry point; the distro has usually done the work."""

    def _configure(self, **kwargs: Any) -> None:
        initialize("opentelemetry-instrument")

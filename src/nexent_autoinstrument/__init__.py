"""nexent-autoinstrument: zero-code, token-level monitoring for Python services that call LLMs.

Importing this package is cheap: it imports neither openai nor the OpenTelemetry SDK.
The manual API (``monitoring_manager`` and friends) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .manual import MONITORING_AVAILABLE, MonitoringManager, get_monitoring_manager, monitoring_manager

__all__ = ["MONITORING_AVAILABLE", "MonitoringManager", "__version__", "get_monitoring_manager",
           "monitoring_manager"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import manual

        return getattr(manual, name)
    raise AttributeError(f"module 'nexent_autoinstrument' has no attribute {name!r}")

"""Run code when a module is imported: how the agent patches libraries it never imports itself.

wrapt's post-import hooks would do, but ``import wrapt`` (2.x) imports asyncio, some 50 ms at
the start of every process with telemetry on, before anything is known to need it. This small
finder costs nothing until a watched module is imported: it lets the other finders find the
module, and runs the callbacks once the module has been executed. The module keeps its own
loader (``__loader__`` and ``__spec__.loader`` are given back).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

Callback = Callable[[ModuleType], None]

_waiting: dict[str, list[Callback]] = {}
_lock = threading.Lock()


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once ``name`` is imported (now, if it already is)."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    with _lock:
        _waiting.setdefault(name, []).append(callback)
        if not any(isinstance(finder, _Watcher) for finder in sys.meta_path):
            sys.meta_path.insert(0, _Watcher())


def _notify(module: ModuleType) -> None:
    with _lock:
        callbacks = _waiting.pop(module.__name__, [])
    for callback in callbacks:
        try:
            callback(module)
        except Exception as exc:
            from .guard import report_internal_error

            report_internal_error(f"imports.{module.__name__}", exc)


class _Watcher:
    """Finds nothing itself: it hands a watched module's spec a loader that tells when it ran."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> ModuleSpec | None:
        if fullname not in _waiting:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Announcing(spec.loader)  # type: ignore[assignment]
                return spec
        return None


class _Announcing:
    """The module's own loader, and then the callbacks."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _notify(module)

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, is_package, ... of the real loader
        return getattr(self.loader, name)

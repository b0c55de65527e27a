"""Auto-load: imported from ``nexent_autoinstrument.pth`` at interpreter start, and only when
``ENABLE_TELEMETRY`` is set to something other than a false word (the .pth line checks that one
variable and imports nothing else): a value that is not a true word either gets its warning.

Tooling processes (pip, uv, build front ends, our own CLI) are left alone, and under
``opentelemetry-instrument`` we defer to its sitecustomize, which reaches the same
``bootstrap.initialize`` through our distro and post-instrument entry points.
"""

from __future__ import annotations

import os

from .process import TOOLING, program_name


def _under_opentelemetry_instrument() -> bool:
    return any(part.replace(os.sep, "/").endswith("opentelemetry/instrumentation/auto_instrumentation")
               for part in os.environ.get("PYTHONPATH", "").split(os.pathsep))


def _autoload() -> None:
    if program_name().lower() in TOOLING or _under_opentelemetry_instrument():
        return
    try:
        from .bootstrap import initialize

        initialize("auto-load")
    except Exception as exc:  # the application must start whatever happens here
        try:
            from .guard import report_internal_error

            report_internal_error("auto-load", exc)
        except Exception:
            pass


_autoload()

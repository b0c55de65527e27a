"""Auto-load: imported from ``nexent_autoinstrument.pth`` at interpreter start, and only when
``ENABLE_TELEMETRY`` is true (the .pth line checks that one variable and imports nothing else).

Tooling processes (pip, uv, build front ends, our own CLI) are left alone, and under
``opentelemetry-instrument`` we defer to its sitecustomize, which reaches the same
``bootstrap.initialize`` through our distro and post-instrument entry points.
"""

from __future__ import annotations

import os
import sys

TOOLING = frozenset({
    "pip", "pip3", "uv", "uvx", "ensurepip", "venv", "virtualenv", "pipx", "poetry", "pdm", "hatch",
    "build", "twine", "wheel", "setup", "setuptools", "pyproject_hooks", "_in_process", "conda",
    "opentelemetry-instrument", "opentelemetry-bootstrap", "nexent-autoinstrument", "nexent_autoinstrument",
})


_OPTIONS_WITH_VALUE = frozenset({"-X", "-W", "--check-hash-based-pycs"})


def program_name(argv: list[str]) -> str:
    """The module run with -m, or the script's name without .py; '' for -c and the REPL."""
    args = argv[1:]
    skip_next = False
    for index, arg in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        if arg in _OPTIONS_WITH_VALUE:
            skip_next = True
            continue
        if arg == "-m" and index + 1 < len(args):
            return args[index + 1].split(".")[0]
        if arg.startswith("-m") and len(arg) > 2:
            return arg[2:].split(".")[0]
        if arg == "-c":
            return ""
        if not arg.startswith("-"):
            name = os.path.basename(arg)
            return name[:-3] if name.endswith(".py") else name
    return ""


def _under_opentelemetry_instrument() -> bool:
    return any(part.replace(os.sep, "/").endswith("opentelemetry/instrumentation/auto_instrumentation")
               for part in os.environ.get("PYTHONPATH", "").split(os.pathsep))


def _autoload() -> None:
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if program_name(argv).lower() in TOOLING or _under_opentelemetry_instrument():
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

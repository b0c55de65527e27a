"""What kind of process this is, from its command line: tooling to leave alone, a pre-fork
server whose workers must each build their own pipeline, or a multiprocessing child."""

from __future__ import annotations

import os
import sys

TOOLING = frozenset({
    "pip", "pip3", "uv", "uvx", "ensurepip", "venv", "virtualenv", "pipx", "poetry", "pdm", "hatch",
    "build", "twine", "wheel", "setup", "setuptools", "pyproject_hooks", "_in_process", "conda",
    "opentelemetry-instrument", "opentelemetry-bootstrap", "nexent-autoinstrument", "nexent_autoinstrument",
})

#: Servers whose master process forks the workers that serve requests. A pipeline built in the
#: master would give every worker the same service.instance.id; the workers build their own.
PREFORK_SERVERS = frozenset({"gunicorn"})

_OPTIONS_WITH_VALUE = frozenset({"-X", "-W", "--check-hash-based-pycs"})


def program_name(argv: list[str] | None = None) -> str:
    """The module run with -m, or the script's name without .py; '' for -c and the REPL."""
    if argv is None:
        argv = list(getattr(sys, "orig_argv", None) or sys.argv)
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


#: The code a multiprocessing child (spawn) or fork server runs, given with ``-c``.
_MULTIPROCESSING_ENTRIES = ("from multiprocessing.spawn import spawn_main",
                            "from multiprocessing.forkserver import main")


def multiprocessing_child(argv: list[str] | None = None) -> bool:
    """Whether this interpreter was started by multiprocessing (a spawned child or the fork
    server, whose own children are pool workers)."""
    if argv is None:
        argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    return "--multiprocessing-fork" in argv or any(arg.startswith(_MULTIPROCESSING_ENTRIES) for arg in argv)

"""The runtime package imports nothing from ``tools``: the mock LLM, the demo, the doctor and the
/metrics summariser are run by the command line (``cli.py`` names them as strings), never loaded
into a process the agent measures."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_env

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nexent_autoinstrument"
TOOLS = "nexent_autoinstrument.tools"
#: Runtime-side modules allowed to import tools: compatibility aliases that nothing else imports.
ALIASES = {"nexent_autoinstrument.mock_llm": "docs/mock-llm.md names nexent_autoinstrument.mock_llm.start_in_thread"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an import statement of ``source`` (anywhere: in functions, under ``if``) may
    load, relative imports resolved from ``module``: for ``from X import y`` both X and X.y."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def is_tools(name: str) -> bool:
    return name == TOOLS or name.startswith(TOOLS + ".")


def runtime_modules() -> dict[str, Path]:
    modules = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    return {name: path for name, path in modules.items() if not is_tools(name)}


def test_the_import_reader_sees_every_form_of_import() -> None:
    source = ("from .tools import mock\nfrom . import tools\nimport nexent_autoinstrument.tools.demo\n"
              "def later():\n    from ..tools.doctor import main\n")
    found = imported_modules(source, "nexent_autoinstrument.adapters.x")
    assert {"nexent_autoinstrument.adapters.tools.mock", "nexent_autoinstrument.adapters.tools",
            "nexent_autoinstrument.tools.demo", "nexent_autoinstrument.tools.doctor"} <= found
    assert "nexent_autoinstrument.tools" in imported_modules("from . import tools", "nexent_autoinstrument",
                                                             is_package=True)
    assert is_tools("nexent_autoinstrument.tools.mock.server") and not is_tools("nexent_autoinstrument.toolsx")


def test_no_runtime_module_imports_the_tools() -> None:
    modules = runtime_modules()
    assert {"nexent_autoinstrument.bootstrap", "nexent_autoinstrument.adapters.endpoints",
            "nexent_autoinstrument.cli"} <= set(modules)
    offenders, alias_users = [], []
    for name, path in modules.items():
        imported = imported_modules(path.read_text(), name, is_package=path.name == "__init__.py")
        if name not in ALIASES:
            offenders += [f"{name} imports {target}" for target in sorted(imported) if is_tools(target)]
        alias_users += [f"{name} imports {target}" for target in sorted(imported) if target in ALIASES]
    assert offenders == []
    assert alias_users == []  # an alias is for users only: the runtime never goes through it


def test_the_tools_do_import_from_their_own_package() -> None:
    """(The reader is not blind: the tools' own relative imports resolve to tools modules.)"""
    demo = PACKAGE / "tools" / "demo.py"
    assert "nexent_autoinstrument.tools.mock" in imported_modules(demo.read_text(), module_name(demo))


@pytest.mark.parametrize("telemetry", ["off", "on"])
def test_loading_the_agent_loads_no_tool(telemetry: str, tmp_path: Path) -> None:
    """A fresh interpreter (with telemetry on: the .pth hook starts the agent, which patches the
    SDKs it finds) imports the package and its entry points: no tools module comes along."""
    code = ("import sys\nimport nexent_autoinstrument\n"
            "import nexent_autoinstrument.bootstrap, nexent_autoinstrument.manual, nexent_autoinstrument.pipeline\n"
            "import nexent_autoinstrument.distro, nexent_autoinstrument.cli\n"
            "import httpx, openai, anthropic\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('nexent_autoinstrument'))\n"
            "print(len(loaded), [m for m in loaded if m.startswith('nexent_autoinstrument.tools')])\n")
    env = clean_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", SERVICE_NAME="layout")
    if telemetry == "on":
        env["ENABLE_TELEMETRY"] = "true"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    count, tools = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert tools.strip() == "[]"
    assert int(count) > 10  # the runtime itself was loaded

"""Auto-load through the .pth hook: on when asked, invisible when not, harmless to tooling."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, clean_env, run_python
from nexent_autoinstrument.process import TOOLING, program_name

CHECK_MODULES = """
import sys
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("nexent_autoinstrument", "opentelemetry", "openai",
                                                              "prometheus_client", "wrapt"))
print("LOADED", loaded)
"""


def test_hook_is_installed_next_to_the_package() -> None:
    pth = Path(sysconfig.get_paths()["purelib"]) / "nexent_autoinstrument.pth"
    assert pth.read_text() == (ROOT / "src" / "nexent_autoinstrument.pth").read_text()


def test_the_hook_reads_the_false_words_the_settings_read() -> None:
    """The .pth line cannot import the settings: its own list of the words that mean off is theirs."""
    import ast

    from nexent_autoinstrument.settings import FALSE_WORDS

    line = (ROOT / "src" / "nexent_autoinstrument.pth").read_text()
    [words] = [node for node in ast.walk(ast.parse(line)) if isinstance(node, ast.Tuple)]
    assert set(ast.literal_eval(words)) == FALSE_WORDS


@pytest.mark.parametrize("value", [None, "false", "0", "no", "off"])
def test_hook_imports_nothing_when_telemetry_is_off(value: str | None, tmp_path: Path) -> None:
    env = clean_env() if value is None else clean_env(ENABLE_TELEMETRY=value)
    result = run_python(CHECK_MODULES, env=env, tmp_path=tmp_path)
    assert "LOADED []" in result.stdout, result.stdout + result.stderr


def test_manual_api_import_with_telemetry_off_imports_neither_openai_nor_the_sdk(tmp_path: Path) -> None:
    code = ("from nexent_autoinstrument import monitoring_manager, MONITORING_AVAILABLE\n"
            "@monitoring_manager.monitor_endpoint('x')\ndef f():\n    return 1\nassert f() == 1\n" + CHECK_MODULES)
    result = run_python(code, env=clean_env(), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split("LOADED", 1)[1]
    assert "openai" not in loaded and "opentelemetry" not in loaded and "prometheus_client" not in loaded


def test_plain_python_is_instrumented_with_telemetry_on(tmp_path: Path) -> None:
    code = CHECK_MODULES + "from nexent_autoinstrument import bootstrap\nprint('started_by', bootstrap.started_by)\n"
    result = run_python(code, env=clean_env(ENABLE_TELEMETRY="TRUE", OTEL_TRACES_EXPORTER="none"),
                        tmp_path=tmp_path)
    assert "started_by auto-load" in result.stdout, result.stderr
    assert "'openai'" not in result.stdout  # patches wait for the application's own import


def test_user_sitecustomize_keeps_working(tmp_path: Path) -> None:
    site_dir = tmp_path / "usersite"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text("print('USER SITECUSTOMIZE RAN')\n")
    code = "from nexent_autoinstrument import bootstrap\nprint('started_by', bootstrap.started_by)\n"
    result = run_python(code, env=clean_env(ENABLE_TELEMETRY="true", OTEL_TRACES_EXPORTER="none",
                                            PYTHONPATH=str(site_dir)), tmp_path=tmp_path)
    assert "USER SITECUSTOMIZE RAN" in result.stdout and "started_by auto-load" in result.stdout, result.stderr


def test_pip_is_left_alone_with_telemetry_on() -> None:
    env = clean_env(ENABLE_TELEMETRY="true")
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "pip", "--version"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "pip" in result.stdout
    assert "opentelemetry" not in result.stderr and "nexent_autoinstrument.bootstrap" not in result.stderr


@pytest.mark.parametrize(("argv", "expected"), [
    (["python", "app.py"], "app"),
    (["python", "-u", "/srv/main_service.py", "--port", "1"], "main_service"),
    (["python", "-m", "pip", "install", "x"], "pip"),
    (["python", "-mpip", "list"], "pip"),
    (["/venv/bin/python", "/venv/bin/uv", "sync"], "uv"),
    (["python", "-c", "print(1)"], ""),
    (["python"], ""),
])
def test_program_name(argv: list[str], expected: str) -> None:
    assert program_name(argv) == expected


@pytest.mark.parametrize(("module", "args", "left_alone"), [
    ("ensurepip", ["--version"], True),
    ("venv", ["--help"], True),
    ("uv", ["--version"], True),
    ("json.tool", ["--help"], False),  # not tooling: the agent starts
])
def test_installers_are_left_alone_with_telemetry_on(module: str, args: list[str], left_alone: bool) -> None:
    assert (module.split(".")[0] in TOOLING) is left_alone
    env = clean_env(ENABLE_TELEMETRY="true", OTEL_TRACES_EXPORTER="none")
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *args], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("nexent_autoinstrument.bootstrap" not in result.stderr) is left_alone


LATE_IMPORT = """
import sys
print("AT START", sorted({m.split(".")[0] for m in sys.modules} & {"wrapt", "prometheus_client", "httpx",
                                                                   "nexent_autoinstrument.instrumentors"}),
      "nexent_autoinstrument.instrumentors.httpx" in sys.modules)
import httpx
import wrapt
print("PATCHED", isinstance(httpx.Client.__dict__["send"], wrapt.FunctionWrapper))
print("LOADER", type(httpx.__loader__).__name__, type(httpx.__spec__.loader).__name__)
"""


def test_a_library_is_patched_when_imported_and_nothing_is_loaded_before(tmp_path: Path) -> None:
    result = run_python(LATE_IMPORT, env=clean_env(ENABLE_TELEMETRY="true", OTEL_TRACES_EXPORTER="none"),
                        tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.split(" ")[0] in (
        "AT", "PATCHED", "LOADER"))
    assert lines["AT"] == "START [] False"  # neither wrapt, nor prometheus_client, nor our layers
    assert lines["PATCHED"] == "True"
    assert lines["LOADER"] == "SourceFileLoader SourceFileLoader"  # the module keeps its own loader


def test_when_imported_runs_once_after_the_module_and_at_once_if_it_is_there(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom nexent_autoinstrument.imports import when_imported\n"
        "seen = []\nwhen_imported('os', lambda m: seen.append(('os', hasattr(m, 'sep'))))\n"
        "when_imported('colorsys', lambda m: seen.append(('colorsys', hasattr(m, 'rgb_to_hsv'))))\n"
        "print(seen)\nimport colorsys\nimport colorsys\nprint(seen)\n")
    result = run_python(code, env=clean_env(), tmp_path=tmp_path)
    first, second = result.stdout.splitlines()[:2]
    assert first == "[('os', True)]"  # (os was imported already)
    assert second == "[('os', True), ('colorsys', True)]"  # after the module ran, once


@pytest.mark.parametrize("instrument", [False, True], ids=["auto-load", "opentelemetry-instrument"])
@pytest.mark.parametrize("value", ["ture", "enabled"])
def test_a_misspelt_enable_telemetry_warns_once_through_either_door(value: str, instrument: bool,
                                                                     tmp_path: Path) -> None:
    result = run_python(CHECK_MODULES, env=clean_env(ENABLE_TELEMETRY=value, OTEL_TRACES_EXPORTER="console"),
                        instrument=instrument, tmp_path=tmp_path)
    warnings = [line for line in result.stderr.splitlines() if "ENABLE_TELEMETRY" in line]
    assert len(warnings) == 1 and repr(value) in warnings[0] and "using the default: false" in warnings[0], \
        result.stderr
    assert result.returncode == 0 and '"trace_id"' not in result.stdout  # telemetry stays off

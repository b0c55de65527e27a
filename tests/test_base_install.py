"""With only the base install (wrapt, no OpenTelemetry), everything imports and does nothing, harmlessly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, clean_env
from nexent_autoinstrument.tools.net import free_port

APP = """
import sys
from nexent_autoinstrument import monitoring_manager, MONITORING_AVAILABLE, get_monitoring_manager
print("AVAILABLE", MONITORING_AVAILABLE)

def call_llm(messages):
    return {"echo": messages}

decorated = monitoring_manager.monitor_llm_call("gpt", "chat")(call_llm)
print("SAME", decorated is call_llm, decorated(["hi"]) == {"echo": ["hi"]})

@monitoring_manager.monitor_endpoint("ep")
async def ep():
    return 5

import asyncio
print("ASYNC", asyncio.run(ep()))
with monitoring_manager.trace_llm_request("chat", "gpt") as handle:
    handle.record_token(); handle.record_usage(1, 2)
monitoring_manager.add_span_event("e"); monitoring_manager.set_span_attributes(a=1)
monitoring_manager.setup_fastapi_app(object())
print("OTEL", any(m.startswith("opentelemetry") for m in sys.modules))
"""


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True,
                             text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    return python


@pytest.mark.parametrize("enabled", ["false", "true"])
def test_base_install_degrades_to_a_harmless_no_op(base_venv: Path, enabled: str, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = clean_env(ENABLE_TELEMETRY=enabled)
    env["PATH"] = f"{base_venv.parent}:{env['PATH']}"
    result = subprocess.run([str(base_venv), str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "AVAILABLE False" in result.stdout
    assert "SAME True True" in result.stdout and "ASYNC 5" in result.stdout and "OTEL False" in result.stdout
    if enabled == "true":
        assert result.stderr.count("OpenTelemetry is not installed") == 1


def test_base_install_has_the_hook_and_only_wrapt(base_venv: Path) -> None:
    listing = subprocess.run([str(base_venv), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                             text=True, timeout=60).stdout
    names = {line.split("==")[0].lower() for line in listing.split()}
    assert "wrapt" in names and not any(n.startswith("opentelemetry") for n in names)
    site = subprocess.run([str(base_venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True).stdout.strip()
    assert (Path(site) / "nexent_autoinstrument.pth").exists()


def test_doctor_and_demo_of_an_installed_package_outside_a_checkout(base_venv: Path, tmp_path: Path) -> None:
    command = str(base_venv.parent / "nexent-autoinstrument")
    env = clean_env(ENABLE_TELEMETRY="true", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    doctor = subprocess.run([command, "doctor"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr, doctor.stderr
    assert "MONITORING_AVAILABLE=False" in doctor.stdout and "pip install '.[performance]'" in doctor.stdout
    assert "start-monitoring.sh" not in doctor.stdout and "\"Monitoring stack\" in the README" in doctor.stdout
    demo = subprocess.run([command, "demo"], env=clean_env(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert demo.returncode == 1 and "Traceback" not in demo.stderr, demo.stderr
    assert "source checkout" in demo.stderr and "./scripts/demo.sh" in demo.stderr
    assert "mock LLM" not in demo.stdout and list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_uv_sync_with_the_performance_extra(tmp_path: Path) -> None:
    """The documented ``uv sync --extra performance`` works on a copy of the project."""
    assert "uv sync --extra performance" in (ROOT / "README.md").read_text()
    copy = tmp_path / "project"
    copy.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, archive.decode().split("\0")):
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            target.write_bytes((ROOT / name).read_bytes())
    uv = Path(sys.executable).parent / "uv"
    result = subprocess.run([str(uv), "sync", "--extra", "performance", "--quiet"], cwd=copy, capture_output=True,
                            text=True, timeout=600, env=clean_env())
    assert result.returncode == 0, result.stderr
    check = subprocess.run([str(copy / ".venv" / "bin" / "python"), "-c",
                            "import nexent_autoinstrument, opentelemetry.sdk, prometheus_client; print('ok')"],
                           capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "ok", check.stderr

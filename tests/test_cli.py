"""The command line as a newcomer meets it: mock-llm --help, doctor's report, demo's refusals,
progress lines and table."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import BIN, ROOT, clean_env
from nexent_autoinstrument.tools import demo, mock
from nexent_autoinstrument.tools.net import free_port

MOCK_OPTIONS = ("--host", "--port", "--ttft", "--tokens-per-second", "--tokens", "--jitter", "--error-rate",
                "--seed", "--dialect", "--verbose")


def test_mock_llm_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        mock.main(["--help"])
    options = capsys.readouterr().out.split("options:", 1)[1]
    entries = [" ".join(entry.split()) for entry in re.split(r"\n(?=  -)", options) if entry.strip()]
    lines = {entry.split()[0]: entry for entry in entries if entry.startswith("--")}
    assert set(lines) == set(MOCK_OPTIONS)
    for line in lines.values():
        assert "(default: " in line, line
    assert "(default: 8090)" in lines["--port"] and "(default: 127.0.0.1)" in lines["--host"]
    assert "(default: 0.05)" in lines["--ttft"] and "(default: 100.0)" in lines["--tokens-per-second"]
    assert "log every request" in lines["--verbose"]


def doctor(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nexent-autoinstrument"), "doctor"], env=clean_env(**env), cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_doctor_with_telemetry_off_says_so_and_checks_no_collector(tmp_path: Path) -> None:
    result = doctor(tmp_path)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "ENABLE_TELEMETRY is unset (telemetry off)" in out and "None" not in out
    assert "[SKIP] collectors and the monitoring stack not checked" in out
    assert "OTLP" not in out and "Grafana" not in out and "start-monitoring" not in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("Telemetry is off") and "ENABLE_TELEMETRY=true" in last
    assert "No problems found" not in out
    warnings = re.search(r"\((\d+) warnings? above\)", last)
    assert warnings and int(warnings[1]) == out.count("[WARN]")


def test_doctor_with_a_false_word_shows_the_value(tmp_path: Path) -> None:
    out = doctor(tmp_path, ENABLE_TELEMETRY="no").stdout
    assert "ENABLE_TELEMETRY is 'no' (telemetry off)" in out


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_doctor_suggests_the_start_script_only_where_it_exists(where: str, tmp_path: Path) -> None:
    cwd = ROOT if where == "checkout" else tmp_path
    result = doctor(cwd, ENABLE_TELEMETRY="true", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    out = result.stdout
    assert result.returncode == 1
    fixes = [line for line in out.splitlines() if "start-monitoring.sh" in line]
    assert fixes
    for line in fixes:
        script = re.search(r"([^\s(]*docker/start-monitoring\.sh)", line)
        assert script, line
        assert (cwd / script[1]).is_file(), line  # relative to where the doctor runs, or absolute
    if where == "checkout":
        assert "./docker/start-monitoring.sh;" in out
    assert not re.search(r"\([^()]*\(", out), out  # no parentheses inside parentheses
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"1 problem, {out.count('[WARN]')} warning") and out.count("[FAIL]") == 1


def test_version_and_every_help_read_as_plain_text() -> None:
    version = subprocess.run([str(BIN / "nexent-autoinstrument"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and re.fullmatch(r"nexent-autoinstrument \d+\.\d+\.\d+\n", version.stdout)
    for command in ("mock-llm", "demo", "doctor"):
        shown = subprocess.run([str(BIN / "nexent-autoinstrument"), command, "--help"], capture_output=True, text=True)
        assert shown.returncode == 0 and "``" not in shown.stdout and "usage:" in shown.stdout, shown.stdout


def test_doctor_names_the_instrumentors_only_where_opentelemetry_instrument_is(
        monkeypatch: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from nexent_autoinstrument.settings import Settings
    from nexent_autoinstrument.tools import doctor as doctor_module

    monkeypatch.setattr(doctor_module.shutil, "which", lambda name: None)
    said = [text for _, text, _ in doctor_module.check_loading(Settings(), [])]
    assert not [text for text in said if "will load" in text]
    assert [text for text in said if "opentelemetry-instrument is not installed" in text]
    monkeypatch.setattr(doctor_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    [loading] = [text for _, text, _ in doctor_module.check_loading(Settings(), []) if "will load" in text]
    names = loading.split(": ", 1)[1].split(", ")
    assert len(names) == len(set(names)) and "openai" in names


def test_doctor_without_a_checkout_points_to_the_readme(monkeypatch: Any, tmp_path: Path) -> None:
    from nexent_autoinstrument.tools import doctor as doctor_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(doctor_module, "__file__", str(tmp_path / "site-packages" / "x" / "doctor.py"))
    assert "README" in doctor_module.start_stack_hint()
    assert "start-monitoring.sh" not in doctor_module.start_stack_hint()


def test_demo_outside_a_checkout_refuses_before_starting_anything(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "find_example", lambda: None)
    monkeypatch.setattr(demo, "start_in_thread", lambda *a, **k: pytest.fail("the mock was started"))
    with pytest.raises(SystemExit) as exit_:
        demo.main([])
    assert "source checkout" in str(exit_.value) and "./scripts/demo.sh" in str(exit_.value)
    assert list(tmp_path.iterdir()) == []  # no .demo/


def test_demo_without_the_demo_extra_refuses_before_starting_anything(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "DEMO_REQUIREMENTS", ("opentelemetry.sdk", "no_such_module_for_the_demo"))
    monkeypatch.setattr(demo, "start_in_thread", lambda *a, **k: pytest.fail("the mock was started"))
    with pytest.raises(SystemExit) as exit_:
        demo.main([])
    assert "no_such_module_for_the_demo not installed" in str(exit_.value) and "[demo]" in str(exit_.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("up", [(False, True), (True, False)], ids=["no stack", "port taken"])
def test_demo_for_the_stack_refuses_without_it_or_with_its_scrape_port_taken(
        up: tuple[bool, bool], monkeypatch: Any, tmp_path: Path) -> None:
    stack_up, port_free = up
    monkeypatch.setattr(demo, "reachable", lambda url: stack_up if ":8000" not in url else not port_free)
    monkeypatch.setattr(demo, "start_in_thread", lambda *a, **k: pytest.fail("the mock was started"))
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--stack"])
    said = str(exit_.value)
    assert ("not running" in said and "start-monitoring.sh" in said) if not stack_up else "8000" in said, said


def test_find_example_looks_in_the_current_directory(monkeypatch: Any, tmp_path: Path) -> None:
    installed = tmp_path / "site-packages" / "nexent_autoinstrument" / "tools" / "demo.py"
    monkeypatch.setattr(demo, "__file__", str(installed))
    monkeypatch.chdir(tmp_path)
    assert demo.find_example() is None
    (tmp_path / demo.EXAMPLE).parent.mkdir(parents=True)
    (tmp_path / demo.EXAMPLE).write_text("")
    assert demo.find_example() == tmp_path / demo.EXAMPLE


@pytest.mark.parametrize("tty", [False, True])
def test_demo_progress(tty: bool, capsys: pytest.CaptureFixture[str]) -> None:
    for done in range(1, 41):
        demo.print_progress(done, 40, done // 10, tty)
    out = capsys.readouterr().out
    if tty:
        assert out.count("\r") == 40 and out.endswith("40/40 (4 failed on purpose)\n")
    else:
        assert "\r" not in out
        assert out.splitlines() == [f"requests      {n}/40 done ({n // 10} failed on purpose)"
                                    for n in (10, 20, 30, 40)]


def span(model: str, seconds: float, ttft: float | None = None, rate: float | None = None,
         itl: float | None = None, tokens: int = 0, error: bool = False, events: tuple[str, ...] = ()) -> Any:
    """A span as the console exporter writes it (only the fields the demo reads)."""
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                                  "gen_ai.usage.output_tokens": tokens}
    for key, value in (("llm.time_to_first_token", ttft), ("llm.token_generation_rate", rate),
                       ("llm.inter_token_latency.p50", itl)):
        if value is not None:
            attributes[key] = value
    return {"name": f"chat {model}", "start_time": "2025-01-01T10:00:00.000000Z",
            "end_time": f"2025-01-01T10:00:{seconds:09.6f}Z",
            "status": {"status_code": "ERROR" if error else "UNSET"}, "attributes": attributes,
            "events": [{"name": name, "attributes": {}} for name in events]}


def test_table_values_are_exact_per_call_values() -> None:
    spans = [
        span("a", 0.5, ttft=0.10, rate=60.0, itl=0.015, tokens=40),
        span("a", 0.7, ttft=0.12, rate=62.0, itl=0.016, tokens=40),
        span("a", 0.6, ttft=0.11, rate=58.0, itl=0.017, tokens=40),
        span("a", 2.0, ttft=0.14, rate=6.5, itl=0.150, tokens=12, events=("llm.slow_token_rate",)),
        span("a", 0.05, error=True),
        {"name": "POST /chat", "attributes": {"http.route": "/chat"}},  # not an LLM call
    ]
    row = demo.rows_from_spans(spans)["a"]
    assert (row.calls, row.errors, row.slow, row.output_tokens) == (5, 1, 1, 132)
    assert row.ttft_p50 == pytest.approx(0.115) and row.ttft_p95 == pytest.approx(0.137)
    assert row.rate_p50 == pytest.approx(59.0)  # the median: the slow call does not drag it down
    assert row.itl_p50 == pytest.approx(0.0165)
    assert row.duration_p50 == pytest.approx(0.6) and row.duration_p95 == pytest.approx(1.74)
    table = demo.format_table({"a": row})
    assert "tok/s p50" in table and "~" not in table
    assert table.splitlines()[2].split() == ["a", "5", "1", "1", "115ms", "137ms", "59.0", "16.5ms", "0.60s",
                                             "1.74s", "132", "-"]  # (no call with a price)


def test_bucket_estimates_are_marked() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from nexent_autoinstrument.metrics import LLMMetrics

    registry = CollectorRegistry()
    metrics = LLMMetrics(registry=registry, max_model_labels=10)
    metrics.record(model="a", operation="chat", outcome="completed", duration=0.62, ttft=0.12, rate=60.0,
                   gaps=[0.015, 0.016], input_tokens=3, output_tokens=40, error_type=None, slow_reasons=[])
    metrics.record(model="a", operation="chat", outcome="completed", duration=0.5, ttft=0.1, input_tokens=3,
                   output_tokens=20, cost=0.00125)
    rows = demo.rows_from_metrics(generate_latest(registry).decode())
    assert rows["a"].calls == 2 and rows["a"].output_tokens == 60 and rows["a"].cost == pytest.approx(0.00125)
    line = demo.format_table(rows, estimated=True).splitlines()[2].split()
    assert all(value.startswith("~") for value in line[4:10]), line
    assert line[-1] == "$0.001250"  # a counter: exact
    assert "estimated inside histogram buckets" in demo.format_table(rows, estimated=True)


def test_percentile() -> None:
    assert demo.percentile([], 0.5) is None
    assert demo.percentile([3.0], 0.95) == 3.0
    assert demo.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert demo.percentile(range(101), 0.95) == pytest.approx(95.0)


def test_read_spans_skips_an_incomplete_last_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps({"name": "a"}) + "\nsomething the service printed\n" + '{"name": "b", "attr')
    assert demo.read_spans(path) == [{"name": "a"}]

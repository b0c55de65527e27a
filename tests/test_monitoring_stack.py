"""The monitoring stack, proven without a Docker engine: promtool, the Compose Specification
schema, and a real Prometheus, on a network laid out as Docker lays out a container's (a network
namespace behind a veth pair, ``host.docker.internal`` leading to the host's end), scraping the
example service as the README runs it and evaluating every dashboard query and every alert rule."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from conftest import BIN, ROOT, clean_env, post_chat, start_example
from nexent_autoinstrument.tools.net import container_reachable_hosts, free_port
from receivers import OTLPHTTPReceiver

DOCKER = ROOT / "docker"
PROMETHEUS_DIR = DOCKER / "prometheus"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "llm-performance.json"
SCHEMA = ROOT / ".cache" / "compose-spec" / "compose-spec.json"


def missing(reason: str) -> NoReturn:
    """Skip a test whose tool is not installed here; on CI (CI=true), where the test command always
    installs everything, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: required)")
    pytest.skip(reason)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed: ./scripts/test.sh installs it as root or with passwordless sudo "
                "(apt-get install prometheus)")
    return path


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_tool_skips_here_and_fails_on_ci(ci: str) -> None:
    env = {**clean_env(), "PATH": str(BIN)}  # no promtool on this PATH
    env.pop("CI", None)
    if ci:
        env["CI"] = ci
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                             f"{__file__}::test_promtool", "-k", "check and config"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert "promtool is not installed" in result.stdout, result.stdout
    if ci:
        assert result.returncode == 1 and "1 failed" in result.stdout and "CI=true: required" in result.stdout
    else:
        assert result.returncode == 0 and "1 skipped" in result.stdout


@pytest.mark.parametrize("command", [["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                                     ["test", "rules", "alerts_test.yml"]], ids=lambda c: " ".join(c[:2]))
def test_promtool(command: list[str]) -> None:
    result = subprocess.run([tool("promtool"), *command], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    firing = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for case in tests for t in case["alert_rule_test"] if not t["exp_alerts"]}
    assert set(alert_rules()) == firing == quiet == {"LLMHighErrorRate", "LLMSlowTokenRate", "LLMSlowResponses",
                                                     "LLMHighTimeToFirstToken", "LLMStreamStalls", "LLMSpendRateHigh"}


def test_dashboard_datasources_exist_in_the_provisioning() -> None:
    provisioned = {d["uid"]: d["type"] for d in yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text())["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {json.dumps(node) for node in _walk(dashboard) if isinstance(node, dict) and "uid" in node
            and "type" in node}
    assert used
    for node in map(json.loads, used):
        assert provisioned.get(node["uid"]) == node["type"], node
    assert dashboard["uid"] == "nexent-llm-performance" and dashboard["title"] == "LLM Performance Dashboard"
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"service", "model", "trace_service"}
    assert any("16686" in link["url"] or "nexent-jaeger" in link["url"] for link in dashboard["links"])


def test_dashboard_quantiles_aggregate_by_le_and_model() -> None:
    for expr in dashboard_exprs():
        if "histogram_quantile" in expr:
            assert "sum by (le, model)" in expr, expr


def test_compose_file_follows_the_compose_specification() -> None:
    import jsonschema

    if not SCHEMA.exists():
        missing(f"the Compose Specification schema is not in {SCHEMA}: ./scripts/test.sh fetches it with npm")
    compose = yaml.safe_load((DOCKER / "docker-compose-monitoring.yml").read_text())
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    validator.validate(compose)
    broken = {**compose, "services": {**compose["services"], "grafana": {**compose["services"]["grafana"],
                                                                         "portz": ["3005:3000"]}}}
    assert not validator.is_valid(broken)  # the schema really checks
    services = compose["services"]
    assert {services[s]["container_name"] for s in ("jaeger", "prometheus", "grafana")} == {
        "nexent-jaeger", "nexent-prometheus", "nexent-grafana"}
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("${MONITORING_BIND:-127.0.0.1}:"), port
        assert ":latest" not in service["image"] and re.search(r":v?\d", service["image"])
    assert "host.docker.internal:host-gateway" in services["prometheus"]["extra_hosts"]
    assert set(compose["volumes"]) == {"jaeger-data", "prometheus-data", "grafana-data"}


def test_start_script_explains_a_missing_engine_and_starts_nothing(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    log = tmp_path / "calls.log"
    (fake_bin / "docker").write_text(f'#!/bin/sh\necho "docker $*" >> {log}\n[ "$1" = info ] && exit 1\nexit 0\n')
    (fake_bin / "docker").chmod(0o755)
    env = {**clean_env(), "PATH": f"{fake_bin}:/usr/bin:/bin"}
    for script in ("start-monitoring.sh", "stop-monitoring.sh"):
        result = subprocess.run([str(DOCKER / script)], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 1
        assert "no Docker engine is running" in result.stderr
    assert log.read_text().split("\n")[:-1] == ["docker info", "docker info"]  # nothing else was attempted


@pytest.mark.parametrize("collector", ["0", "1"])
def test_the_start_script_writes_untracked_targets_and_the_collector_only_with_it(
        collector: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the start script writes stays out of git, and the collector is scraped only when it runs."""
    monkeypatch.setenv("NEXENT_WITH_COLLECTOR", collector)
    monkeypatch.setenv("NEXENT_SERVICE_LABEL", "mine")
    config_dir, _ = start_script_targets(tmp_path, "host.docker.internal:8000, other:9464", "lo")
    apps = json.loads((config_dir / "targets" / "apps.json").read_text())
    assert apps == [{"targets": ["host.docker.internal:8000", "other:9464"], "labels": {"service": "mine"}}]
    collectors = json.loads((config_dir / "targets" / "collector.json").read_text())
    assert collectors == ([{"targets": ["otel-collector:8889"], "labels": {"service": "otlp-push"}}]
                          if collector == "1" else [])
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    files = {job["job_name"]: job["file_sd_configs"][0]["files"] for job in config["scrape_configs"]}
    assert files == {"llm-apps": ["targets/apps.json"], "otel-collector": ["targets/collector.json"]}
    ignored = subprocess.run(["git", "check-ignore", "-q", str(PROMETHEUS_DIR / "targets" / "apps.json")], cwd=ROOT)
    assert ignored.returncode == 0  # (in the checkout: the written files never show as changes)


def test_scripts_use_legacy_docker_compose_when_the_plugin_is_missing(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    log = tmp_path / "calls.log"
    (fake_bin / "docker").write_text(f'#!/bin/sh\necho "docker $*" >> {log}\n[ "$1" = compose ] && exit 1\nexit 0\n')
    (fake_bin / "docker-compose").write_text(f'#!/bin/sh\necho "docker-compose $*" >> {log}\nexit 0\n')
    for name in ("docker", "docker-compose"):
        (fake_bin / name).chmod(0o755)
    env = {**clean_env(), "PATH": f"{fake_bin}:/usr/bin:/bin"}
    result = subprocess.run([str(DOCKER / "reset-monitoring-data.sh"), "grafana"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert "docker-compose -p nexent -f" in calls and "rm --stop --force grafana" in calls
    assert "docker volume rm -f nexent_grafana-data" in calls and "up -d grafana" in calls
    bad = subprocess.run([str(DOCKER / "reset-monitoring-data.sh"), "everything"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "usage" in bad.stderr


# -- a real Prometheus ----------------------------------------------------------------------------

def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def alert_rules() -> dict[str, str]:
    """The alerting rules' expressions, by name (the recording rules left out)."""
    return {r["alert"]: r["expr"] for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
            for r in g["rules"] if "alert" in r}


def compose_prometheus_flags() -> list[str]:
    """The feature flags the compose file starts Prometheus with (exemplar storage)."""
    compose = yaml.safe_load((DOCKER / "docker-compose-monitoring.yml").read_text())
    return [arg for arg in compose["services"]["prometheus"]["command"] if arg.startswith("--enable-feature")]


def as_query(expr: str) -> str:
    """A dashboard expression as Grafana sends it with 'All' selected."""
    return expr.replace("$service", ".*").replace("$model", ".*").replace("$__rate_interval", "1m")


#: USD per million tokens: the example's price file for the mock's models.
OWN_PRICE = {"input": 3.0, "output": 15.0}

#: The scrape targets' ``service`` label, as ./docker/start-monitoring.sh writes it by default: not
#: the service.name the example's spans carry (SERVICE_NAME=example-backend).
TARGET_LABEL = "nexent-backend"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class ContainerNetwork:
    """A network namespace joined to the host by a veth pair, as Docker joins a container to its
    bridge: the host's end has an address of its own (on Linux, ``host.docker.internal`` with
    ``host-gateway`` is the bridge's address), and inside, ``host.docker.internal`` resolves to it
    (``ip netns exec`` mounts /etc/netns/NAME/hosts over /etc/hosts)."""

    def __init__(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            missing("the container network needs root and iproute2 (ip netns, veth)")
        tag = os.getpid() % 100_000
        self.name, self.host_end, inner = f"nxstack{tag}", f"nxh{tag}", f"nxc{tag}"
        subnet = f"10.213.{tag % 250 + 1}"
        self.host_address, self.address = f"{subnet}.1", f"{subnet}.2"
        self.hosts = Path("/etc/netns") / self.name
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_end, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_end)
            _ip("link", "set", self.host_end, "up")
            for command in (("addr", "add", f"{self.address}/30", "dev", inner), ("link", "set", inner, "up"),
                            ("link", "set", "lo", "up")):
                _ip("netns", "exec", self.name, "ip", *command)
            self.hosts.mkdir(parents=True, exist_ok=True)
            (self.hosts / "hosts").write_text(f"127.0.0.1 localhost\n{self.host_address} host.docker.internal\n")
        except BaseException:
            self.close()
            raise

    def inside(self) -> list[str]:
        """The command prefix that runs a program in the namespace."""
        return ["ip", "netns", "exec", self.name]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)  # (and both veth ends)
        shutil.rmtree(self.hosts, ignore_errors=True)


def start_script_targets(workdir: Path, targets: str, bridge: str) -> tuple[Path, str]:
    """A copy of docker/ whose targets ./docker/start-monitoring.sh wrote (a stand-in engine that
    does nothing, so the script stops at its health checks), and what the script printed."""
    copy = workdir / "docker"
    shutil.copytree(DOCKER, copy, ignore=shutil.ignore_patterns("*.json"))
    shutil.copy(DASHBOARD, copy / "grafana" / "dashboards")
    fake_bin = workdir / "bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "docker").chmod(0o755)
    env = {**clean_env(), "PATH": f"{fake_bin}:/usr/bin:/bin:/usr/sbin:/sbin", "HEALTH_TIMEOUT": "0",
           "NEXENT_METRICS_TARGETS": targets, "NEXENT_BRIDGE_INTERFACE": bridge}
    run = subprocess.run([str(copy / "start-monitoring.sh")], env=env, capture_output=True, text=True, timeout=30)
    return copy / "prometheus", run.stdout + run.stderr


class Prometheus:
    """Debian's Prometheus with the compose file's configuration (``config_dir``: prometheus.yml,
    alerts.yml, targets/), scraping every second, in ``network`` (None: on the host's loopback)."""

    def __init__(self, workdir: Path, config_dir: Path, network: ContainerNetwork | None = None) -> None:
        config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROMETHEUS_DIR / "alerts.yml", workdir / "alerts.yml")
        shutil.copytree(config_dir / "targets", workdir / "targets")
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        # What the fixture set up around it: where the scraped service's spans went, the targets a
        # container can and cannot reach, what the start script said, the host's end of the network.
        self.spans: OTLPHTTPReceiver | None = None
        self.reachable = self.unreachable = self.start_script_said = self.host_address = ""
        host, self.port = (network.address, 9090) if network else ("127.0.0.1", free_port())
        self.url = f"http://{host}:{self.port}"
        self.process = subprocess.Popen(
            [*(network.inside() if network else []), tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={host}:{self.port}",
             *compose_prometheus_flags()],
            stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("wb"))
        self.wait(lambda: self.get("/-/ready") is not None, 30)

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                body = response.read()
                return json.loads(body) if path.startswith("/api") else body
        except OSError:
            return None

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer and answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def targets(self) -> dict[str, dict[str, Any]]:
        """The active scrape targets, by address."""
        return {t["labels"]["instance"]: t for t in self.get("/api/v1/targets")["data"]["activeTargets"]}

    @staticmethod
    def wait(predicate: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def populated_prometheus(tmp_path_factory: pytest.TempPathFactory, mock_llm: Any) -> Iterator[Prometheus]:
    """Prometheus in a container network, its targets written by the start script: the example
    service listening where the demo makes it listen for the stack (loopback and the bridge's
    address), driven with normal, failing and slow streams, and a second one on loopback only,
    as the example listens by default, which a container cannot reach."""
    tool("prometheus")  # skip (or fail on CI) before starting anything
    network = ContainerNetwork()
    otlp = OTLPHTTPReceiver()
    services = []
    try:
        workdir = tmp_path_factory.mktemp("prometheus")
        prices = workdir / "prices.json"  # the mock's own models, at a price of the user's
        prices.write_text(json.dumps({model: OWN_PRICE for model in ("mock-gpt", "mock-gpt-mini")}))
        base, service = start_example(mock_llm, HOST=container_reachable_hosts(network.host_end),
                                      OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="200",
                                      LLM_PRICES_FILE=str(prices))
        services.append(service)
        loopback_base, loopback_only = start_example(mock_llm, OTEL_TRACES_EXPORTER="none")
        services.append(loopback_only)
        ports = [url.rsplit(":", 1)[1] for url in (base, loopback_base)]
        config_dir, said = start_script_targets(workdir, ",".join(f"host.docker.internal:{p}" for p in ports),
                                                network.host_end)
        prometheus = Prometheus(workdir / "run", config_dir, network)
    except BaseException:
        for started in services:
            started.kill()
        network.close()
        otlp.stop()
        raise
    prometheus.spans = otlp
    prometheus.reachable, prometheus.unreachable = (f"host.docker.internal:{p}" for p in ports)
    prometheus.start_script_said = said
    prometheus.host_address = network.host_address
    try:
        prometheus.wait(lambda: any(r["value"][1] == "1" for r in prometheus.query('up{job="llm-apps"}')), 30)
        # ~11 s, a token every 0.25 s. The stall follows the first token, which always arrived when
        # read (after 3.2 s): a later one may be read late on a loaded machine, and a gap after a
        # token that was waiting is a lower bound, which makes a stall event but no gap sample.
        slow = {"ttft": 3.2, "itl": 0.25, "tokens": 20, "stall_at": 1, "stall": 3.0}
        slow_calls = []
        for _ in range(2):  # two, ending 3 s apart: a rate needs the counter seen rising
            thread = threading.Thread(target=post_chat, args=(base,), kwargs={"model": "mock-slow", "mock": slow})
            thread.start()
            slow_calls.append(thread)
            time.sleep(3)
        for round_ in range(6):  # spread over scrapes, so every counter is seen rising
            for model in ("mock-gpt", "mock-gpt-mini", "gpt-4o-mini"):  # (the last priced by genai-prices)
                assert post_chat(base, model=model)[0] == 200
            assert post_chat(base, model="mock-flaky", mock={"error": 500})[0] == 502
            if round_ % 2:
                assert post_chat(base, model="mock-flaky")[0] == 200
            time.sleep(1.2)
        for thread in slow_calls:
            thread.join(60)
        time.sleep(3)  # two more scrapes and rule evaluations
        yield prometheus
    finally:
        prometheus.stop()
        for started in services:
            started.terminate()
            started.communicate(timeout=20)
        network.close()
        otlp.stop()


def test_a_container_reaches_the_service_where_the_demo_listens_and_not_on_loopback(
        populated_prometheus: Prometheus) -> None:
    """Docker's network on Linux: host.docker.internal is the bridge's address, so a service on
    127.0.0.1 alone is a target that is down for ever and its panels stay empty. The one listening
    where the demo (and the start script's advice) puts it is up; nothing else is scraped (no
    collector target without the collector)."""
    targets = populated_prometheus.targets()
    assert set(targets) == {populated_prometheus.reachable, populated_prometheus.unreachable}
    assert targets[populated_prometheus.reachable]["health"] == "up"
    down = targets[populated_prometheus.unreachable]
    assert down["health"] == "down" and "refused" in down["lastError"], down
    said = populated_prometheus.start_script_said
    assert f"host.docker.internal is {populated_prometheus.host_address} here" in said, said
    assert f"HOST=127.0.0.1,{populated_prometheus.host_address}" in said, said


def test_every_dashboard_query_returns_data(populated_prometheus: Prometheus) -> None:
    empty = [expr for expr in dashboard_exprs() if not populated_prometheus.query(as_query(expr))]
    assert not empty
    services = populated_prometheus.get("/api/v1/label/service/values?" + urllib.parse.urlencode(
        {"match[]": "llm_request_duration_seconds_count"}))
    assert services["data"] == [TARGET_LABEL]  # the $service variable's values


def test_the_jaeger_links_search_for_the_service_name_the_spans_carry(populated_prometheus: Prometheus) -> None:
    """The dashboard's "Traces in Jaeger" links search for ``$trace_service``: that variable's query,
    run by the real Prometheus with every service selected, gives the spans' service.name, which
    is not the scrape target's ``service`` label."""
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "trace_service"]
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
    assert match is not None
    selector, label = match.group(1).replace("$service", ".*"), match.group(2)
    values = populated_prometheus.get(f"/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": selector}))
    assert populated_prometheus.spans is not None
    exported = {resource["service.name"] for resource, span in populated_prometheus.spans.spans()
                if span.name.startswith("chat ")}
    assert values["data"] == sorted(exported) == ["example-backend"] != [TARGET_LABEL]
    for link in dashboard["links"]:
        assert "${trace_service}" in link["url"] and "${service}" not in link["url"]


def test_every_alert_expression_returns_data_for_the_bad_model(populated_prometheus: Prometheus) -> None:
    expected = {"LLMHighErrorRate": "mock-flaky", "LLMSlowTokenRate": "mock-slow", "LLMSlowResponses": "mock-slow",
                "LLMHighTimeToFirstToken": "mock-slow", "LLMStreamStalls": "mock-slow"}
    rules = alert_rules()
    spend = rules.pop("LLMSpendRateHigh")
    for alert, expr in rules.items():
        models = {r["metric"]["model"] for r in populated_prometheus.query(expr)}
        assert models == {expected[alert]}, (alert, models)
    # The load costs far less than the threshold: its spend rate (the comparison's left side) is
    # there, for the target's service, and under the threshold the rule reads.
    rate, threshold = (part.strip() for part in spend.split(">"))
    [series] = populated_prometheus.query(rate)
    assert series["metric"] == {"service": TARGET_LABEL} and float(series["value"][1]) > 0
    assert populated_prometheus.query(threshold.removeprefix("scalar(").removesuffix(")"))
    assert not populated_prometheus.query(spend)


def test_the_alerts_that_should_fire_are_active(populated_prometheus: Prometheus) -> None:
    alerts = populated_prometheus.get("/api/v1/alerts")["data"]["alerts"]
    active = {(a["labels"]["alertname"], a["labels"]["model"]) for a in alerts if a["state"] in ("pending", "firing")}
    assert active == {("LLMHighErrorRate", "mock-flaky"), ("LLMSlowTokenRate", "mock-slow"),
                      ("LLMSlowResponses", "mock-slow"), ("LLMHighTimeToFirstToken", "mock-slow"),
                      ("LLMStreamStalls", "mock-slow")}
    rules = {r["alert"]: r for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
             for r in g["rules"] if "alert" in r}
    for alert in alerts:  # labelled and annotated as the rules say, with the scrape target's service
        rule, labels = rules[alert["labels"]["alertname"]], alert["labels"]
        assert labels["service"] == TARGET_LABEL and labels["severity"] == rule["labels"]["severity"], alert
        assert f"{labels['model']} ({TARGET_LABEL})" in alert["annotations"]["summary"], alert


def _exported_llm_spans(prometheus: Prometheus) -> dict[str, Any]:
    """The example's LLM spans the OTLP receiver got, by trace id (hex)."""
    assert prometheus.spans is not None
    return {span.trace_id.hex(): span for _, span in prometheus.spans.spans() if span.name.startswith("chat ")}


def test_exemplars_on_the_ttft_panel_open_the_traces_of_those_calls(populated_prometheus: Prometheus) -> None:
    """Prometheus, with the compose file's exemplar storage, keeps the exemplars of the TTFT
    histogram the dashboard's panel draws; each trace id is a call's exported span, whose TTFT is
    the exemplar's value. Grafana's datasource links the trace_id label to Jaeger."""
    from receivers import attributes

    [panel] = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["id"] == 1]
    assert all(target["exemplar"] for target in panel["targets"])
    now = time.time()
    answer = populated_prometheus.get("/api/v1/query_exemplars?" + urllib.parse.urlencode(
        {"query": "llm_time_to_first_token_seconds_bucket", "start": now - 600, "end": now}))
    assert answer["status"] == "success", answer
    found = [(series["seriesLabels"], e) for series in answer["data"] for e in series["exemplars"]]
    assert found, answer
    spans = _exported_llm_spans(populated_prometheus)
    for labels, exemplar in found:
        span = spans[exemplar["labels"]["trace_id"]]
        assert span.span_id.hex() == exemplar["labels"]["span_id"]
        span_attributes = attributes(span.attributes)
        assert labels["model"] == span_attributes["gen_ai.request.model"]
        assert float(exemplar["value"]) == pytest.approx(span_attributes["llm.time_to_first_token"], abs=1e-6)
    datasources = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text())
    [prometheus] = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    [jaeger] = [d for d in datasources["datasources"] if d["type"] == "jaeger"]
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"] == [{"name": "trace_id",
                                                                      "datasourceUid": jaeger["uid"]}]


def test_the_cost_counter_is_the_sum_of_the_spans_costs_at_genai_prices_and_the_users_prices(
        populated_prometheus: Prometheus) -> None:
    """Over the whole load: what Prometheus scraped equals what the spans say, and each span's
    cost is genai-prices' for the usage the mock sent, or the price file's."""
    import genai_prices

    from receivers import attributes

    by_model: dict[str, float] = {}
    for span in _exported_llm_spans(populated_prometheus).values():
        span_attributes = attributes(span.attributes)
        model = span_attributes["gen_ai.request.model"]
        if "llm.cost.usd" not in span_attributes:
            assert model in ("mock-flaky", "mock-slow") and span_attributes.get("llm.cost.matched") is not True
            continue
        tokens_in = span_attributes["gen_ai.usage.input_tokens"]
        tokens_out = span_attributes["gen_ai.usage.output_tokens"]
        if model == "gpt-4o-mini":
            usage = genai_prices.Usage(input_tokens=tokens_in, output_tokens=tokens_out)
            expected = float(genai_prices.calc_price(usage, model, provider_id="openai").total_price)
        else:
            expected = (tokens_in * OWN_PRICE["input"] + tokens_out * OWN_PRICE["output"]) / 1e6
        assert span_attributes["llm.cost.usd"] == pytest.approx(expected, rel=1e-9), model
        by_model[model] = by_model.get(model, 0.0) + span_attributes["llm.cost.usd"]
    assert set(by_model) == {"gpt-4o-mini", "mock-gpt", "mock-gpt-mini"}
    scraped = {r["metric"]["model"]: float(r["value"][1])
               for r in populated_prometheus.query("sum by (model) (llm_cost_usd_total)")}
    assert scraped == pytest.approx(by_model, rel=1e-9)

"""The leak suite: no credential, and no prompt or completion unless content capture is on,
ever leaves the process through the agent.

A distinctive secret is planted in every place an application puts one (the ``Authorization``,
``x-api-key``, ``api-key`` and ``x-goog-api-key`` headers, ``?key=`` and other secret query
parameters, the userinfo of a URL, which httpx also sends as Basic auth) and a distinctive prompt
in every call, through the openai SDK (also ``AzureOpenAI``), the anthropic SDK (which traces its
own calls: the agent adopts its spans), google-genai, ollama, boto3's Bedrock runtime (whose
access key id, secret key and session token sign and ride along every request), and raw
httpx/httpx2 and aiohttp. The fake
server (``echo_server.py``) echoes all of it back in error bodies (``message`` and elsewhere),
response headers and unusual fields of its stream events, in every mode: 400, 401, 429, 500, a
good answer (JSON and stream), and a stream that ends with the protocol's error event.

Then every byte the process exports is searched: the raw OTLP/HTTP protobuf bodies (traces and
metrics), the Prometheus ``/metrics`` text, the console exporters' stdout, the raw Jaeger Thrift
batches, and stderr, where a DEBUG logging handler writes every record except those of the app's
own HTTP and SDK libraries (which log their requests by design, with or without the agent).

The rule: a secret never appears anywhere. A prompt or a completion never appears in metrics or
logs, and appears in span data only with content capture on (there it may, wherever the agent
puts it). With content capture off an error is recorded by its type, status code and the
provider's error code: never free text from the server. Each secret and prompt is distinct, so a
failure names what leaked, where, and shows the bytes around it.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import clean_env, run_python
from echo_server import MODES, EchoLLMServer
from nexent_autoinstrument.tools.net import free_port
from receivers import JaegerThriftReceiver, OTLPHTTPReceiver, attributes

TOKEN = secrets.token_hex(4)
#: One secret per place planted (what the app sends it as, in the app below).
SECRET_PLACES = (
    "openai Authorization", "openai ?key=", "azure api-key", "anthropic x-api-key", "anthropic Authorization",
    "gemini x-goog-api-key", "ollama Authorization", "cohere Authorization",
    "raw gemini ?key=", "httpx userinfo user", "httpx userinfo password",
    "httpx2 userinfo user", "httpx2 userinfo password", "httpx2 ?api_key=", "aiohttp x-api-key", "aiohttp ?key=",
    "bedrock access key id", "bedrock secret access key", "bedrock session token",
)
SECRETS = {place: f"sk-LEAK{index:02d}-{TOKEN}" for index, place in enumerate(SECRET_PLACES)}
#: The userinfo of a URL also travels as ``Authorization: Basic base64(user:password)``.
BASIC_AUTH = {f"{library} userinfo as Basic auth": base64.b64encode(
    f"{SECRETS[library + ' userinfo user']}:{SECRETS[library + ' userinfo password']}".encode()).decode()
    for library in ("httpx", "httpx2")}
#: One prompt per client of the app.
PROMPTS = {who: f"PROMPT-LEAK-{who.replace(' ', '-')}-{TOKEN}"
           for who in ("openai", "azure", "anthropic", "gemini", "ollama", "cohere", "raw gemini", "httpx",
                       "httpx2", "raw ollama", "aiohttp", "bedrock")}
#: The server's completions: this, then ``-{protocol}``.
COMPLETION = f"COMPLETION-LEAK-{TOKEN}"
COMPLETIONS = {f"{protocol} completion": f"{COMPLETION}-{protocol}"
               for protocol in ("openai", "anthropic", "gemini", "ollama", "cohere", "bedrock")}

#: Never anywhere.
NEVER = {**SECRETS, **BASIC_AUTH}
#: Only in span data, and only with content capture on.
CONTENT = {**{f"{who} prompt": prompt for who, prompt in PROMPTS.items()}, **COMPLETIONS}

#: The LLM calls the app makes: 12 clients x (5 modes x whole and stream, + one stream ending in an error).
CLIENTS = 12
CALLS = CLIENTS * (2 * (len(MODES) - 1) + 1)
#: (the openai SDK on 127.0.0.1 is ``openai_compatible``)
PROVIDERS = {"azure.ai.openai", "anthropic", "gcp.gemini", "ollama", "cohere", "openai_compatible", "aws.bedrock"}

APP = r'''
import json, logging, os, sys, time, urllib.request

plan = json.loads(os.environ["LEAK_PLAN"])
S, P, root = plan["secrets"], plan["prompts"], plan["root"]
hostport = root.split("://", 1)[1]

# A DEBUG handler on stderr for every logger but the app's own HTTP and SDK libraries, which log
# their requests (URLs with their query, bodies) at DEBUG by design, with or without the agent.
APPS_LIBRARIES = ("openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2", "google_genai", "google",
                  "ollama", "cohere", "urllib3", "asyncio", "hpack", "h11", "h2", "aiohttp", "botocore", "boto3")

class NotTheAppsLibraries(logging.Filter):
    def filter(self, record):
        return record.name.split(".")[0] not in APPS_LIBRARIES

handler = logging.StreamHandler(sys.stderr)
handler.addFilter(NotTheAppsLibraries())
handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
logging.root.addHandler(handler)
logging.root.setLevel(logging.DEBUG)

import asyncio
import aiohttp, anthropic, boto3, cohere, httpx, httpx2, ollama, openai
from botocore.config import Config as BotoConfig
from google import genai
from google.genai import types as genai_types

report = {"completed": [], "raised": []}

def attempt(label, call):
    try:
        call()
        report["completed"].append(label)
    except Exception as exc:  # the app catches the SDK's exceptions, as apps do
        report["raised"].append([label, type(exc).__name__])

def messages(who):
    return [{"role": "user", "content": P[who]}]

for mode in plan["modes"]:
    for stream in (False, True):
        if mode == "streamerr" and not stream:
            continue
        tag = f"{mode}/{'stream' if stream else 'whole'}"

        client = openai.OpenAI(base_url=f"{root}/{mode}/v1", api_key=S["openai Authorization"],
                               default_query={"key": S["openai ?key="]}, max_retries=0)
        attempt(f"openai {tag}", lambda: list(client.chat.completions.create(
            model="echo-model", messages=messages("openai"), stream=True)) if stream else
            client.chat.completions.create(model="echo-model", messages=messages("openai")))

        azure = openai.AzureOpenAI(azure_endpoint=f"{root}/{mode}", api_version="2024-06-01",
                                   api_key=S["azure api-key"], max_retries=0)
        attempt(f"azure {tag}", lambda: list(azure.chat.completions.create(
            model="echo-model", messages=messages("azure"), stream=True)) if stream else
            azure.chat.completions.create(model="echo-model", messages=messages("azure")))

        claude = anthropic.Anthropic(base_url=f"{root}/{mode}", api_key=S["anthropic Authorization"], max_retries=0,
                                     default_headers={"x-api-key": S["anthropic x-api-key"]})  # (api_key: Bearer)
        attempt(f"anthropic {tag}", lambda: list(claude.messages.create(
            model="echo-model", max_tokens=16, messages=messages("anthropic"), stream=True)) if stream else
            claude.messages.create(model="echo-model", max_tokens=16, messages=messages("anthropic")))

        gemini = genai.Client(api_key=S["gemini x-goog-api-key"], http_options=genai_types.HttpOptions(
            base_url=f"{root}/{mode}", api_version="v1beta", retry_options=genai_types.HttpRetryOptions(attempts=1)))
        attempt(f"gemini {tag}", lambda: list(gemini.models.generate_content_stream(
            model="echo-model", contents=P["gemini"])) if stream else
            gemini.models.generate_content(model="echo-model", contents=P["gemini"]))

        llama = ollama.Client(host=f"{root}/{mode}", headers={"Authorization": f"Bearer {S['ollama Authorization']}"})
        attempt(f"ollama {tag}", lambda: list(llama.chat(model="echo-model", messages=messages("ollama"), stream=True))
                if stream else llama.chat(model="echo-model", messages=messages("ollama"), stream=False))

        command = cohere.ClientV2(api_key=S["cohere Authorization"], base_url=f"{root}/{mode}")
        once = {"max_retries": 0}
        attempt(f"cohere {tag}", lambda: list(command.chat_stream(
            model="echo-model", messages=messages("cohere"), request_options=once)) if stream else
            command.chat(model="echo-model", messages=messages("cohere"), request_options=once))

        def raw_gemini_key():
            verb = "streamGenerateContent?alt=sse&" if stream else "generateContent?"
            url = f"{root}/{mode}/v1beta/models/echo-model:{verb}key={S['raw gemini ?key=']}"
            with httpx.Client() as raw, raw.stream("POST", url, json={
                    "contents": [{"role": "user", "parts": [{"text": P["raw gemini"]}]}]}) as response:
                list(response.iter_lines())
                response.raise_for_status()
        attempt(f"raw-gemini-key {tag}", raw_gemini_key)

        def raw_userinfo(library, who):
            user, password = S[who + " userinfo user"], S[who + " userinfo password"]
            with library.Client() as raw:
                raw.post(f"http://{user}:{password}@{hostport}/{mode}/v1/chat/completions",
                         json={"model": "echo-model", "stream": stream, "messages": messages(who)}).raise_for_status()
        attempt(f"httpx-userinfo {tag}", lambda: raw_userinfo(httpx, "httpx"))
        attempt(f"httpx2-userinfo {tag}", lambda: raw_userinfo(httpx2, "httpx2"))

        def raw_httpx2_key():
            with httpx2.Client() as raw:
                raw.post(f"{root}/{mode}/api/chat?api_key={S['httpx2 ?api_key=']}",
                         json={"model": "echo-model", "stream": stream, "messages": messages("raw ollama")}
                         ).raise_for_status()
        attempt(f"httpx2-key {tag}", raw_httpx2_key)

        async def raw_aiohttp():
            async with aiohttp.ClientSession(headers={"x-api-key": S["aiohttp x-api-key"]}) as session, session.post(
                    f"{root}/{mode}/v1/messages?key={S['aiohttp ?key=']}", json={
                        "model": "echo-model", "max_tokens": 16, "stream": stream,
                        "messages": messages("aiohttp")}) as response:
                await response.read()
                response.raise_for_status()
        attempt(f"aiohttp {tag}", lambda: asyncio.run(raw_aiohttp()))

        bedrock = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=f"{root}/{mode}",
                               aws_access_key_id=S["bedrock access key id"],
                               aws_secret_access_key=S["bedrock secret access key"],
                               aws_session_token=S["bedrock session token"],
                               config=BotoConfig(retries={"max_attempts": 1}))
        converse = {"modelId": "echo-model", "messages": [{"role": "user", "content": [{"text": P["bedrock"]}]}]}
        attempt(f"bedrock {tag}", lambda: list(bedrock.converse_stream(**converse)["stream"]) if stream else
                bedrock.converse(**converse))

report["metrics"] = urllib.request.urlopen(
    f"http://127.0.0.1:{os.environ['PROMETHEUS_PORT']}/metrics", timeout=10).read().decode()
with open(plan["report"], "w") as out:
    json.dump(report, out)
'''


class RawOTLPReceiver(OTLPHTTPReceiver):
    """The real OTLP/HTTP receiver, keeping every request body as it came."""

    def __init__(self) -> None:
        self.raw: dict[str, list[bytes]] = {"/v1/traces": [], "/v1/metrics": []}
        super().__init__()

    def _receive(self, path: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        assert not headers.get("Content-Encoding"), "compressed: the search below would see nothing"
        self.raw.setdefault(path, []).append(body)
        return super()._receive(path, headers, body)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoLLMServer]:
    server = EchoLLMServer(COMPLETION)
    yield server
    server.stop()


def find_leaks(places: dict[str, tuple[bytes, bool]], capture: bool) -> list[str]:
    """Every needle found in every place, with the bytes around its first occurrence. ``places``:
    name -> (bytes, whether they are span data, where content may appear with capture on)."""
    found = []
    for place, (data, span_data) in places.items():
        needles = dict(NEVER)
        if not (capture and span_data):
            needles.update(CONTENT)
        for name, needle in needles.items():
            count = data.count(needle.encode())
            if count:
                at = data.find(needle.encode())
                context = data[max(0, at - 160):at + len(needle) + 60].replace(needle.encode(), b"<<" +
                                                                                name.encode() + b">>")
                found.append(f"{name!r} x{count} in {place}: ...{context!r}...")
    return found


def llm_span_attributes_otlp(receiver: OTLPHTTPReceiver) -> list[dict[str, Any]]:
    spans = [attributes(span.attributes) for _, span in receiver.spans()]
    return [a for a in spans if "gen_ai.operation.name" in a]


def llm_span_attributes_console(stdout: str) -> list[dict[str, Any]]:
    spans = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"name"')]
    return [s["attributes"] for s in spans if "gen_ai.operation.name" in s["attributes"]]


def llm_span_attributes_jaeger(receiver: JaegerThriftReceiver) -> list[dict[str, Any]]:
    found = []
    for _, batch in receiver.batches:
        for span in batch.spans:
            tags = {tag.key: next((v for v in (tag.vStr, tag.vLong, tag.vDouble, tag.vBool) if v is not None), None)
                    for tag in span.tags or ()}
            if "gen_ai.operation.name" in tags:
                found.append(tags)
    return found


@pytest.mark.parametrize("capture", [False, True], ids=["capture-off", "capture-on"])
def test_no_secret_leaves_the_process(capture: bool, echo_server: EchoLLMServer, tmp_path: Path) -> None:
    """One run exports through every exporter at once (OTLP traces and metrics, console traces and
    metrics, Jaeger Thrift, /metrics, logs)."""
    otlp, jaeger = RawOTLPReceiver(), JaegerThriftReceiver()
    try:
        report_path = tmp_path / "report.json"
        plan = {"secrets": SECRETS, "prompts": PROMPTS, "root": echo_server.root, "modes": list(MODES),
                "report": str(report_path)}
        exporters = {"OTEL_TRACES_EXPORTER": "otlp,console,jaeger", "OTEL_METRICS_EXPORTER": "otlp,console",
                     "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "JAEGER_ENDPOINT": jaeger.endpoint}
        env = clean_env(ENABLE_TELEMETRY="true", SERVICE_NAME="leaks", LEAK_PLAN=json.dumps(plan),
                        PROMETHEUS_PORT=str(free_port()), OTEL_BSP_SCHEDULE_DELAY="200",
                        OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=str(capture).lower(),
                        LLM_SLOW_REQUEST_THRESHOLD_SECONDS="0.000001",  # (the slow-call warning is logged too)
                        **exporters)
        # (a bound for a hang: the app takes seconds, twenty times as long on a machine loaded far past its cores)
        result = run_python(APP, env=env, tmp_path=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(report_path.read_text())
    finally:
        otlp.stop()
        jaeger.stop()

    # The app did what it meant to: every call reached the server and came back or raised.
    assert len(report["completed"]) + len(report["raised"]) == CALLS
    assert not [label for label in report["completed"] if label.split(" ")[1].startswith("e")], report
    assert "slow LLM call" in result.stderr  # the logging handler writes the agent's records

    # Where the bytes went: each place, and whether it is span data.
    places: dict[str, tuple[bytes, bool]] = {
        "/metrics": (report["metrics"].encode(), False),
        "stderr (logs)": (result.stderr.encode(), False),
    }
    stdout_lines = result.stdout.splitlines(keepends=True)
    span_lines = "".join(line for line in stdout_lines if line.startswith('{"name"'))
    other_stdout = "".join(line for line in stdout_lines if not line.startswith('{"name"'))
    places["stdout (console span exporter)"] = (span_lines.encode(), True)
    places["stdout (other: console metric exporter)"] = (other_stdout.encode(), False)
    places["OTLP traces (protobuf)"] = (b"".join(otlp.raw["/v1/traces"]), True)
    places["OTLP metrics (protobuf)"] = (b"".join(otlp.raw["/v1/metrics"]), False)
    places["Jaeger Thrift batches"] = (b"".join(jaeger.raw), True)

    # Each exporter actually carried the calls (else finding nothing proves nothing).
    for spans in (llm_span_attributes_otlp(otlp), llm_span_attributes_console(result.stdout),
                  llm_span_attributes_jaeger(jaeger)):
        assert len(spans) >= CALLS - 2, len(spans)  # (one LLM span per call)
        assert {s.get("gen_ai.provider.name") for s in spans} >= PROVIDERS
    spans = llm_span_attributes_otlp(otlp)
    assert "llm_request_duration_seconds" in report["metrics"]
    assert otlp.raw["/v1/metrics"] and otlp.metric("gen_ai.client.operation.duration") is not None
    assert "gen_ai.client.operation.duration" in other_stdout
    # What an error may be recorded by is recorded: its type and the status code.
    statuses = {int(s["http.response.status_code"]) for s in spans if "http.response.status_code" in s}
    assert statuses >= {200, 400, 401, 429, 500}, statuses
    assert sum("error.type" in s for s in spans) >= len(report["raised"]), len(report["raised"])
    # Content capture does what it says: the prompt and the completion are on the spans when it is on.
    inputs = " ".join(str(s.get("gen_ai.input.messages", "")) for s in spans)
    outputs = " ".join(str(s.get("gen_ai.output.messages", "")) for s in spans)
    assert (PROMPTS["openai"] in inputs) is capture
    assert (COMPLETIONS["openai completion"] in outputs) is capture

    leaks = find_leaks(places, capture)
    if leaks:
        pytest.fail(f"{len(leaks)} leaks (needle xcount in place: the bytes around the first):\n" + "\n".join(leaks),
                    pytrace=False)

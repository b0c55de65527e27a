"""The botocore layer against the mock LLM's Bedrock runtime: each chunk's time against the
server's own send times, a caller that reads late, what a span says (usage from ``metadata``, the
server's own latency, the request's settings), content capture, every exit leaving nothing behind,
and botocore's other operations left alone. (What the caller sees, bare against agent, is the
conformance suite's ``cases_bedrock``; what never leaves the process, ``test_leaks``.)"""

from __future__ import annotations

import gc
import json
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from conftest import Harness, clean_env, make_harness, run_python
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.instrumentors import botocore as layer
from nexent_autoinstrument.instrumentors.otel import BedrockInstrumentor
from receivers import OTLPHTTPReceiver, attributes

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "PROMPT-hello"}]}]


def client(mock_llm: Any, service: str = "bedrock-runtime") -> Any:
    return boto3.client(service, region_name="us-east-1", endpoint_url=mock_llm.base_url.removesuffix("/v1"),
                        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                        config=Config(retries={"max_attempts": 1}))


def converse(**mock: Any) -> dict[str, Any]:
    return {"modelId": CLAUDE, "messages": MESSAGES, "inferenceConfig": {"maxTokens": 64, "temperature": 0.25},
            "additionalModelRequestFields": mock}


def test_chunks_are_timed_against_the_servers_send_times(agent: Harness, mock_llm: Any) -> None:
    label = uuid.uuid4().hex
    got: list[float] = []  # when the caller had each content event
    started = time.perf_counter()
    result = client(mock_llm).converse_stream(**converse(mock_ttft=0.3, mock_itl=0.03, mock_tokens=6,
                                                         mock_label=label))
    events = []
    for event in result["stream"]:
        events.append(event)
        if "contentBlockDelta" in event:
            got.append(time.perf_counter())
    attrs = agent.llm_span().attributes
    timeline = mock_llm.timelines[label]  # (the mock runs in this process: the same clock)
    offsets = [offset / 1e6 for offset in decode_offsets(attrs["llm.token.offsets"])]
    assert len(offsets) == len(timeline["tokens"]) == len(got) == 6
    for since, server_sent, caller_had in zip(offsets, timeline["tokens"], got, strict=True):
        # Each chunk arrived after the server sent it and before the caller had it (1 ms for the
        # offsets' rounding to microseconds): bounds that hold at any speed.
        assert started + since <= caller_had
        assert server_sent <= timeline["arrived"] + since + 0.001
    assert attrs["llm.time_to_first_token"] >= 0.3
    # The events came 30 ms apart, each pull waiting for its frame: the decode rate and the gaps
    # rest on them. (A machine loaded past its cores may join two in one read: then they count as
    # events that waited, and the rate rests on the others.)
    assert attrs.get("llm.inter_token_latency.p50", 0) > 0 or attrs["llm.stream.waiting_chunks"] > 0
    assert "llm.token_generation_rate" in attrs or attrs["llm.stream.waiting_chunks"] > 0
    # The usage and the server's own latency are the stream's metadata event, as the caller saw it.
    metadata = events[-1]["metadata"]
    assert attrs["gen_ai.usage.input_tokens"] == metadata["usage"]["inputTokens"]
    assert attrs["gen_ai.usage.output_tokens"] == metadata["usage"]["outputTokens"] == 6
    assert attrs["llm.usage.source"] == "api"
    assert attrs["llm.server.total_duration"] == metadata["metrics"]["latencyMs"] / 1000
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.provider.name"] == "aws.bedrock" and attrs["gen_ai.request.model"] == CLAUDE
    assert attrs["gen_ai.request.max_tokens"] == 64 and attrs["gen_ai.request.temperature"] == 0.25
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == mock_llm.server_address[1]
    assert attrs["llm.stream.outcome"] == "completed" and attrs["llm.stream.chunks"] == len(events)
    assert agent.value("llm_time_to_first_token_seconds_count", model=CLAUDE, operation="chat") == 1
    # Priced from Bedrock's own table (its model ids name the vendor and version).
    assert attrs["llm.cost.matched"] is True and attrs["llm.cost.model"].startswith("aws:")
    assert attrs["llm.cost.usd"] > 0


def test_a_caller_that_reads_late_is_told_apart_from_the_server(agent: Harness, mock_llm: Any) -> None:
    """botocore reads the network on the caller's pull: a caller that falls behind finds its events
    waiting, and the decode rate does not rest on them."""
    result = client(mock_llm).converse_stream(**converse(mock_ttft=0.05, mock_itl=0.02, mock_tokens=6))
    for _ in result["stream"]:
        time.sleep(0.1)
    attrs = agent.llm_span().attributes
    assert attrs["llm.stream.waiting_chunks"] >= 4 and attrs["llm.stream.reader_bound"] is True
    assert attrs["llm.stream.reader_seconds"] >= 0.5


def test_prompt_cache_reads_count_in_the_input_and_are_priced_as_such(agent: Harness, mock_llm: Any) -> None:
    """Bedrock counts tokens read from the prompt cache apart from ``inputTokens``; the input, as
    the GenAI conventions count it, has them (and the price never goes below zero)."""
    usage = client(mock_llm).converse(**converse(mock_cached_tokens=1500))["usage"]
    attrs = agent.llm_span().attributes
    assert usage["cacheReadInputTokens"] == 1500 and usage["inputTokens"] < 1500
    assert attrs["gen_ai.usage.input_tokens"] == usage["inputTokens"] + 1500
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1500
    assert attrs["llm.cost.usd"] > 0
    assert agent.value("llm_cost_usd_total", model=CLAUDE, provider="aws.bedrock") == attrs["llm.cost.usd"]


def test_invoke_model_reads_the_family_body_and_the_answer_headers(agent: Harness, mock_llm: Any) -> None:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "temperature": 0.5, "top_k": 5,
            "messages": [{"role": "user", "content": "PROMPT-hello"}]}
    result = client(mock_llm).invoke_model(modelId=CLAUDE, body=json.dumps(body))
    returned = time.time_ns()
    head = result["body"].read(10)
    assert not agent.llm_spans()  # (the answer is not read yet)
    time.sleep(0.2)  # (the caller reads the rest late: the answer had come whole when botocore returned)
    answer = json.loads(head + result["body"].read())
    headers = result["ResponseMetadata"]["HTTPHeaders"]
    attrs = agent.llm_span().attributes
    assert attrs["gen_ai.usage.output_tokens"] == answer["usage"]["output_tokens"]
    assert attrs["gen_ai.usage.input_tokens"] == int(headers["x-amzn-bedrock-input-token-count"])
    assert attrs["llm.server.total_duration"] == int(headers["x-amzn-bedrock-invocation-latency"]) / 1000
    assert attrs["gen_ai.response.model"] == answer["model"] and attrs["gen_ai.response.id"] == answer["id"]
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.request.max_tokens"] == 50 and attrs["gen_ai.request.top_k"] == 5
    assert attrs["llm.stream"] is False and "llm.time_to_first_token" not in attrs
    assert agent.llm_span().end_time <= returned + 5_000_000  # (5 ms: the clocks' conversion)


def test_invoke_stream_carries_the_servers_first_byte_time(agent: Harness, mock_llm: Any) -> None:
    body = {"prompt": "PROMPT-hello", "max_gen_len": 50}
    result = client(mock_llm).invoke_model_with_response_stream(modelId="meta.llama3-8b-instruct-v1:0",
                                                                body=json.dumps({**body, "mock_ttft": 0.2}))
    last = [json.loads(event["chunk"]["bytes"]) for event in result["body"]][-1]
    metrics = last["amazon-bedrock-invocationMetrics"]
    attrs = agent.llm_span().attributes
    assert attrs["llm.server.first_byte_duration"] == metrics["firstByteLatency"] / 1000
    assert attrs["llm.server.total_duration"] == metrics["invocationLatency"] / 1000
    assert attrs["gen_ai.operation.name"] == "text_completion" and attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.output_tokens"] == metrics["outputTokenCount"] == 10
    # The server's first byte is the first token's send time: the agent's TTFT cannot be shorter.
    assert attrs["llm.time_to_first_token"] >= metrics["firstByteLatency"] / 1000 - 0.001


def test_errors_are_recorded_by_code_status_and_retries_never_by_their_text(agent: Harness, mock_llm: Any) -> None:
    bedrock = client(mock_llm)
    with pytest.raises(Exception, match="mock error 429") as throttled:
        bedrock.converse(**converse(mock_error=429))
    stream = bedrock.converse_stream(**converse(mock_error_event=2))["stream"]
    with pytest.raises(Exception, match="mock stream error") as mid_stream:
        list(stream)
    retrying = boto3.client("bedrock-runtime", region_name="us-east-1",
                            endpoint_url=mock_llm.base_url.removesuffix("/v1"), aws_access_key_id="AKIDEXAMPLE",
                            aws_secret_access_key="secret",
                            config=Config(retries={"max_attempts": 3, "mode": "standard"}))
    retrying.converse(**converse(mock_fail_attempts=2))
    first, second, third = (span.attributes for span in agent.llm_spans())
    assert first["error.type"] == type(throttled.value).__name__ == "ThrottlingException"
    assert first["llm.error.code"] == "ThrottlingException" and first["http.response.status_code"] == 429
    assert second["error.type"] == "EventStreamError" and second["llm.error.code"] == "modelStreamErrorException"
    assert second["llm.stream.outcome"] == "error" and type(mid_stream.value).__name__ == "EventStreamError"
    assert third["llm.stream.outcome"] == "completed" and third["llm.request.retries"] == 2
    for span in agent.llm_spans():  # (the server's text stays out, content capture off)
        events = [dict(event.attributes or {}) for event in span.events]
        assert "mock error" not in repr((dict(span.attributes or {}), events)) and "mock stream" not in repr(events)


def test_content_capture_on_keeps_prompt_and_completion(mock_llm: Any) -> None:
    harness = make_harness(capture_content=True)
    instrumentor = BedrockInstrumentor()
    instrumentor.instrument(telemetry=harness.telemetry)
    try:
        bedrock = client(mock_llm)
        whole = bedrock.converse(**converse(mock_content="COMPLETION-whole"))
        streamed = bedrock.converse_stream(**converse(mock_content="COMPLETION streamed"))
        assert len(list(streamed["stream"])) > 3
    finally:
        instrumentor.uninstrument()
    assert whole["output"]["message"]["content"][0]["text"] == "COMPLETION-whole"
    spans = harness.llm_spans()
    assert [s.attributes["llm.stream"] for s in spans] == [False, True]
    for span, completion in zip(spans, ("COMPLETION-whole", "COMPLETION streamed"), strict=True):
        assert "PROMPT-hello" in span.attributes["gen_ai.input.messages"]
        assert completion in span.attributes["gen_ai.output.messages"]


def test_every_exit_ends_one_span_and_leaves_nothing_behind(agent: Harness, mock_llm: Any) -> None:
    bedrock = client(mock_llm)
    long = converse(mock_tokens=10, mock_stall_at=2, mock_stall=3.0)
    invoke = {"modelId": CLAUDE, "body": json.dumps({"max_tokens": 20, "messages": []})}

    def read_all() -> None:
        list(bedrock.converse_stream(**converse())["stream"])

    def break_off() -> None:
        for _ in bedrock.converse_stream(**long)["stream"]:
            break

    def close() -> None:
        stream = bedrock.converse_stream(**long)["stream"]
        next(iter(stream))
        stream.close()

    def drop_unread() -> None:
        bedrock.converse_stream(**long)

    def invoke_read() -> None:
        bedrock.invoke_model(**invoke)["body"].read()

    def invoke_lines() -> None:
        list(bedrock.invoke_model(**invoke)["body"].iter_lines())

    def invoke_closed() -> None:
        bedrock.invoke_model(**invoke)["body"].close()

    def invoke_dropped() -> None:
        bedrock.invoke_model(**invoke)

    def invoke_readinto() -> None:
        body, buffer = bedrock.invoke_model(**invoke)["body"], bytearray(64)
        while body.readinto(buffer):
            pass

    def invoke_readlines() -> None:
        bedrock.invoke_model(**invoke)["body"].readlines()

    def invoke_raw_in_with() -> None:
        with bedrock.invoke_model(**invoke)["body"] as raw:
            raw.read()

    def invoke_half_in_with() -> None:
        with bedrock.invoke_model(**invoke)["body"] as raw:
            raw.read(5)

    exits = {read_all: "completed", break_off: "closed_early", close: "closed_early", drop_unread: "abandoned",
             invoke_read: "completed", invoke_lines: "completed", invoke_closed: "closed_early",
             invoke_dropped: "abandoned", invoke_readinto: "completed", invoke_readlines: "completed",
             invoke_raw_in_with: "completed", invoke_half_in_with: "closed_early"}
    for leave, outcome in exits.items():
        agent.exporter.clear()
        leave()
        gc.collect()
        deadline = time.monotonic() + 20  # (a broken-off call ends after its grace, on the agent's thread)
        while not agent.llm_spans() and time.monotonic() < deadline:
            time.sleep(0.05)
        attrs = agent.llm_span().attributes
        assert attrs["llm.stream.outcome"] == outcome, leave.__name__
        assert not layer._streams and not layer._bodies, leave.__name__
        if leave in (invoke_read, invoke_lines, invoke_readinto, invoke_readlines):  # (the body was seen)
            assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",), leave.__name__


def test_other_operations_and_services_are_not_measured(agent: Harness, mock_llm: Any) -> None:
    """Only the runtime's generation operations are LLM calls: not the control plane, not S3."""
    for service, operation in (("bedrock", "list_foundation_models"), ("s3", "list_buckets"),
                               ("bedrock-runtime", "apply_guardrail")):
        bedrock = client(mock_llm, service)
        kwargs = ({"guardrailIdentifier": "g", "guardrailVersion": "1", "source": "INPUT", "content": []}
                  if operation == "apply_guardrail" else {})
        with pytest.raises(Exception):  # noqa: B017 (the mock has no such route: any error will do)
            getattr(bedrock, operation)(**kwargs)
    assert not agent.llm_spans()


def test_beside_the_official_botocore_instrumentation_each_call_has_one_llm_span(mock_llm: Any) -> None:
    """opentelemetry-instrumentation-botocore (which ``opentelemetry-bootstrap`` installs wherever
    botocore is) traces every AWS call; with the agent on, it leaves the four generation
    operations to the agent (no second span, no GenAI metrics of its own, no error message that
    quotes the server) and still traces the rest, Bedrock's other runtime operations included."""
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    harness = make_harness()
    reader = InMemoryMetricReader()
    official, ours = BotocoreInstrumentor(), BedrockInstrumentor()
    official.instrument(tracer_provider=harness.provider, meter_provider=MeterProvider(metric_readers=[reader]))
    ours.instrument(telemetry=harness.telemetry)
    try:
        bedrock = client(mock_llm)
        assert len(list(bedrock.converse_stream(**converse())["stream"])) > 3
        bedrock.converse(**converse())
        with pytest.raises(Exception, match="mock error 400"):
            bedrock.converse(**converse(mock_error=400))
        with pytest.raises(Exception):  # noqa: B017 (the mock has no guardrails: any error will do)
            bedrock.apply_guardrail(guardrailIdentifier="g", guardrailVersion="1", source="INPUT", content=[])
    finally:
        ours.uninstrument()
        official.uninstrument()
    llm = harness.llm_spans()
    assert [s.attributes["llm.stream"] for s in llm] == [True, False, False]
    assert all(s.instrumentation_scope.name == "tests" for s in llm)  # (the agent's tracer)
    for span in harness.spans():  # (the server's error text is on no span)
        texts = [span.status.description or "", *(repr(dict(e.attributes or {})) for e in span.events)]
        assert not any("mock error 400" in text for text in texts), span.name
    rpc = [s.name for s in harness.spans() if s.attributes.get("rpc.system") == "aws-api"]
    assert rpc == ["Bedrock Runtime.ApplyGuardrail"]
    data = reader.get_metrics_data()
    names = [m.name for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics for m in sm.metrics]
    assert not [name for name in names if name.startswith("gen_ai.")]
    # And once the agent is off, the official instrumentation has its Bedrock extension back.
    from opentelemetry.instrumentation.botocore.extensions import _BOTOCORE_EXTENSIONS

    assert _BOTOCORE_EXTENSIONS["bedrock-runtime"]().__name__ == "_BedrockRuntimeExtension"


APP = """
import os, boto3
from botocore.config import Config
from opentelemetry import trace

bedrock = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=os.environ["MOCK_ROOT"],
                       aws_access_key_id="AKIDAPP", aws_secret_access_key="app",
                       config=Config(retries={"max_attempts": 1}))
messages = [{"role": "user", "content": [{"text": "hello"}]}]
with trace.get_tracer("app").start_as_current_span("handle_request"):
    print("events", len(list(bedrock.converse_stream(modelId="amazon.nova-lite-v1:0", messages=messages)["stream"])))
    print("stop", bedrock.converse(modelId="amazon.nova-lite-v1:0", messages=messages)["stopReason"])
"""


@pytest.mark.parametrize("door", ["opentelemetry-instrument", "auto-load"])
def test_both_doors_give_one_llm_span_per_call_in_the_services_trace(door: str, mock_llm: Any,
                                                                      tmp_path: Path) -> None:
    """As users run it: ``opentelemetry-instrument`` (which also loads the official botocore
    instrumentation, installed here as ``opentelemetry-bootstrap`` installs it) or auto-load."""
    otlp = OTLPHTTPReceiver()
    try:
        env = clean_env(ENABLE_TELEMETRY="true", MOCK_ROOT=mock_llm.base_url.removesuffix("/v1"),
                        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_METRICS_EXPORTER="none")
        result = run_python(APP, env=env, instrument=door == "opentelemetry-instrument", tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "events 14" in result.stdout and "stop end_turn" in result.stdout  # (10 tokens and 4 other events)
        spans = [span for _, span in otlp.spans()]
    finally:
        otlp.stop()
    parent = next(span for span in spans if span.name == "handle_request")
    llm = [span for span in spans if "gen_ai.operation.name" in attributes(span.attributes)]
    assert [attributes(span.attributes)["llm.stream"] for span in llm] == [True, False]
    for span in llm:
        attrs = attributes(span.attributes)
        assert span.trace_id == parent.trace_id and attrs["gen_ai.provider.name"] == "aws.bedrock"
        assert attrs["gen_ai.usage.output_tokens"] == 10
    # (and no second span of the official botocore instrumentation, which opentelemetry-instrument loads)
    assert not [span for span in spans if attributes(span.attributes).get("rpc.system") == "aws-api"]

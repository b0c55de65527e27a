"""The figures against the mock's own server-side times: the client's part of TTFT, the server's
part, and streams read slower than they arrive."""

from __future__ import annotations

import importlib
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from conftest import make_harness
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.instrumentors.otel import HTTPX2Instrumentor, HTTPXInstrumentor, OpenAIInstrumentor

MESSAGES = [{"role": "user", "content": "hi"}]
CLIENT_DELAY = 0.2  # what the client spends before sending, on purpose (an httpx request hook)


@pytest.fixture
def agent() -> Iterator[Any]:
    harness = make_harness(max_model_labels=1000)
    layers = [OpenAIInstrumentor(), HTTPXInstrumentor(), HTTPX2Instrumentor()]
    for layer in layers:
        layer.instrument(telemetry=harness.telemetry)
    yield harness
    for layer in layers:
        layer.uninstrument()


def http_library() -> Any:
    return importlib.import_module("httpx2" if int(openai.__version__.split(".")[0]) >= 3 else "httpx")


def server_rate(timeline: dict[str, Any]) -> float:
    sent = timeline["tokens"]
    return (len(sent) - 1) / (sent[-1] - sent[0])


def test_client_and_server_parts_of_ttft(agent: Any, mock_llm: Any) -> None:
    httpx = http_library()
    hooks: dict[str, float] = {}  # when the client's own delay ended, and when the headers came back

    def client_delay(request: Any) -> None:
        time.sleep(CLIENT_DELAY)
        hooks["delayed"] = time.perf_counter()

    slow_client = httpx.Client(event_hooks={"request": [client_delay],
                                            "response": [lambda response: hooks.update(headers=time.perf_counter())]})
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0, http_client=slow_client)
    completions = client.chat.completions  # (the SDK imports its resources on first use, before any call)
    labels = []
    for stream in (True, True, False, False):  # (the SDK closes a stream's connection at [DONE])
        labels.append(uuid.uuid4().hex)
        called = time.perf_counter()
        result = completions.create(model="mock-gpt", messages=MESSAGES, stream=stream, extra_body={
            "mock_ttft": 0.15, "mock_itl": 0.01, "mock_tokens": 5, "mock_label": labels[-1]})
        first_seen = None  # when we had the first content chunk: the agent timed it before that
        if stream:
            for chunk in result:
                if first_seen is None and chunk.choices and chunk.choices[0].delta.content:
                    first_seen = time.perf_counter()
        truth = mock_llm.timelines[labels[-1]]
        span = agent.llm_spans()[-1]
        attrs = span.attributes
        # Bounds that hold at any speed (a busy machine only widens them; on a quiet one they are
        # a few milliseconds wide): the request was on the wire after the client's own delay and
        # before its response's headers came back (the call started after ``called``); the server
        # read it in between too.
        assert CLIENT_DELAY <= attrs["llm.time_to_request_sent"] <= hooks["headers"] - called
        assert hooks["delayed"] <= truth["arrived"] <= hooks["headers"]
        if stream:  # the server's part is what the server took to send the first token, not the client's
            assert attrs["llm.time_to_first_token"] == pytest.approx(
                attrs["llm.time_to_request_sent"] + attrs["llm.server_time_to_first_token"], abs=1e-6)
            # The first token came after the server sent it and was timed before we had it; the
            # request went after the client's delay and before the headers came back.
            assert truth["tokens"][0] - hooks["headers"] <= attrs["llm.server_time_to_first_token"] \
                <= first_seen - hooks["delayed"]
            assert attrs["llm.time_to_request_sent"] <= attrs["llm.time_to_response_headers"] \
                <= attrs["llm.time_to_first_token"]
    peers = [mock_llm.timelines[label]["peer"] for label in labels]  # the client ports the server saw
    truly_reused = [peer in peers[:index] for index, peer in enumerate(peers)]
    assert [s.attributes["llm.connection.reused"] for s in agent.llm_spans()] == truly_reused
    assert truly_reused[-1]  # two whole answers in a row share a connection
    assert agent.value("llm_time_to_request_sent_seconds_count", model="mock-gpt", operation="chat") == 4
    assert agent.value("llm_time_to_request_sent_seconds_sum", model="mock-gpt", operation="chat") >= 4 * CLIENT_DELAY


def consume(stream: Any, pause: Any, is_content: Any) -> list[float]:
    """Read ``stream`` with ``pause(n)`` seconds after its nth item; when each content item came."""
    seen = []
    for count, item in enumerate(stream, 1):
        if is_content(item):
            seen.append(time.perf_counter())
        time.sleep(pause(count))
    return seen


def sdk_content(chunk: Any) -> bool:
    return bool(chunk.choices and chunk.choices[0].delta.content)


def line_content(line: str) -> bool:
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[len("data: "):]).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content"))


READERS = {
    "keeps up": lambda n: 0.0,
    "slower than the server": lambda n: 0.05,  # 50 ms per chunk against the server's 15 ms
    "in bursts": lambda n: 0.15 if n % 8 == 0 else 0.0,  # reads 8, then looks away for 150 ms
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("path", ["sdk", "raw"])
def test_late_readers_do_not_fake_the_decode_rate(agent: Any, mock_llm: Any, reader: str, path: str) -> None:
    """What a reader does to the figures, by the agent's own rule, whatever the machine's load:
    a content chunk that was already waiting when read (the caller read late, or it came bundled
    with others in one read) is no arrival time; the decode rate and the gaps rest on consecutive
    chunks that each arrived in a read of their own, and they stay out of the histograms when more
    than one chunk in five waited (reader-bound). On a busy machine a reader that keeps up can
    still find chunks waiting (the server catching up after a delay sends several at once), so
    which chunks waited is the load's; what follows from it is the agent's."""
    label = uuid.uuid4().hex
    body = {"model": "mock-gpt", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True},
            "mock_ttft": 0.05, "mock_itl": 0.015, "mock_tokens": 40, "mock_label": label}
    pause = READERS[reader]
    called = time.perf_counter()  # the call starts after this
    if path == "sdk":
        client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
        seen = consume(client.chat.completions.create(**{k: v for k, v in body.items() if not k.startswith("mock")},
                                                      extra_body={k: v for k, v in body.items()
                                                                  if k.startswith("mock")}),
                       pause, sdk_content)
    else:
        httpx = http_library()
        with httpx.Client() as raw, raw.stream("POST", mock_llm.base_url + "/chat/completions", json=body) as response:
            seen = consume(response.iter_lines(), pause, line_content)
    timeline = mock_llm.timelines[label]
    attrs = agent.llm_span().attributes
    offsets = [offset / 1e6 for offset in decode_offsets(attrs["llm.token.offsets"])]
    assert len(offsets) == len(seen) == len(timeline["tokens"]) == 40 and attrs["gen_ai.usage.output_tokens"] == 40
    # Each chunk's time is its read's: after the server sent it and before we had it (the call
    # started after ``called`` and before the server had the request).
    slack = 2e-6  # (offsets are whole microseconds)
    for index, (sent, offset, had) in enumerate(zip(timeline["tokens"], offsets, seen, strict=True)):
        assert sent - timeline["arrived"] - slack <= offset <= had - called + slack, index
    waiting, reader_bound = attrs["llm.stream.waiting_chunks"], attrs["llm.stream.reader_bound"]
    assert reader_bound == (waiting * 5 > 40)
    rate = attrs.get("llm.token_generation_rate")
    recorded = agent.value("llm_token_generation_rate_count", model="mock-gpt", operation="chat")
    gaps = agent.value("llm_inter_token_latency_seconds_count", model="mock-gpt", operation="chat")
    gaps_sum = agent.value("llm_inter_token_latency_seconds_sum", model="mock-gpt", operation="chat")
    if reader_bound:  # what rests on a few timed chunks stays out of the histograms
        assert recorded == 0 and gaps == 0
    else:  # at most 8 of 40 waited: some two consecutive chunks were timed, and the rate is theirs
        assert rate is not None and recorded == 1 and gaps > 0
        assert rate == pytest.approx(gaps / gaps_sum, rel=1e-6)  # (one token a chunk)
    if waiting == 0:  # every chunk arrived in a read of its own: the rate is first to last
        assert rate == pytest.approx(39 / (offsets[-1] - offsets[0]), abs=1e-3)
    if rate is not None:  # its mean gap is one of consecutive chunks' gaps as the agent timed them
        steps = [b - a for a, b in itertools.pairwise(offsets) if b > a]
        assert min(steps) - slack <= 1 / rate <= max(steps) + slack
    if reader != "keeps up":
        # Read slower than it comes: the data waits for the caller, whatever the load (the caller
        # spends at least 2 s, or 0.75 s, of its own against the server's 0.65 s).
        assert reader_bound is True and attrs["llm.stream.reader_seconds"] > 0.5  # (the caller's own time)

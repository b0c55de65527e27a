"""Every covered openai call, sync and async, against the mock LLM over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import _base_client
from pydantic import BaseModel
from wrapt import FunctionWrapper

from conftest import wait_for_llm_span
from nexent_autoinstrument.conventions import decode_offsets
from nexent_autoinstrument.instrumentors.otel import OpenAIInstrumentor

MESSAGES = [{"role": "user", "content": "hello"}]


class Answer(BaseModel):
    answer: str


@pytest.fixture
def instrumented(harness: Any) -> Iterator[Any]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(telemetry=harness.telemetry)
    yield harness
    instrumentor.uninstrument()


@pytest.fixture
def client(mock_llm: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test-secret-0001", max_retries=0)


@pytest.fixture
def aclient(mock_llm: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mock_llm.base_url, api_key="sk-test-secret-0001", max_retries=0)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def check_llm_span(harness: Any, operation: str, model: str, *, stream: bool, usage_source: str | None = "api",
                   outcome: str = "completed") -> Any:
    span = harness.llm_span()
    attrs = span.attributes
    assert span.name == f"{operation} {model}"
    assert span.kind.name == "CLIENT"
    assert attrs["gen_ai.operation.name"] == operation
    assert attrs["gen_ai.request.model"] == model
    assert attrs["llm.stream"] is stream
    assert attrs["llm.stream.outcome"] == outcome
    assert attrs["server.address"] == "127.0.0.1" and isinstance(attrs["server.port"], int)
    if usage_source:
        assert attrs["llm.usage.source"] == usage_source
        assert attrs["gen_ai.usage.output_tokens"] > 0
    assert harness.value("llm_request_duration_seconds_count", model=model, operation=operation,
                         outcome=outcome) >= 1
    assert "sk-test-secret" not in repr(dict(attrs))
    return span


def test_chat_create_non_streaming(instrumented: Any, client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, temperature=0.3, max_tokens=8)
    assert isinstance(result, openai.types.chat.ChatCompletion)
    span = check_llm_span(instrumented, "chat", "mock-gpt", stream=False)
    attrs = span.attributes
    assert attrs["gen_ai.request.temperature"] == 0.3 and attrs["gen_ai.request.max_tokens"] == 8
    assert attrs["gen_ai.response.id"] == result.id and attrs["gen_ai.response.model"] == "mock-gpt"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == result.usage.completion_tokens == 8
    assert instrumented.value("llm_total_tokens_total", model="mock-gpt", operation="chat", type="output") == 8
    assert "llm.time_to_first_token" not in attrs  # no tokens arrive before the whole body


def test_chat_create_streaming_async(instrumented: Any, aclient: openai.AsyncOpenAI) -> None:
    async def main() -> list[Any]:
        stream = await aclient.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True)
        assert isinstance(stream, openai.AsyncStream)
        return [chunk async for chunk in stream]

    chunks = _run(main())
    span = check_llm_span(instrumented, "chat", "mock-gpt", stream=True, usage_source="estimated")
    assert span.attributes["llm.stream.chunks"] == len(chunks)
    assert len(decode_offsets(span.attributes["llm.token.offsets"])) == 10


def test_chat_parse_sync_and_async(instrumented: Any, client: openai.OpenAI, aclient: openai.AsyncOpenAI) -> None:
    parsed = client.chat.completions.parse(model="mock-gpt", messages=MESSAGES, response_format=Answer)
    assert isinstance(parsed.choices[0].message.parsed, Answer)
    check_llm_span(instrumented, "chat", "mock-gpt", stream=False)
    instrumented.exporter.clear()
    parsed = _run(aclient.chat.completions.parse(model="mock-gpt-mini", messages=MESSAGES, response_format=Answer))
    assert isinstance(parsed.choices[0].message.parsed, Answer)
    check_llm_span(instrumented, "chat", "mock-gpt-mini", stream=False)


def test_chat_stream_helper_span_covers_the_managed_stream(instrumented: Any, client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="mock-gpt", messages=MESSAGES, response_format=Answer) as stream:
        events = []
        for event in stream:
            if not events:
                assert not instrumented.llm_spans()  # open while the managed stream is consumed
            events.append(event)
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Answer)
    assert any(e.type == "content.done" for e in events)
    check_llm_span(instrumented, "chat", "mock-gpt", stream=True, usage_source="estimated")


def test_chat_stream_helper_async_closed_early(instrumented: Any, aclient: openai.AsyncOpenAI) -> None:
    async def main() -> None:
        async with aclient.chat.completions.stream(model="mock-gpt", messages=MESSAGES,
                                                   extra_body={"mock_tokens": 30}) as stream:
            async for event in stream:
                if event.type == "content.delta" and event.delta:
                    break

    _run(main())
    wait_for_llm_span(instrumented)  # the helper closes the HTTP response, not the SDK stream
    span = check_llm_span(instrumented, "chat", "mock-gpt", stream=True, usage_source="estimated",
                          outcome="closed_early")
    assert 1 <= len(decode_offsets(span.attributes["llm.token.offsets"])) < 30


def test_completions_create_sync_and_streaming_async(instrumented: Any, client: openai.OpenAI,
                                                     aclient: openai.AsyncOpenAI) -> None:
    result = client.completions.create(model="mock-gpt", prompt="say hi")
    assert result.choices[0].text
    check_llm_span(instrumented, "text_completion", "mock-gpt", stream=False)
    instrumented.exporter.clear()

    async def main() -> None:
        stream = await aclient.completions.create(model="mock-gpt", prompt="say hi", stream=True)
        async for _ in stream:
            pass

    _run(main())
    span = check_llm_span(instrumented, "text_completion", "mock-gpt", stream=True, usage_source="estimated")
    assert span.attributes["llm.time_to_first_token"] > 0


def test_embeddings_sync_and_async(instrumented: Any, client: openai.OpenAI, aclient: openai.AsyncOpenAI) -> None:
    result = client.embeddings.create(model="mock-embed", input=["a", "b"])
    assert len(result.data) == 2
    span = check_llm_span(instrumented, "embeddings", "mock-embed", stream=False, usage_source=None)
    assert span.attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    instrumented.exporter.clear()
    _run(aclient.embeddings.create(model="mock-embed", input="c"))
    assert instrumented.llm_span().attributes["gen_ai.operation.name"] == "embeddings"


def test_responses_create_streaming_and_not(instrumented: Any, client: openai.OpenAI,
                                            aclient: openai.AsyncOpenAI) -> None:
    result = client.responses.create(model="mock-gpt", input="hi")
    assert result.output_text
    span = check_llm_span(instrumented, "generate_content", "mock-gpt", stream=False)
    assert span.attributes["gen_ai.usage.output_tokens"] == result.usage.output_tokens
    instrumented.exporter.clear()

    async def main() -> None:
        stream = await aclient.responses.create(model="mock-gpt", input="hi", stream=True)
        async for _ in stream:
            pass

    _run(main())
    span = check_llm_span(instrumented, "generate_content", "mock-gpt", stream=True)
    assert len(decode_offsets(span.attributes["llm.token.offsets"])) == 10
    assert span.attributes["gen_ai.response.finish_reasons"] == ("completed",)


def test_responses_stream_helper_and_parse(instrumented: Any, client: openai.OpenAI,
                                           aclient: openai.AsyncOpenAI) -> None:
    with client.responses.stream(model="mock-gpt", input="hi") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text
    check_llm_span(instrumented, "generate_content", "mock-gpt", stream=True)
    instrumented.exporter.clear()
    parsed = client.responses.parse(model="mock-gpt", input="hi", text_format=Answer)
    assert isinstance(parsed.output_parsed, Answer)
    check_llm_span(instrumented, "generate_content", "mock-gpt", stream=False)
    instrumented.exporter.clear()

    async def main() -> None:
        async with aclient.responses.stream(model="mock-gpt-mini", input="hi") as stream:
            async for _ in stream:
                pass

    _run(main())
    check_llm_span(instrumented, "generate_content", "mock-gpt-mini", stream=True)


def test_with_raw_response_keeps_working_and_is_traced(instrumented: Any, client: openai.OpenAI,
                                                       aclient: openai.AsyncOpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="mock-gpt", messages=MESSAGES)
    assert raw.headers.get("x-request-id")
    completion = raw.parse()
    check_llm_span(instrumented, "chat", "mock-gpt", stream=False)
    assert instrumented.llm_span().attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    instrumented.exporter.clear()
    raw = _run(aclient.chat.completions.with_raw_response.create(model="mock-gpt", messages=MESSAGES))
    assert raw.parse().choices
    check_llm_span(instrumented, "chat", "mock-gpt", stream=False)


def test_with_streaming_response_sync_and_async(instrumented: Any, client: openai.OpenAI,
                                                aclient: openai.AsyncOpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
            model="mock-gpt", messages=MESSAGES, stream=True) as response:
        assert response.http_response.status_code == 200
        chunks = list(response.parse())
    assert chunks
    check_llm_span(instrumented, "chat", "mock-gpt", stream=True, usage_source="estimated")
    instrumented.exporter.clear()

    async def main() -> None:
        async with aclient.chat.completions.with_streaming_response.create(
                model="mock-gpt", messages=MESSAGES) as response:
            parsed = await response.parse()
            assert parsed.choices

    _run(main())
    check_llm_span(instrumented, "chat", "mock-gpt", stream=False)


def test_azure_client_is_traced(instrumented: Any, mock_llm: Any) -> None:
    root = mock_llm.base_url.removesuffix("/v1")
    azure = openai.AzureOpenAI(azure_endpoint=root, api_version="2024-06-01", api_key="sk-test-secret-0001",
                               max_retries=0)
    azure.chat.completions.create(model="mock-gpt", messages=MESSAGES)
    span = check_llm_span(instrumented, "chat", "mock-gpt", stream=False)
    assert span.attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert "/openai/deployments/mock-gpt/" in mock_llm.requests[-1][0]


def test_non_llm_endpoints_pass_through_untraced(instrumented: Any, client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models]
    assert not instrumented.llm_spans()


def test_uninstrument_restores_the_original_methods(harness: Any, client: openai.OpenAI) -> None:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(telemetry=harness.telemetry)
    assert isinstance(_base_client.SyncAPIClient.__dict__["request"], FunctionWrapper)
    instrumentor.uninstrument()
    assert not isinstance(_base_client.SyncAPIClient.__dict__["request"], FunctionWrapper)
    assert not isinstance(_base_client.AsyncAPIClient.__dict__["request"], FunctionWrapper)
    client.chat.completions.create(model="mock-gpt", messages=MESSAGES)
    assert not harness.spans()


def test_instrumentation_dependencies_state_the_tested_range() -> None:
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
    from packaging.requirements import Requirement

    (requirement,) = OpenAIInstrumentor().instrumentation_dependencies()
    assert get_dependency_conflicts([requirement]) is None  # so BaseInstrumentor instruments this openai
    specifier = Requirement(requirement).specifier
    assert [specifier.contains(v) for v in ("1.39.0", "1.40.0", "2.0.0", "3.99.0", "4.0.0")] == [
        False, True, True, True, False]

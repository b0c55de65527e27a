"""The seed's manual API: decorators and context managers on the shared engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import clean_env, run_python
from nexent_autoinstrument import MONITORING_AVAILABLE, get_monitoring_manager, monitoring_manager
from nexent_autoinstrument.conventions import decode_offsets


def test_public_names_import_and_the_manager_records(as_manual: Any, tmp_path: Path) -> None:
    assert MONITORING_AVAILABLE is True  # OpenTelemetry is installed here; hidden, it is False:
    hidden = run_python("import sys; sys.modules['opentelemetry'] = None\n"
                        "from nexent_autoinstrument import MONITORING_AVAILABLE; print(MONITORING_AVAILABLE)",
                        env=clean_env(), tmp_path=tmp_path)
    assert hidden.stdout.split() == ["False"], hidden.stderr
    with get_monitoring_manager().trace_llm_request("chat", "gpt-public") as llm:
        llm.record_token()
    span = as_manual.llm_span()
    assert span.attributes and span.attributes["gen_ai.request.model"] == "gpt-public"


def test_monitor_llm_call_injects_nothing_and_returns_the_same_value(as_manual: Any) -> None:
    calls: list[tuple[Any, ...]] = []

    @monitoring_manager.monitor_llm_call("gpt-x", "chat")
    def call_llm(messages: list[str]) -> dict[str, Any]:
        calls.append((messages,))
        return {"text": "ok", "usage": {"prompt_tokens": 3, "completion_tokens": 5}}

    assert call_llm(["hi"]) == {"text": "ok", "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    assert calls == [(["hi"],)]
    assert call_llm.__name__ == "call_llm"
    span = as_manual.llm_span()
    assert span.attributes["gen_ai.usage.input_tokens"] == 3
    assert as_manual.value("llm_total_tokens_total", model="gpt-x", operation="chat", type="output") == 5


def test_monitor_llm_call_on_a_generator_measures_tokens(as_manual: Any) -> None:
    @monitoring_manager.monitor_llm_call("gpt-x", "chat")
    def stream() -> Any:
        time.sleep(0.05)
        for word in ("a", "b", "c"):
            yield word
            time.sleep(0.01)

    assert list(stream()) == ["a", "b", "c"]
    attrs = as_manual.llm_span().attributes
    assert attrs["llm.time_to_first_token"] >= 0.04
    assert len(decode_offsets(attrs["llm.token.offsets"])) == 3 and attrs["llm.token_generation_rate"] > 0


def test_monitor_llm_call_on_async_function_and_async_generator(as_manual: Any) -> None:
    @monitoring_manager.monitor_llm_call("gpt-a", "chat")
    async def call() -> str:
        await asyncio.sleep(0.01)
        return "done"

    @monitoring_manager.monitor_llm_call("gpt-b", "chat")
    async def stream() -> Any:
        for word in ("x", "y"):
            await asyncio.sleep(0.01)
            yield word

    async def main() -> tuple[str, list[str]]:
        return await call(), [w async for w in stream()]

    assert asyncio.run(main()) == ("done", ["x", "y"])
    names = sorted(s.name for s in as_manual.llm_spans())
    assert names == ["chat gpt-a", "chat gpt-b"]


def test_llm_call_exception_is_an_llm_error(as_manual: Any) -> None:
    @monitoring_manager.monitor_llm_call("gpt-x", "chat")
    def call() -> None:
        raise TimeoutError("upstream")

    with pytest.raises(TimeoutError, match="upstream"):
        call()
    assert as_manual.value("llm_error_count_total", model="gpt-x", operation="chat", error_type="TimeoutError") == 1
    assert as_manual.llm_span().status.status_code.name == "ERROR"


def test_monitor_endpoint_all_four_kinds_and_errors_are_not_llm_errors(as_manual: Any) -> None:
    @monitoring_manager.monitor_endpoint("sync_ep")
    def sync_ep(x: int) -> int:
        return x + 1

    @monitoring_manager.monitor_endpoint("async_ep")
    async def async_ep() -> int:
        return 2

    @monitoring_manager.monitor_endpoint("gen_ep")
    def gen_ep() -> Any:
        yield 1
        yield 2

    @monitoring_manager.monitor_endpoint("agen_ep")
    async def agen_ep() -> Any:
        yield 1

    @monitoring_manager.monitor_endpoint("failing_ep")
    def failing_ep() -> None:
        raise ValueError("bad input")

    assert sync_ep(1) == 2
    assert asyncio.run(async_ep()) == 2
    gen = gen_ep()
    assert next(gen) == 1
    assert not [s for s in as_manual.spans() if s.name == "gen_ep"]  # open during the iteration
    assert list(gen) == [2]

    async def consume() -> list[int]:
        return [x async for x in agen_ep()]

    assert asyncio.run(consume()) == [1]
    with pytest.raises(ValueError):
        failing_ep()
    names = {s.name: s for s in as_manual.spans()}
    assert set(names) == {"sync_ep", "async_ep", "gen_ep", "agen_ep", "failing_ep"}
    assert names["failing_ep"].status.status_code.name == "ERROR"
    assert not [s for s in as_manual.registry.collect() if s.name == "llm_error_count" and s.samples]


def test_generator_span_is_not_current_between_items(as_manual: Any) -> None:
    from opentelemetry import trace

    @monitoring_manager.monitor_endpoint("gen")
    def gen() -> Any:
        yield trace.get_current_span().get_span_context().span_id

    iterator = gen()
    inside = next(iterator)
    assert trace.get_current_span().get_span_context().span_id != inside
    list(iterator)


def test_trace_llm_request_sync_with_handle(as_manual: Any) -> None:
    with monitoring_manager.trace_llm_request("chat", "hand-model", temperature=0.5) as handle:
        time.sleep(0.03)
        handle.record_first_token()
        for _ in range(4):
            time.sleep(0.005)
            handle.record_token()
        handle.record_usage(input_tokens=11, output_tokens=5)
        handle.set_attributes(custom="yes")
        handle.add_event("checkpoint", step=1)
    attrs = as_manual.llm_span().attributes
    assert attrs["llm.time_to_first_token"] >= 0.025
    assert attrs["gen_ai.usage.output_tokens"] == 5 and attrs["llm.usage.source"] == "api"
    assert attrs["temperature"] == 0.5 and attrs["custom"] == "yes"
    assert as_manual.value("llm_token_generation_rate_count", model="hand-model", operation="chat") == 1


def test_trace_llm_request_async_and_error(as_manual: Any) -> None:
    async def main() -> None:
        async with monitoring_manager.trace_llm_request("chat", "async-model") as handle:
            handle.record_token()
            raise ConnectionError("dropped")

    with pytest.raises(ConnectionError):
        asyncio.run(main())
    assert as_manual.value("llm_error_count_total", model="async-model", operation="chat",
                           error_type="ConnectionError") == 1
    assert as_manual.value("llm_request_duration_seconds_count", model="async-model", operation="chat",
                           outcome="error") == 1


def test_span_helpers_act_on_the_current_span(as_manual: Any) -> None:
    @monitoring_manager.monitor_endpoint("ep")
    def ep() -> None:
        monitoring_manager.add_span_event("step", {"n": 1})
        monitoring_manager.set_span_attributes(user_tier="gold")

    ep()
    span = as_manual.spans()[0]
    assert span.attributes["user_tier"] == "gold" and span.events[0].name == "step"


def test_everything_is_a_no_op_when_telemetry_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from nexent_autoinstrument import bootstrap, settings
    from nexent_autoinstrument.settings import Settings

    monkeypatch.setattr(settings, "_cached", Settings(enabled=False))
    monkeypatch.setattr(bootstrap, "_telemetry", None)

    def plain(x: int) -> int:
        return x * 2

    assert monitoring_manager.monitor_llm_call("m")(plain) is plain
    assert monitoring_manager.monitor_endpoint("e")(plain) is plain
    with monitoring_manager.trace_llm_request("chat", "m") as handle:
        handle.record_token()
        handle.record_usage(1, 2)
    monitoring_manager.add_span_event("x")
    monitoring_manager.set_span_attributes(a=1)
    assert not monitoring_manager.is_enabled


def test_an_openai_call_inside_monitor_llm_call_is_counted_once(as_manual: Any, mock_llm: Any) -> None:
    import openai

    from nexent_autoinstrument.instrumentors.otel import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(telemetry=as_manual.telemetry)
    try:
        client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)

        @monitoring_manager.monitor_llm_call("mock-gpt", "chat")
        def call_llm(messages: list[dict[str, str]]) -> Any:  # the seed's README example
            return client.chat.completions.create(model="mock-gpt", messages=messages)

        call_llm([{"role": "user", "content": "hi"}])
    finally:
        OpenAIInstrumentor().uninstrument()
    manual, sdk = sorted(as_manual.llm_spans(), key=lambda s: s.start_time)
    assert sdk.parent.span_id == manual.context.span_id  # both spans, nested
    assert as_manual.value("llm_request_duration_seconds_count", model="mock-gpt", operation="chat",
                           outcome="completed") == 1  # but one call in the metrics
    assert as_manual.value("llm_total_tokens_total", model="mock-gpt", operation="chat", type="output") == 10


# -- the manual API keeps the generator protocol -----------------------------------------------------

def sync_script(gen: Any) -> list[Any]:
    """Drive a generator through next, send, throw (twice) and close; what each step gave."""
    seen: list[Any] = []
    steps: list[tuple[str, Any]] = [("next", None), ("send", 5), ("throw", KeyError("a")), ("throw", KeyError("b")),
                                    ("send", 7), ("throw", ValueError("done")), ("next", None)]
    for name, argument in steps:
        try:
            if name == "next":
                seen.append(("value", next(gen)))
            elif name == "send":
                seen.append(("value", gen.send(argument)))
            else:
                seen.append(("value", gen.throw(argument)))
        except StopIteration as stop:
            seen.append(("stop", stop.value))
        except BaseException as exc:
            seen.append(("raise", type(exc).__name__, str(exc)))
    return seen


def echo() -> Iterator[Any]:
    received = None
    while True:
        try:
            received = yield ("got", received)
        except KeyError as exc:
            received = f"caught {exc}"
        except ValueError:
            return "handled"


def test_decorated_generator_behaves_as_undecorated_one(as_manual: Any) -> None:
    bare = sync_script(echo())
    decorated = monitoring_manager.monitor_llm_call("gpt-g")(echo)
    endpoint = monitoring_manager.monitor_endpoint("ep")(echo)
    assert sync_script(decorated()) == bare
    assert sync_script(endpoint()) == bare
    assert ("stop", "handled") in bare and bare.count(("value", ("got", "caught 'a'"))) == 1
    closing = decorated()
    next(closing)
    closing.close()
    assert [s.attributes["llm.stream.outcome"] for s in as_manual.llm_spans()] == ["completed", "closed_early"]


async def aecho() -> Any:
    received = None
    while True:
        try:
            received = yield ("got", received)
        except KeyError as exc:
            received = f"caught {exc}"
        except ValueError:
            return


async def async_script(agen: Any) -> list[Any]:
    seen: list[Any] = []
    steps: list[tuple[str, Any]] = [("next", None), ("send", 5), ("throw", KeyError("a")), ("throw", KeyError("b")),
                                    ("send", 7), ("throw", ValueError("done")), ("next", None)]
    for name, argument in steps:
        try:
            if name == "next":
                seen.append(("value", await agen.__anext__()))
            elif name == "send":
                seen.append(("value", await agen.asend(argument)))
            else:
                seen.append(("value", await agen.athrow(argument)))
        except StopAsyncIteration:
            seen.append(("stop",))
        except BaseException as exc:
            seen.append(("raise", type(exc).__name__, str(exc)))
    return seen


def test_decorated_async_generator_behaves_as_undecorated_one(as_manual: Any) -> None:
    bare = asyncio.run(async_script(aecho()))
    decorated = monitoring_manager.monitor_llm_call("gpt-g")(aecho)
    assert asyncio.run(async_script(decorated())) == bare
    assert ("stop",) in bare

    async def close_early() -> None:
        agen = decorated()
        await agen.__anext__()
        await agen.aclose()

    asyncio.run(close_early())
    assert [s.attributes["llm.stream.outcome"] for s in as_manual.llm_spans()] == ["completed", "closed_early"]


def test_stream_flag_of_each_manual_door(as_manual: Any) -> None:
    with monitoring_manager.trace_llm_request("chat", "m-request") as handle:
        handle.record_token()

    @monitoring_manager.monitor_llm_call("m-call")
    def call() -> str:
        return "x"

    @monitoring_manager.monitor_llm_call("m-gen")
    def gen() -> Iterator[str]:
        yield "x"

    call()
    list(gen())
    flags = {s.attributes["gen_ai.request.model"]: s.attributes["llm.stream"] for s in as_manual.llm_spans()}
    assert flags == {"m-request": True, "m-call": False, "m-gen": True}


def test_monitor_llm_call_injects_nothing_into_kwargs(as_manual: Any) -> None:
    @monitoring_manager.monitor_llm_call("m")
    def takes_anything(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        return args, kwargs

    assert takes_anything() == ((), {})
    assert takes_anything(1, key="v") == ((1,), {"key": "v"})

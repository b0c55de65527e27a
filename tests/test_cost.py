"""What each call cost: genai-prices' own sums are the truth, the user's file wins over them, a
model with no price gets no cost, and pricing at a call's end imports nothing."""

from __future__ import annotations

import importlib.abc
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import genai_prices
import openai
import pytest
from genai_prices import data_snapshot, types
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Harness, examples, make_harness
from nexent_autoinstrument import conventions as names
from nexent_autoinstrument.cost import MAX_LOOKUPS, SOURCE_FILE, SOURCE_TABLE, load_price_book
from nexent_autoinstrument.instrumentors.otel import OpenAIInstrumentor
from nexent_autoinstrument.tracker import Telemetry

BOOK = load_price_book(None)
SNAPSHOT = data_snapshot.get_snapshot()
NOW = 1_780_000_000.0  # a fixed instant (2026), so that dated prices are the same for both sides


def _priced_models() -> list[tuple[str, str, bool]]:
    """(our provider name, a model id, whether its price is tiered) for every model genai-prices
    has of the providers the agent knows, with a price in tokens."""
    ours = {"openai": "openai", "anthropic": "anthropic", "google": "gcp.gemini", "cohere": "cohere"}
    found = []
    for provider in SNAPSHOT.providers:
        if provider.id not in ours:
            continue
        for model in provider.models:
            price = model.prices if isinstance(model.prices, types.ModelPrice) else model.prices[-1].prices
            if getattr(price, "input_mtok", None) is None and getattr(price, "output_mtok", None) is None:
                continue
            tiered = any(isinstance(v, types.TieredPrices) for v in vars(price).values())
            found.append((ours[provider.id], model.id, tiered))
    return found


PRICED = _priced_models()
TIERED = [entry for entry in PRICED if entry[2]]


def library_price(provider_id: str, model: str, tokens_in: int, tokens_out: int, cache_read: int = 0,
                  cache_write: int = 0) -> float:
    from datetime import datetime, timezone

    usage = types.Usage(input_tokens=tokens_in, output_tokens=tokens_out, cache_read_tokens=cache_read,
                        cache_write_tokens=cache_write)
    return float(genai_prices.calc_price(usage, model, provider_id=provider_id,
                                         genai_request_timestamp=datetime.fromtimestamp(NOW, timezone.utc)).total_price)


def test_the_table_covers_linear_and_tiered_prices() -> None:
    assert len(PRICED) > 50 and TIERED, (len(PRICED), TIERED)


@st.composite
def usages(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """(input, output, cache read, cache write): the cache's part within the input."""
    tokens_in = draw(st.integers(0, 3_000_000))
    cache_read = draw(st.integers(0, tokens_in))
    return tokens_in, draw(st.integers(0, 300_000)), cache_read, draw(st.integers(0, tokens_in - cache_read))


@settings(max_examples=examples(200), deadline=None)
@given(entry=st.sampled_from(PRICED), tokens=usages())
def test_every_price_is_the_librarys_own_sum(entry: tuple[str, str, bool], tokens: tuple[int, int, int, int]) -> None:
    provider, model, _ = entry
    tokens_in, tokens_out, cache_read, cache_write = tokens
    assert BOOK is not None
    cost = BOOK.price(provider, "api.example.com", (model,), tokens_in, tokens_out, NOW, cache_read, cache_write)
    provider_id = {"gcp.gemini": "google"}.get(provider, provider)
    try:
        expected = library_price(provider_id, model, *tokens)
    except LookupError:  # (an id its own match rules do not take, such as "ft:gpt-4o")
        assert cost is None
        return
    assert cost is not None and cost.source == SOURCE_TABLE
    assert cost.usd == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert cost.model.startswith(f"{provider_id}:")


@pytest.mark.parametrize("entry", TIERED[:6], ids=lambda e: e[1])
def test_tiered_prices_change_rate_past_their_threshold(entry: tuple[str, str, bool]) -> None:
    """Above a tier's start the whole input is priced at the tier's rate: not a linear form."""
    provider, model, _ = entry
    provider_id = {"gcp.gemini": "google"}.get(provider, provider)
    assert BOOK is not None
    for tokens_in in (1_000, 150_000, 250_000, 1_500_000):
        cost = BOOK.price(provider, None, (model,), tokens_in, 1_000, NOW)
        assert cost is not None
        assert cost.usd == pytest.approx(library_price(provider_id, model, tokens_in, 1_000), rel=1e-12)


def test_the_response_model_is_priced_first_then_the_request_model() -> None:
    assert BOOK is not None
    dated = BOOK.price("openai", None, ("gpt-4o-2024-08-06", "gpt-4o-mini"), 1000, 1000, NOW)
    assert dated is not None and dated.usd == pytest.approx(library_price("openai", "gpt-4o-2024-08-06", 1000, 1000))
    fallback = BOOK.price("openai", None, ("my-fine-tune-xyz", "gpt-4o-mini"), 1000, 1000, NOW)
    assert fallback is not None and fallback.usd == pytest.approx(library_price("openai", "gpt-4o-mini", 1000, 1000))


def test_cache_counts_beyond_the_input_never_price_below_zero() -> None:
    """The input counts the cache's tokens; a server (or reader) whose counts leave them out would
    price the rest below zero, and a counter cannot go down: the cache is taken as part of it."""
    assert BOOK is not None
    odd = BOOK.price("anthropic", None, ("claude-3-5-sonnet-20241022",), 13, 100, NOW, 1500, 0)
    whole = BOOK.price("anthropic", None, ("claude-3-5-sonnet-20241022",), 1500, 100, NOW, 1500, 0)
    assert odd is not None and whole is not None and odd.usd == whole.usd > 0


def test_no_price_is_no_cost_never_a_zero() -> None:
    assert BOOK is not None
    assert BOOK.price("openai", None, ("mock-gpt",), 100, 100, NOW) is None
    assert BOOK.price("ollama", "127.0.0.1", ("llama3.2",), 100, 100, NOW) is None  # the user's own machine
    assert BOOK.price("openai", None, ("gpt-4o-mini",), None, 100, NOW) is None  # no input count
    assert BOOK.price("some.new.provider", None, ("gpt-4o-mini",), 100, 100, NOW) is None


def test_a_compatible_server_is_priced_by_its_address_else_as_openais_model() -> None:
    assert BOOK is not None
    deepseek = BOOK.price("openai_compatible", "api.deepseek.com", ("deepseek-chat",), 1000, 500, NOW)
    assert deepseek is not None and deepseek.model.startswith("deepseek:")
    assert deepseek.usd == pytest.approx(library_price("deepseek", "deepseek-chat", 1000, 500))
    proxy = BOOK.price("openai_compatible", "127.0.0.1", ("gpt-4o-mini",), 1000, 500, NOW)
    assert proxy is not None and proxy.model == "openai:gpt-4o-mini"
    assert BOOK.price("openai_compatible", "127.0.0.1", ("deepseek-chat",), 1000, 500, NOW) is None


def test_the_lookups_an_outsider_fills_are_bounded() -> None:
    book = load_price_book(None)
    assert book is not None
    for index in range(MAX_LOOKUPS + 100):
        book.price("openai", None, (f"server-made-model-{index}",), 1, 1, NOW)
    assert len(book._found) == MAX_LOOKUPS
    assert book.price("openai", None, ("gpt-4o",), 1, 1, NOW) is None  # past the bound, nothing new is looked up


class _NoImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, *args: Any) -> None:
        raise AssertionError(f"imported {name} at a call's end")


def test_pricing_a_call_imports_nothing() -> None:
    """A call's end may run inside the garbage collector: the table and the library's modules
    were loaded with the price book."""
    book = load_price_book(None)
    assert book is not None
    sys.meta_path.insert(0, _NoImports())
    try:
        for provider, model, _ in PRICED[::7] + TIERED[:3]:
            book.price(provider, None, (model, None), 12_345, 678, NOW)
    finally:
        del sys.meta_path[0]


def test_the_users_file_wins_and_each_bad_entry_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({
        "My-Llama": {"input": 0.5, "output": 1.5},
        "cached-model": {"input": 2.0, "output": 8.0, "cached_input": 0.5},
        "gpt-4o-mini": {"input": 1, "output": 2},
        "free-model": {"input": 0},
        "typo": {"inptu": 1},
        "negative": {"input": -1, "output": 1},
        "text": {"input": "cheap"},
        "list": [1, 2],
        "empty": {},
    }))
    with caplog.at_level(logging.WARNING, logger="nexent_autoinstrument"):
        book = load_price_book(str(path))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 5, warned
    for model in ("typo", "negative", "text", "list", "empty"):
        assert sum(f"{model!r}" in message and str(path) in message for message in warned) == 1, (model, warned)
    assert book is not None
    own = book.price("ollama", None, ("my-llama",), 2_000_000, 1_000_000, NOW)
    assert own == own.__class__(0.5 * 2 + 1.5, "my-llama", SOURCE_FILE)
    wins = book.price("openai", None, ("gpt-4o-mini",), 1_000_000, 1_000_000, NOW)
    assert wins is not None and wins.source == SOURCE_FILE and wins.usd == pytest.approx(3.0)
    cached = book.price("ollama", None, ("cached-model",), 1_000_000, 0, NOW, 400_000)
    assert cached is not None and cached.usd == pytest.approx(0.6 * 2.0 + 0.4 * 0.5)  # (cache reads at their price)
    plain = book.price("ollama", None, ("my-llama",), 1_000_000, 0, NOW, 400_000)
    assert plain is not None and plain.usd == pytest.approx(0.5)  # (no cached price: a cache read costs input)
    free = book.price("ollama", None, ("free-model",), 10, 10, NOW)
    assert free is not None and free.usd == 0.0  # a price of zero the user gave is a price
    assert book.price("ollama", None, ("typo",), 10, 10, NOW) is None


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", None])
def test_an_unreadable_file_warns_once_and_the_table_still_prices(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | None) -> None:
    path = tmp_path / "prices.json"
    if content is not None:
        path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="nexent_autoinstrument"):
        book = load_price_book(str(path))
    assert len(caplog.records) == 1 and "LLM_PRICES_FILE" in caplog.records[0].getMessage()
    assert book is not None and book.price("openai", None, ("gpt-4o-mini",), 1, 1, NOW) is not None


# -- a real SDK call, its span and its metric ---------------------------------------------------

@pytest.fixture
def priced(tmp_path: Path) -> Iterator[Harness]:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"mock-gpt": {"input": 2.0, "output": 8.0}}))
    harness = make_harness(prices_file=str(prices))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(telemetry=harness.telemetry)
    yield harness
    instrumentor.uninstrument()


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_costs_what_genai_prices_says_for_the_usage_the_server_sent(
        priced: Harness, mock_llm: Any, stream: bool) -> None:
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
    messages: Any = [{"role": "user", "content": "hello"}]
    kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    usages = []
    for model in ("gpt-4o-mini", "mock-gpt", "unpriced-model"):
        if stream:
            chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True, **kwargs))
            usages.append(chunks[-1].usage)
        else:
            usages.append(client.chat.completions.create(model=model, messages=messages).usage)
    spans = {s.attributes["gen_ai.request.model"]: s.attributes for s in priced.llm_spans()}
    table, own, none = spans["gpt-4o-mini"], spans["mock-gpt"], spans["unpriced-model"]
    expected = library_price("openai", "gpt-4o-mini", usages[0].prompt_tokens, usages[0].completion_tokens)
    assert table[names.LLM_COST_USD] == pytest.approx(expected, rel=1e-9)
    assert table[names.LLM_COST_SOURCE] == SOURCE_TABLE and table[names.LLM_COST_MODEL] == "openai:gpt-4o-mini"
    assert table[names.LLM_COST_MATCHED] is True and table[names.LLM_COST_ESTIMATED] is False
    own_price = (usages[1].prompt_tokens * 2 + usages[1].completion_tokens * 8) / 1e6
    assert own[names.LLM_COST_USD] == pytest.approx(own_price)
    assert own[names.LLM_COST_SOURCE] == SOURCE_FILE
    assert none[names.LLM_COST_MATCHED] is False and names.LLM_COST_USD not in none
    total = sum(priced.value("llm_cost_usd_total", model=m, provider="openai_compatible")
                for m in ("gpt-4o-mini", "mock-gpt"))
    assert total == pytest.approx(table[names.LLM_COST_USD] + own[names.LLM_COST_USD], rel=1e-12)
    assert priced.value("llm_cost_usd_total", model="unpriced-model", provider="openai_compatible") == 0


@pytest.mark.parametrize("stream", [False, True])
def test_tokens_read_from_the_prompt_cache_are_priced_as_cache_reads(
        priced: Harness, mock_llm: Any, stream: bool) -> None:
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0)
    messages: Any = [{"role": "user", "content": "a long system prompt " * 40}]
    extra = {"extra_body": {"mock_cached_tokens": 128}}
    if stream:
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                                     stream_options={"include_usage": True}, **extra))
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(model="gpt-4o-mini", messages=messages, **extra).usage
    assert usage.prompt_tokens_details.cached_tokens == 128 < usage.prompt_tokens
    attrs = priced.llm_span().attributes
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 128
    expected = library_price("openai", "gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens, 128)
    assert attrs[names.LLM_COST_USD] == pytest.approx(expected, rel=1e-9)
    assert expected < library_price("openai", "gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens)


def test_estimated_token_counts_give_an_estimated_cost_and_no_input_count_none() -> None:
    """The output estimated (a stream that ended before its usage): the cost is marked estimated.
    Without the input's count there is no cost at all: half a price would pass for a whole one.
    The response's model is priced before the request's."""
    from opentelemetry.sdk.trace import TracerProvider

    from nexent_autoinstrument.report import emit
    from nexent_autoinstrument.settings import Settings
    from test_result import RESULT

    tracer = TracerProvider().get_tracer("t")
    estimated = RESULT._replace(model="gpt-4o-mini", response_model=None, input_tokens=1200,
                                    output_tokens=340, cache_read_tokens=1000, usage_source="estimated")
    no_input = estimated._replace(input_tokens=None)
    answered = estimated._replace(response_model="gpt-4o-2024-08-06", usage_source="api")
    spans = []
    for result in (estimated, no_input, answered):
        span = tracer.start_span("call")
        emit(result, span, span, int(NOW * 1e9), False, None, None, Settings(), BOOK)
        spans.append(span.attributes)
    assert spans[0][names.LLM_COST_ESTIMATED] is True
    assert spans[0][names.LLM_COST_USD] == pytest.approx(library_price("openai", "gpt-4o-mini", 1200, 340, 1000),
                                                         rel=1e-9)
    assert not any(key.startswith("llm.cost.") for key in spans[1])
    # The model that answered is the one priced (the request's only when that one has no price).
    assert spans[2][names.LLM_COST_MODEL] == "openai:gpt-4o" and spans[2][names.LLM_COST_ESTIMATED] is False
    assert spans[2][names.LLM_COST_USD] == pytest.approx(
        library_price("openai", "gpt-4o-2024-08-06", 1200, 340, 1000), rel=1e-9)


def test_without_any_price_book_a_span_has_no_cost_attributes(mock_llm: Any) -> None:
    harness = make_harness()  # its spans, with a telemetry that has no prices: genai-prices not installed, no file
    telemetry = Telemetry(harness.telemetry.settings, harness.provider.get_tracer("tests"), harness.telemetry.metrics,
                          prices=None)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(telemetry=telemetry)
    try:
        openai.OpenAI(base_url=mock_llm.base_url, api_key="sk-test", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    finally:
        instrumentor.uninstrument()
    assert not any(key.startswith("llm.cost.") for key in harness.llm_span().attributes)



def test_a_broken_genai_prices_leaves_the_users_prices_and_the_instruments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A release of genai-prices whose table fails to load is left out, counted as an internal
    error; the user's file still prices, and nothing is raised into the application."""
    from nexent_autoinstrument.guard import internal_errors

    def broken(self: Any, *args: Any) -> Any:
        raise TypeError("a table this release cannot read")

    monkeypatch.setattr(data_snapshot.DataSnapshot, "find_provider_model", broken)
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-llama": {"input": 1, "output": 2}}))
    before = internal_errors["cost.load"]
    book = load_price_book(str(path))
    assert internal_errors["cost.load"] == before + 1
    assert book is not None and book.price("ollama", None, ("gpt-4o-mini",), 10, 10, NOW) is None
    own = book.price("ollama", None, ("my-llama",), 1_000_000, 0, NOW)
    assert own is not None and own.usd == pytest.approx(1.0)
    assert load_price_book(None) is None


PRICED_APP = """
import json, os, sys
import httpx  # (an app of httpx alone: genai-prices brings httpx2, whose hook must not stall the start)
import openai
client = openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-test", max_retries=0)
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
print("genai_prices", "genai_prices" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("cost", ["", "false"])
def test_pricing_as_users_run_it_and_turned_off(mock_llm: Any, tmp_path: Path, cost: str) -> None:
    """Auto-load, console traces: the span has its cost, or with LLM_COST=false none, and
    genai-prices is not even imported."""
    from conftest import clean_env, run_python

    env = clean_env(ENABLE_TELEMETRY="true", MOCK_URL=mock_llm.base_url, OTEL_TRACES_EXPORTER="console",
                    **({"LLM_COST": cost} if cost else {}))
    result = run_python(PRICED_APP, env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    [span] = [json.loads(line) for line in result.stdout.splitlines() if '"gen_ai.operation.name"' in line]
    if cost == "false":
        assert "genai_prices False" in result.stderr
        assert not any(key.startswith("llm.cost.") for key in span["attributes"])
    else:
        assert "genai_prices True" in result.stderr
        attributes = span["attributes"]
        assert attributes["llm.cost.usd"] == pytest.approx(library_price(
            "openai", "gpt-4o-mini", attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]),
            rel=1e-6)


class _Priced:
    """A model of the table whose price is ``price`` at any time (as genai-prices' ModelInfo)."""

    def __init__(self, price: Any) -> None:
        self.price = price

    def get_prices(self, timestamp: Any) -> Any:
        return self.price


def test_a_linear_price_is_read_once_and_then_costs_a_few_multiplications() -> None:
    """The form is the library's own sum (the hypothesis test above checks the values); what is
    pinned here is that it is used: a wrong form falls back to the library's sum, right but slow."""
    book = load_price_book(None)
    assert book is not None
    book._linear.clear()
    for provider, model in (("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5")):
        assert book.price(provider, None, (model,), 10_000, 100, NOW, 4_000, 1_000) is not None
    forms = [form for form, _ in book._linear.values()]
    assert len(forms) == 2 and all(form is not None for form in forms), forms
    assert all(form.per_cache_read < 0 for form in forms)  # (a cache read costs less than fresh input)
    assert forms[1].per_cache_write > 0  # (and a cache write more)


def test_a_tier_beyond_every_probe_is_still_priced_by_the_library() -> None:
    """A tier whose start lies past the counts the linear form is checked at would pass for
    linear: a tiered price is never read as a form."""
    from decimal import Decimal

    book = load_price_book(None)
    assert book is not None
    tiered = types.ModelPrice(input_mtok=types.TieredPrices(base=Decimal("1"), tiers=[
        types.Tier(start=20_000_000, price=Decimal("3"))]), output_mtok=Decimal("4"))
    priced = _Priced(tiered)
    below = book._table_price(priced, (1_000_000, 0, 0, 0), NOW)
    above = book._table_price(priced, (30_000_000, 0, 0, 0), NOW)
    assert (below, above) == (pytest.approx(1.0), pytest.approx(90.0))

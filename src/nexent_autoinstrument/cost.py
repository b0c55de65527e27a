"""What a finished call cost in USD: from ``genai-prices`` (pydantic's offline table of provider
prices), or from the user's own prices in the file ``LLM_PRICES_FILE`` names, which win.

Made once, when the instruments are (``Telemetry.prepare``): loading the table imports
genai-prices and its data, which must never happen at a call's end (that may run inside the
garbage collector). A model with no price gets no cost, never a zero.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .guard import report_internal_error

logger = logging.getLogger("nexent_autoinstrument")

SOURCE_TABLE = "genai-prices"
SOURCE_FILE = "LLM_PRICES_FILE"

#: ``gen_ai.provider.name`` -> the provider's id in genai-prices. The providers absent here
#: (``ollama``: a model on the user's own machine) are priced only by the user's file;
#: ``openai_compatible`` servers by their address when genai-prices knows it (DeepSeek, Groq, ...),
#: else as OpenAI's model of that name (a proxy in front of OpenAI), else not at all.
PROVIDER_IDS = {"openai": "openai", "openai_compatible": "openai", "azure.ai.openai": "azure",
                "anthropic": "anthropic", "gcp.gemini": "google", "gcp.vertex_ai": "google", "cohere": "cohere",
                "aws.bedrock": "aws"}

#: How many (provider, server, model) lookups are remembered: the model names come from outsiders
#: (a server's answer). Past it, a new model is not priced.
MAX_LOOKUPS = 512

_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Cost:
    """A call's price: ``usd``, the priced ``model`` (genai-prices' ``provider:model`` id, or the
    file's key) and the ``source`` of the price (``SOURCE_TABLE`` or ``SOURCE_FILE``)."""

    usd: float
    model: str
    source: str


@dataclass(frozen=True, slots=True)
class _Linear:
    """A price in USD: ``per_call``, plus ``per_input`` for each input token (the cache's included),
    plus what a token read from (``per_cache_read``) or written to (``per_cache_write``) the
    prompt cache costs more than a plain input token (less: negative), plus ``per_output``."""

    per_call: float
    per_input: float
    per_output: float
    per_cache_read: float = 0.0
    per_cache_write: float = 0.0

    def of(self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0) -> float:
        return (self.per_call + self.per_input * input_tokens + self.per_output * output_tokens
                + self.per_cache_read * cache_read + self.per_cache_write * cache_write)


class PriceBook:
    """Prices calls. ``price`` is called at each call's end on any thread: it takes no lock,
    imports nothing and logs nothing (everything that could was done by ``load_price_book``)."""

    def __init__(self, genai_prices: Any, user_prices: dict[str, _Linear]) -> None:
        self._library = genai_prices
        self._snapshot = genai_prices.data_snapshot.get_snapshot() if genai_prices is not None else None
        self._user = user_prices
        #: (provider, server, model) -> (price label, genai-prices' ModelInfo) or None (no price).
        self._found: dict[tuple[str, str | None, str], tuple[str, Any] | None] = {}
        #: id(ModelPrice) -> (its linear form, or None where only the library's own sum is exact; the ModelPrice).
        self._linear: dict[int, tuple[_Linear | None, Any]] = {}
        self.version = getattr(genai_prices, "__version__", None)

    def price(self, provider: str, server: str | None, models: tuple[str | None, ...], input_tokens: int | None,
              output_tokens: int | None, started: float, cache_read: int | None = None,
              cache_write: int | None = None) -> Cost | None:
        """The cost of a call with these token counts, priced as the first of ``models`` (the
        response's model, then the request's) that has a price; None without a price or without
        the input's count (an output without any is none: embeddings). ``cache_read`` and
        ``cache_write``: the input tokens read from and written to the prompt cache. ``server``:
        the host the call went to; ``started``: its start, seconds since the epoch (prices change
        over time)."""
        if input_tokens is None:
            return None
        cached = (cache_read or 0) + (cache_write or 0)
        # (The cache is part of the input: counts that say otherwise would price the rest below zero.)
        tokens = (max(input_tokens, cached), output_tokens or 0, cache_read or 0, cache_write or 0)
        for model in models:
            if not model:
                continue
            own = self._user.get(model.lower())
            if own is not None:
                return Cost(own.of(*tokens), model, SOURCE_FILE)
            found = self._find(provider, server, model)
            if found is not None:
                label, info = found
                return Cost(self._table_price(info, tokens, started), label, SOURCE_TABLE)
        return None

    def _find(self, provider: str, server: str | None, model: str) -> tuple[str, Any] | None:
        key = (provider, server if provider == "openai_compatible" else None, model)
        try:
            return self._found[key]
        except KeyError:
            pass
        if self._snapshot is None or len(self._found) >= MAX_LOOKUPS:
            return None
        found = None
        provider_id = PROVIDER_IDS.get(provider)
        attempts: list[tuple[str | None, str | None]] = []
        if provider == "openai_compatible" and server:
            attempts.append((None, f"https://{server}"))
        if provider_id is not None:
            attempts.append((provider_id, None))
        for by_id, by_url in attempts:
            try:
                found_provider, info = self._snapshot.find_provider_model(model, None, by_id, by_url)
            except LookupError:
                continue
            found = (f"{found_provider.id}:{info.id}", info)
            break
        self._found[key] = found
        return found

    def _table_price(self, info: Any, tokens: tuple[int, int, int, int], started: float) -> float:
        model_price = info.get_prices(datetime.fromtimestamp(started, timezone.utc))
        known = self._linear.get(id(model_price))
        if known is None:
            known = self._linear[id(model_price)] = (self._linear_form(model_price), model_price)
        linear = known[0]
        if linear is not None:
            return linear.of(*tokens)
        return float(model_price.calc_price(self._usage(*tokens))["total_price"])

    def _usage(self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0) -> Any:
        return self._library.Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                                   cache_read_tokens=cache_read, cache_write_tokens=cache_write)

    def _linear_form(self, model_price: Any) -> _Linear | None:
        """The price as a linear form, read off genai-prices' own sums and checked against them at
        other counts; None for tiered prices (the rate depends on the input's size). The library's
        sum costs tens of microseconds per call, the form a few multiplications."""
        if any(isinstance(value, self._library.types.TieredPrices) for value in vars(model_price).values()):
            return None

        def total(*tokens: int) -> Any:
            return model_price.calc_price(self._usage(*tokens))["total_price"]

        base, inputs = total(0, 0), total(_MILLION, 0)
        per_input, per_output = (inputs - base) / _MILLION, (total(0, _MILLION) - base) / _MILLION
        per_read = (total(_MILLION, 0, _MILLION) - inputs) / _MILLION
        per_write = (total(_MILLION, 0, 0, _MILLION) - inputs) / _MILLION
        for tokens in ((1_234, 5_678, 0, 0), (987_654, 3, 500_000, 12_345), (40_000, 700, 0, 39_000)):
            tokens_in, tokens_out, read, written = tokens
            if total(*tokens) != (base + per_input * tokens_in + per_output * tokens_out + per_read * read
                                  + per_write * written):
                return None
        return _Linear(float(base), float(per_input), float(per_output), float(per_read), float(per_write))

    def warm(self) -> None:
        """Load what the first priced call would: the table's data and the library's modules."""
        if self._snapshot is not None:
            self.price("openai", None, ("gpt-4o-mini",), 1, 1, 0.0)
            self._found.clear()


def _user_prices(path: str) -> dict[str, _Linear]:
    """The prices in ``path`` (JSON: model name -> ``{"input": USD, "output": USD, "cached_input":
    USD}`` per million tokens; a cache read costs ``input`` without ``cached_input``), one warning
    per entry that is not valid, and one if the file cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            entries = json.load(file)
    except (OSError, ValueError) as exc:
        logger.warning("nexent-autoinstrument: LLM_PRICES_FILE=%s cannot be read (%s); no prices of your own",
                       path, exc)
        return {}
    if not isinstance(entries, dict):
        logger.warning("nexent-autoinstrument: LLM_PRICES_FILE=%s is not a JSON object of model names; "
                       "no prices of your own", path)
        return {}
    prices = {}
    for model, entry in entries.items():
        why = _invalid_entry(entry)
        if why:
            logger.warning("nexent-autoinstrument: LLM_PRICES_FILE=%s: ignoring the price of %r: %s", path, model, why)
            continue
        plain = entry.get("input", 0)
        prices[model.lower()] = _Linear(0.0, plain / _MILLION, entry.get("output", 0) / _MILLION,
                                        (entry.get("cached_input", plain) - plain) / _MILLION)
    return prices


def _invalid_entry(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return 'expected {"input": USD, "output": USD, "cached_input": USD}, per million tokens'
    unknown = sorted(set(entry) - {"input", "output", "cached_input"})
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))} (known: 'input', 'output', 'cached_input')"
    if not entry:
        return "no price given"
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return f"{key!r} must be a number of USD per million tokens, at least 0, not {value!r}"
    return None


def load_price_book(prices_file: str | None) -> PriceBook | None:
    """The price book: genai-prices' table (if installed) and the user's file (if named); None
    when there is neither."""
    genai_prices: Any
    try:
        import genai_prices
    except ImportError:
        genai_prices = None
        logger.info("nexent-autoinstrument: genai-prices is not installed; calls are priced only by LLM_PRICES_FILE")
    except Exception as exc:  # (installed but broken, e.g. beside a pydantic it does not support)
        genai_prices = None
        report_internal_error("cost.load", exc)
    user = _user_prices(prices_file) if prices_file else {}
    if genai_prices is not None:
        try:
            book = PriceBook(genai_prices, user)
            book.warm()
            return book
        except Exception as exc:  # (a release of genai-prices we do not know: its table is left out)
            report_internal_error("cost.load", exc)
    return PriceBook(None, user) if user else None

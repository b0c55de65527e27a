"""Reading a /metrics page back: histogram quantiles and per-model summaries (demo and doctor)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .. import conventions as names


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative ``(upper_bound, count)`` pairs."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class ModelSummary:
    """What /metrics says about one model."""

    buckets: dict[str, dict[float, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    requests: float = 0.0
    errors: float = 0.0
    slow: float = 0.0
    tokens: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    #: USD (``llm_cost_usd_total``); None without a priced call.
    cost: float | None = None

    def quantile(self, metric: str, q: float) -> float | None:
        return bucket_quantile(q, list(self.buckets[metric].items()))

    def mean(self, metric: str) -> float | None:
        return self.sums[metric] / self.counts[metric] if self.counts[metric] else None


def summarize(exposition_text: str) -> dict[str, ModelSummary]:
    """Per-model summaries of the LLM metrics in a Prometheus text exposition."""
    models: dict[str, ModelSummary] = defaultdict(ModelSummary)
    histograms = {names.TTFT, names.TOKEN_RATE, names.REQUEST_DURATION, names.INTER_TOKEN_LATENCY}
    for family in text_string_to_metric_families(exposition_text):
        for sample in family.samples:
            labels: dict[str, Any] = sample.labels
            model = labels.get("model")
            if model is None:
                continue
            summary = models[model]
            if family.name in histograms:
                if sample.name.endswith("_bucket"):
                    summary.buckets[family.name][float(labels["le"])] += sample.value
                elif sample.name.endswith("_sum"):
                    summary.sums[family.name] += sample.value
                elif sample.name.endswith("_count"):
                    summary.counts[family.name] += sample.value
                    if family.name == names.REQUEST_DURATION:
                        summary.requests += sample.value
            elif sample.name == names.ERROR_COUNT + "_total":
                summary.errors += sample.value
            elif sample.name == names.SLOW_REQUESTS + "_total":
                summary.slow += sample.value
            elif sample.name == names.TOTAL_TOKENS + "_total":
                summary.tokens[labels.get("type", "?")] += sample.value
            elif sample.name == names.COST + "_total":
                summary.cost = (summary.cost or 0.0) + sample.value
    return dict(models)

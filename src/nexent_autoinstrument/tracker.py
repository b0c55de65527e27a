"""The one engine behind every LLM call: clock, TTFT, token offsets, gaps, rate, usage, outcome.

Adapters (openai chunks, SSE events, the manual API) feed a ``CallTracker`` with neutral
facts through its typed methods. Per content chunk the tracker only reads the clock and
updates plain local state; everything else (span attributes, events, metrics, the slow-call
warning) happens once, in ``finish``. When and how a call ends is decided in ``lifecycle``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import mul, sub
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from . import conventions as names
from . import guest, report
from .adapters import tokens as token_estimate
from .guard import report_internal_error
from .report import CallResult
from .settings import Settings
from .timing import UNTIMED, WAITED_READ_SECONDS, ReadTiming

if TYPE_CHECKING:
    from .cost import PriceBook
    from .metrics import HTTPMetrics, LLMMetrics

clock = time.perf_counter
_MAX_STALL_EVENTS = 32
#: How long a call waits for another thread that is making the metric instruments.
_PREPARE_WAIT_SECONDS = 30.0


class Telemetry:
    """What every tracker shares: the settings, a tracer, the metric instruments and the prices. The
    instruments (and prices) may come from ``make_metrics``, made by ``prepare`` when the first call starts
    (prometheus_client is then imported by the application's first call, not at start-up, and
    never by the end of a call, which may run on any thread)."""

    def __init__(self, settings: Settings, tracer: trace.Tracer, metrics: LLMMetrics | None = None,
                 http_metrics: HTTPMetrics | None = None,
                 make_metrics: Callable[[], tuple[LLMMetrics, HTTPMetrics, PriceBook | None]] | None = None,
                 prices: PriceBook | None = None) -> None:
        self.settings = settings
        self.tracer = tracer
        self._metrics = metrics
        self._http_metrics = http_metrics
        self._make_metrics = make_metrics
        self._prices = prices
        #: Popped by the one caller that makes the instruments; the others wait for it. (No lock:
        #: one made at start-up is a native lock under gevent, which would block every greenlet.)
        self._claim = [True]
        #: The thread (or greenlet) making them: what it imports meanwhile (genai-prices imports
        #: httpx2, which our import hook patches) calls back in here, and must not wait for itself.
        self._maker: int | None = None

    def prepare(self) -> None:
        """Make the instruments, once: before the first call or HTTP exchange starts."""
        if self._make_metrics is None:
            return
        try:
            self._claim.pop()
        except IndexError:  # another thread or greenlet makes them right now, or this one does
            if self._maker != threading.get_ident():
                guest.wait_until(lambda: self._make_metrics is None, _PREPARE_WAIT_SECONDS)
            return
        self._maker = threading.get_ident()
        try:
            self._metrics, self._http_metrics, self._prices = self._make_metrics()
        finally:
            self._make_metrics = None

    @property
    def metrics(self) -> LLMMetrics:
        """The LLM metrics of the contract."""
        if self._metrics is None:
            self.prepare()
        assert self._metrics is not None
        return self._metrics

    @property
    def prices(self) -> PriceBook | None:
        """What calls cost, if any price is known (made with the instruments)."""
        return self._prices

    @property
    def http_metrics(self) -> HTTPMetrics | None:
        """``http.client.request.duration``, if recorded."""
        return self._http_metrics


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


class CallTracker:
    """The measurements of one LLM call, from its start to exactly one ``finish``.

    Create it through ``lifecycle.begin`` (which also registers it as unfinished) and end it
    through ``lifecycle.end``; adapters only call the recording methods."""

    __slots__ = (
        "_annotations",
        "_arrival_at",
        "_finish_reasons",
        "_finish_token",
        "_gap_count",
        "_gap_sum",
        "_last_content",
        "_max_gap",
        "_notable_gap",
        "_previous",
        "_read_at",
        "_run_first",
        "_run_first_index",
        "_stall_after",
        "_stalls",
        "_start_ns",
        "_telemetry",
        "_times",
        "_times_cap",
        "_timing",
        "_waiting",
        "_writer",
        "cache_read_tokens",
        "cache_write_tokens",
        "chunks",
        "content_chunks",
        "error_type",
        "extra_tokens",
        "first_content",
        "first_content_timed",
        "input_tokens",
        "model",
        "operation",
        "output_tokens",
        "progress",
        "provider",
        "response_id",
        "response_model",
        "server",
        "span",
        "started",
        "stream",
        "texts",
        "waiting_chunks",
    )

    def __init__(self, telemetry: Telemetry, operation: str, model: str, provider: str, stream: bool,
                 attributes: dict[str, Any] | None, usage_expected: bool = False, adopt: Any = None,
                 progress: Any = None) -> None:
        settings = telemetry.settings
        self._telemetry = telemetry
        self.operation = operation
        self.model = model
        self.provider = provider
        self.stream = stream
        attrs: dict[str, Any] = {names.GEN_AI_PROVIDER: provider, names.GEN_AI_OPERATION: operation,
                                 names.GEN_AI_REQUEST_MODEL: model, names.LLM_STREAM: stream}
        if attributes:
            attrs.update((k, v) for k, v in attributes.items() if v is not None)
        address, port = attrs.get(names.SERVER_ADDRESS), attrs.get(names.SERVER_PORT)
        self.server: tuple[str, int] | None = (address, port) if address and port else None
        if adopt is None:
            self._start_ns = time.time_ns()
            self.span = telemetry.tracer.start_span(f"{operation} {model}", kind=SpanKind.CLIENT,
                                                    attributes=attrs, start_time=self._start_ns)
            self.started = clock()
        else:  # the span an SDK started for this call (see adoption.py): the call started with it
            self.span = adopt.span
            self._start_ns = adopt.start_ns
            self.started = clock() - max(0, time.time_ns() - adopt.start_ns) / 1e9
            adopt.set_attributes(attrs)
        #: Where the span's attributes and its end go: the span, or the adoption of an SDK's span.
        self._writer: Any = self.span if adopt is None else adopt
        self.first_content: float | None = None
        self.content_chunks = 0
        self.chunks = 0
        #: Tokens reported beyond one per content chunk (the manual API may report several at once).
        self.extra_tokens = 0
        self.first_content_timed = False
        # Gaps between consecutive content chunks whose arrivals were timed (see ``content``): the
        # decode rate comes from them. They are counted per run of consecutive timed arrivals,
        # when the run ends (a chunk that waited, or the end of the call), not per chunk: a run's
        # gaps add up to its last arrival (``_previous``, None between runs) minus its first.
        self._previous: float | None = None
        self._run_first = 0.0
        self._run_first_index = 0
        #: When the last chunk that waited was read: it arrived then or before, so the gap from
        #: there to the next arrival is a lower bound of the real one (enough to prove a stall).
        self._read_at: float | None = None
        self._gap_sum = 0.0
        self._gap_count = 0
        #: When the latest content chunk arrived (clock), if one did.
        self._last_content = 0.0
        self._times: list[float] = []
        self._times_cap = settings.token_timestamps_max
        #: Indexes (in ``_times``) of content chunks that were waiting when read.
        self._waiting: list[int] = []
        self.waiting_chunks = 0
        self._max_gap = 0.0
        self._stall_after = settings.stall_threshold_seconds
        #: A gap longer than this is the longest yet or a stall (one comparison per chunk).
        self._notable_gap = 0.0
        self._stalls: list[tuple[int, float, float]] = []
        #: How the HTTP layer sees the body's reads (``timed_by``), and the return time of the read
        #: whose arrival a content chunk took (the chunks after it in that read were waiting for it).
        self._timing = UNTIMED
        self._arrival_at = -1.0
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        #: Of the input tokens: read from the provider's prompt cache, and written to it.
        self.cache_read_tokens: int | None = None
        self.cache_write_tokens: int | None = None
        self.response_model: str | None = None
        self.response_id: str | None = None
        self._finish_reasons: dict[int, str] = {}
        self.error_type: str | None = None
        #: Attributes reported during the call (response headers, retries), set with the end's.
        self._annotations: dict[str, Any] | None = None
        #: Popped by the one ``finish`` that runs; ``list.pop`` is atomic, so two threads racing
        #: to end a call (the reaper and the user's own) cannot both emit.
        self._finish_token = [True]
        #: Where the call is in its lifecycle (``lifecycle.Progress``: the lifecycle's own state).
        self.progress = progress
        #: Generated text pieces, kept only for content capture or a tiktoken estimate.
        keep_text = settings.capture_content or (stream and not usage_expected and token_estimate.ready())
        self.texts: list[str] | None = [] if keep_text else None

    @property
    def finished(self) -> bool:
        """True once ``finish`` has run (or the call was disowned)."""
        return not self._finish_token

    def disown(self) -> None:
        """This process does not own the call (it is a fork child's copy of its parent's call):
        it will never be emitted here."""
        self._finish_token.clear()

    def timed_by(self, timing: ReadTiming) -> None:
        """The HTTP layer times this call's reads (of its latest attempt) in ``timing``."""
        self._timing = timing

    def last_activity(self) -> float | None:
        """When the caller last got something of the call: the latest read of its body, or the
        latest content chunk (clock); None if nothing came yet."""
        last = max(self._timing.read_time, self._last_content)
        return last or None

    # -- the hot path: called once per chunk --------------------------------------------------

    def chunk(self) -> None:
        """Any chunk or event of a stream arrived (content or not)."""
        self.chunks += 1

    def content(self, text: str | None = None, tokens: int = 1, chunks: int = 0) -> None:
        """A chunk carrying content (text, tool arguments, refusal, reasoning) arrived now, or,
        when the HTTP layer times the reads, when the read that brought it returned. ``chunks``:
        also counted as that many chunks (a plain delta of the byte path: one call, not two)."""
        if chunks:
            self.chunks += chunks
        timing = self._timing
        fresh: bool | None
        if timing.timed:
            now, asked = timing.read_time, timing.asked
            waited = now - asked
            # The read waited for its data, which then arrived just now, unless an earlier chunk of
            # the same read took that arrival. A short read after a long absence found its data
            # waiting even if the process was not scheduled for a moment, so a busy machine does
            # not turn data that waited into an arrival: the doubt costs a data point, never a
            # wrong arrival time.
            fresh = waited > WAITED_READ_SECONDS and waited * 8 > asked - timing.previous_read_time \
                and now != self._arrival_at
        else:  # nobody times the reads: the chunk arrived now
            now = clock()
            fresh = None
        self._last_content = now
        index = self.content_chunks
        self.content_chunks = index + 1
        if tokens != 1:
            self.extra_tokens += tokens - 1
        if index < self._times_cap:
            self._times.append(now)
        if text and self.texts is not None:
            self.texts.append(text)
        if fresh is False:
            # Already there when read: it arrived earlier, at an unknown time, so it is no arrival
            # time and no gap (the caller read late, or it came bundled). (Inline: this runs for
            # every chunk of a read that found its data waiting.)
            if self.first_content is None:
                self.first_content = now
            self.waiting_chunks += 1
            if index < self._times_cap:
                self._waiting.append(index)
            if self._previous is not None:
                self._end_run(index - 1)
            self._read_at = now
            return
        if fresh:
            self._arrival_at = now
        previous = self._previous
        if previous is None:
            self._run_starts(index, now)
        elif now - previous > self._notable_gap:
            self._long_gap(index, now - previous, now)
        self._previous = now

    def contents(self, count: int) -> None:
        """``count`` content chunks (one token each, no text kept) came in one read: what
        ``content(None, 1, 1)`` for the first, which took the read's arrival, then
        ``waited_contents`` for the others record, in one step (a read of several events)."""
        timing = self._timing
        if count < 2 or not timing.timed:
            if count > 0:
                self.content(None, 1, 1)
                if count > 1:
                    self.waited_contents(count - 1)
            return
        now, asked = timing.read_time, timing.asked
        waited = now - asked
        fresh = waited > WAITED_READ_SECONDS and waited * 8 > asked - timing.previous_read_time \
            and now != self._arrival_at
        index = self.content_chunks
        self.chunks += count
        self.content_chunks = index + count
        self._last_content = now
        room = min(count, self._times_cap - index)
        if room > 0:
            self._times.extend([now] * room)
            self._waiting.extend(range(index + 1 if fresh else index, index + room))
        if fresh:
            self._arrival_at = now
            self.waiting_chunks += count - 1
            previous = self._previous
            if previous is None:
                self._run_starts(index, now)  # (a run of this one arrival: no gap to count)
            else:  # (the run ends with this arrival)
                if now - previous > self._notable_gap:
                    self._long_gap(index, now - previous, now)
                self._gap_sum += now - self._run_first
                self._gap_count += index - self._run_first_index
                self._previous = None
        else:
            if self.first_content is None:
                self.first_content = now
            self.waiting_chunks += count
            if self._previous is not None:
                self._end_run(index - 1)
        self._read_at = now

    def waited_contents(self, count: int) -> None:
        """``count`` more content chunks (one token each, no text kept) that came in the read that
        brought the content chunk before them, so were waiting for it: what ``content(None, 1, 1)``
        records for each, in one call (a read that brings many events costs less per event)."""
        timing = self._timing
        if count <= 0:
            return
        if not timing.timed:  # (each then arrives at its own clock reading)
            for _ in range(count):
                self.content(None, 1, 1)
            return
        now = timing.read_time
        index = self.content_chunks
        self.chunks += count
        self.content_chunks = index + count
        self.waiting_chunks += count
        self._last_content = now
        room = min(count, self._times_cap - index)
        if room > 0:
            self._times.extend([now] * room)
            self._waiting.extend(range(index, index + room))
        self._end_run(index - 1)
        self._read_at = now

    def _run_starts(self, index: int, now: float) -> None:
        """Chunk ``index`` arrived just now, the first of a run of timed arrivals."""
        if self.first_content is None:
            self.first_content = now
            self.first_content_timed = True
        elif self._read_at is not None:  # after a chunk that waited: the real gap is at least this
            self._long_gap(index, now - self._read_at, now)
        self._run_first, self._run_first_index = now, index

    def _end_run(self, last_index: int) -> None:
        """The run of timed arrivals (if any) ended with chunk ``last_index``: count its gaps."""
        if self._previous is not None:
            self._gap_sum += self._previous - self._run_first
            self._gap_count += last_index - self._run_first_index
            self._previous = None

    def _long_gap(self, index: int, gap: float, now: float) -> None:
        """A gap before chunk ``index`` that is the longest yet or a stall. After a chunk that
        waited, ``gap`` is a lower bound (from when that chunk was read): no data point for the
        decode rate, but enough for the maximum and for a stall, which a bundle must not hide."""
        if gap > self._max_gap:
            self._max_gap = gap
            self._notable_gap = min(gap, self._stall_after)
        if gap > self._stall_after and len(self._stalls) < _MAX_STALL_EVENTS:
            self._stalls.append((index, gap, now))

    # -- facts reported by adapters -----------------------------------------------------------

    def usage(self, input_tokens: int | None, output_tokens: int | None, cache_read: int | None = None,
              cache_write: int | None = None) -> None:
        """Token usage as reported by the API; ``input_tokens`` counts all the input, the cache's
        part (``cache_read``, ``cache_write``) included."""
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        if cache_read is not None:
            self.cache_read_tokens = cache_read
        if cache_write is not None:
            self.cache_write_tokens = cache_write

    def response(self, model: str | None = None, response_id: str | None = None) -> None:
        """Response metadata; either argument may be None."""
        if model and isinstance(model, str):
            self.response_model = model
        if response_id and isinstance(response_id, str):
            self.response_id = response_id

    def finish_reason(self, reason: str, index: int | None = 0) -> None:
        """Why choice ``index`` stopped (one entry per choice, as the GenAI conventions say)."""
        if isinstance(reason, str) and reason:
            self._finish_reasons[index if isinstance(index, int) else len(self._finish_reasons)] = reason

    def whole_text(self, text: str) -> None:
        """The generated text of a whole (non-streamed) response, for content capture."""
        if self.texts is not None and not self.texts and text:
            self.texts.append(text)

    def fail(self, error: BaseException | str) -> None:
        """The call failed: an exception, or an error type such as an HTTP status (a code, never
        free text: see ``conventions.identifier``)."""
        if isinstance(error, BaseException):
            self.error_type = type(error).__name__
            code = names.provider_error_code(error)
            if code is not None:
                self.annotate({names.LLM_ERROR_CODE: code})
            if self.span.is_recording():
                names.record_error(self.span, error)
        else:
            self.error_type = names.identifier(error) or "stream_error"

    def annotate(self, attributes: dict[str, Any]) -> None:
        """Extra attributes for the call's span (response headers, retries, ...), of any types
        (the SDK checks them): set at the end, in one step with the call's own."""
        if self._annotations is None:
            self._annotations = dict(attributes)
        else:
            self._annotations.update(attributes)

    # -- the end ------------------------------------------------------------------------------

    def finish(self, outcome: str = names.COMPLETED, at: float | None = None) -> CallResult | None:
        """End the call exactly once: measure it into a frozen ``CallResult``, which
        ``report.emit`` turns into the span and the metrics, and return it. ``at``: when it ended,
        if that was earlier than now. Returns None if it had already ended."""
        try:
            self._finish_token.pop()
        except IndexError:
            return None
        result = None
        try:
            result = self._measure(outcome, at)
            delegated = self.progress is not None and self.progress.delegated
            report.emit(result, self.span, self._writer, self._start_ns, at is not None, self._annotations,
                        None if delegated else self._telemetry.metrics, self._telemetry.settings,
                        self._telemetry.prices)
        except Exception as exc:
            report_internal_error("tracker.finish", exc)
            with contextlib.suppress(Exception):
                self._writer.end()
        return result

    def _measure(self, outcome: str, at: float | None) -> CallResult:
        end = clock() if at is None else at
        if self.error_type is not None:
            outcome = names.ERROR
        settings = self._telemetry.settings
        duration = end - self.started
        api_usage = self.output_tokens is not None
        output_tokens = self.output_tokens if api_usage else (
            token_estimate.count(self.texts or ()) or (self.content_chunks + self.extra_tokens) or None)
        ttft = None if self.first_content is None else self.first_content - self.started
        self._end_run(self.content_chunks - 1)
        rate = None
        if self._gap_count and self._gap_sum > 0 and output_tokens:
            # Tokens per content chunk over the mean gap between consecutive timed arrivals: the
            # decode rate (for a caller that keeps up, the tokens after the first chunk over the
            # time from the first to the last), never from chunks that waited for the caller.
            rate = output_tokens / self.content_chunks * self._gap_count / self._gap_sum
        gaps = self._gaps()
        # Read slower than it came: the rate and gaps rest on the few chunks that were timed,
        # shown on the span but kept out of the histograms (and of the slow-rate verdict).
        reader_bound = self.waiting_chunks * 5 > self.content_chunks
        slow: list[str] = []
        if duration > settings.slow_request_threshold_seconds:
            slow.append("duration")
        if rate is not None and rate < settings.slow_token_rate_threshold and not reader_bound:
            slow.append("token_rate")
        timing = self._timing
        started = self.started
        sent = None if timing.request_sent is None else timing.request_sent - started
        reasons = self._finish_reasons
        return CallResult(
            operation=self.operation, model=self.model, provider=self.provider, stream=self.stream,
            server=self.server, outcome=outcome, duration=duration, ttft=ttft,
            server_ttft=ttft - sent if ttft is not None and sent is not None and self.first_content_timed else None,
            rate=rate, gaps=tuple(gaps),
            itl_p50=percentile(gaps, 0.50) if gaps else None,
            itl_p99=percentile(gaps, 0.99) if gaps else None,
            itl_max=max(self._max_gap, gaps[-1]) if gaps else None,
            offsets=tuple(map(int, map(mul, map(sub, self._times, repeat(started)), repeat(1e6)))),
            offsets_truncated=self.content_chunks > len(self._times),
            chunks=self.chunks, content_chunks=self.content_chunks, waiting_chunks=self.waiting_chunks,
            reader_bound=reader_bound,
            reader_seconds=timing.reader_seconds if timing.timed and not timing.by_arrival else None,
            input_tokens=self.input_tokens, output_tokens=output_tokens,
            cache_read_tokens=self.cache_read_tokens, cache_write_tokens=self.cache_write_tokens,
            usage_source=None if output_tokens is None else "api" if api_usage else "estimated",
            response_model=self.response_model, response_id=self.response_id,
            finish_reasons=tuple([reasons[i] for i in sorted(reasons)]), error_type=self.error_type,
            time_to_request_sent=sent,
            time_to_response_headers=None if timing.headers_at is None else timing.headers_at - started,
            connection_reused=timing.connection_reused,
            stalls=tuple([(index, gap, at - started) for index, gap, at in self._stalls]), slow=tuple(slow),
            output_text=names.bounded_text("".join(self.texts))
            if self.texts and settings.capture_content else None)

    def _gaps(self) -> list[float]:
        """Gaps between consecutive timed content chunks (within the offsets cap), ascending."""
        times = self._times
        if len(times) < 2:
            return []
        if not self._waiting:
            gaps = list(map(sub, itertools.islice(times, 1, None), times))
        else:  # (C-level set operations: no Python step per chunk, when most waited)
            timed = set(range(len(times))).difference(self._waiting)
            firsts = list(timed.intersection(map((1).__rsub__, timed)))  # chunks timed, as the next one is
            gaps = list(map(sub, map(times.__getitem__, map((1).__add__, firsts)), map(times.__getitem__, firsts)))
        gaps.sort()
        return gaps



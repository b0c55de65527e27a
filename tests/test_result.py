"""A call's numbers as an immutable ``CallResult`` (what ``CallTracker.finish`` returns), and how
``report`` turns a result into span attributes: the arithmetic tested apart from OpenTelemetry."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import make_harness
from nexent_autoinstrument import lifecycle
from nexent_autoinstrument import tracker as tracker_module
from nexent_autoinstrument.conventions import decode_offsets, encode_offsets
from nexent_autoinstrument.report import CallResult, emit, span_attributes
from nexent_autoinstrument.timing import ReadTiming


def read_as(timing: ReadTiming, fresh: bool) -> None:
    """The HTTP layer's clock readings for a read that returned at ``timing.read_time``: it waited
    10 ms for its data, the caller never away (fresh), or it returned at once after the caller had
    been away 100 ms."""
    waited, away = (0.01, 0.0) if fresh else (0.00001, 0.1)
    timing.asked = timing.read_time - waited
    timing.previous_read_time = timing.asked - away


def timed_call(monkeypatch: pytest.MonkeyPatch, reads: list[tuple[float, bool]], end: float,
               **settings: Any) -> CallResult:
    """A streamed call started at 0 whose content came in ``reads``: (when the read returned,
    whether it waited for its data); ended at ``end``."""
    ticks = iter([0.0, end])
    monkeypatch.setattr(tracker_module, "clock", lambda: next(ticks))
    call = lifecycle.begin(make_harness(**settings).telemetry, "chat", "m", stream=True)
    timing = ReadTiming()
    call.timed_by(timing)
    timing.timed, timing.request_sent, timing.headers_at = True, 0.05, 0.08
    for read_time, fresh in reads:
        timing.read_time = read_time
        read_as(timing, fresh)
        timing.reader_seconds += 0.001
        call.content()
    result = call.finish()
    assert result is not None
    return result


def test_a_timed_stream_measures_to_exact_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    result = timed_call(monkeypatch, [(0.2, True), (0.3, True), (0.4, True), (0.6, True)], end=1.0,
                        slow_token_rate_threshold=1.0)
    assert (result.outcome, result.duration, result.ttft) == ("completed", 1.0, 0.2)
    assert result.server_ttft == pytest.approx(0.15)  # the first content after the request was on the wire
    assert result.gaps == pytest.approx((0.1, 0.1, 0.2))
    assert (result.itl_p50, result.itl_p99, result.itl_max) == pytest.approx((0.1, 0.2, 0.2))
    assert result.rate == pytest.approx(3 / 0.4)  # 4 tokens, 3 gaps over 0.4 s: one token per 0.133 s
    assert result.offsets == (200_000, 300_000, 400_000, 600_000) and not result.offsets_truncated
    assert (result.content_chunks, result.waiting_chunks, result.reader_bound) == (4, 0, False)
    assert result.reader_seconds == pytest.approx(0.004)
    assert (result.output_tokens, result.usage_source) == (4, "estimated")
    assert result.time_to_response_headers == pytest.approx(0.08) and result.slow == ()
    with pytest.raises(AttributeError):
        result.rate = 0.0  # type: ignore[misc]


def test_chunks_that_waited_are_no_arrivals_and_a_reader_bound_call_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # one arrival, then three chunks that were there already when read: no gap is measured
    result = timed_call(monkeypatch, [(0.2, True), (0.5, False), (0.8, False), (1.1, False)], end=1.2)
    assert result.ttft == 0.2 and result.gaps == () and result.rate is None
    assert (result.itl_p50, result.itl_p99, result.itl_max) == (None, None, None)
    assert (result.waiting_chunks, result.reader_bound) == (3, True)
    assert result.offsets == (200_000, 500_000, 800_000, 1_100_000)


def test_a_second_chunk_of_one_read_waited_for_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # two content chunks from the read that returned at 0.3: only the first takes its arrival
    result = timed_call(monkeypatch, [(0.2, True), (0.3, True), (0.3, True), (0.5, True)], end=0.6)
    assert result.waiting_chunks == 1 and result.gaps == pytest.approx((0.1,))


def test_stalls_and_slow_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    result = timed_call(monkeypatch, [(0.1, True), (0.2, True), (2.5, True), (2.6, True)], end=40.0,
                        stall_threshold_seconds=1.0, slow_request_threshold_seconds=30.0,
                        slow_token_rate_threshold=5.0)
    assert [(index, round(gap, 6), round(at, 6)) for index, gap, at in result.stalls] == [(2, 2.3, 2.5)]
    assert result.itl_max == pytest.approx(2.3)
    assert result.slow == ("duration", "token_rate")  # 3 gaps over 2.5 s: 1.2 tokens/s


RESULT = CallResult(
    operation="chat", model="m", provider="openai", stream=True, server=("h", 1), outcome="completed",
    duration=2.0, ttft=0.5, server_ttft=0.4, rate=10.0, gaps=(0.1, 0.2), itl_p50=0.1, itl_p99=0.2, itl_max=0.3,
    offsets=(500_000, 600_000), offsets_truncated=True, chunks=5, content_chunks=3, waiting_chunks=1,
    reader_bound=False, reader_seconds=0.01, input_tokens=7, output_tokens=3, cache_read_tokens=4,
    cache_write_tokens=None, usage_source="api",
    response_model="m-1", response_id="r", finish_reasons=("stop",), error_type=None,
    time_to_request_sent=0.1, time_to_response_headers=0.3, connection_reused=True, stalls=(), slow=(),
    output_text=None)


def test_span_attributes_name_every_measured_field() -> None:
    assert span_attributes(RESULT) == {
        "llm.stream.outcome": "completed", "llm.stream.chunks": 5, "gen_ai.response.model": "m-1",
        "gen_ai.response.id": "r", "gen_ai.response.finish_reasons": ("stop",), "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3, "gen_ai.usage.cache_read.input_tokens": 4, "llm.usage.source": "api",
        "llm.time_to_first_token": 0.5,
        "gen_ai.response.time_to_first_chunk": 0.5, "llm.time_to_request_sent": 0.1,
        "llm.server_time_to_first_token": 0.4, "llm.time_to_response_headers": 0.3, "llm.connection.reused": True,
        "llm.token_generation_rate": 10.0, "llm.inter_token_latency.p50": 0.1, "llm.inter_token_latency.p99": 0.2,
        "llm.inter_token_latency.max": 0.3, "llm.stream.reader_bound": False, "llm.stream.reader_seconds": 0.01,
        "llm.stream.waiting_chunks": 1, "llm.token.offsets_truncated": True, "llm.token.offsets": "500000,100000"}


def test_span_attributes_leave_out_what_was_not_measured() -> None:
    bare = RESULT._replace(stream=False, ttft=None, server_ttft=None, rate=None, gaps=(), itl_p50=None,
                               itl_p99=None, itl_max=None, offsets=(), reader_seconds=None, output_tokens=None,
                               usage_source=None, response_model=None, response_id=None, finish_reasons=(),
                               time_to_request_sent=None, time_to_response_headers=None, connection_reused=None,
                               input_tokens=None, cache_read_tokens=None, error_type="429", output_text=None)
    assert span_attributes(bare) == {"llm.stream.outcome": "completed", "error.type": "429"}


# -- edge values: caps, nearest ranks, stalls ---------------------------------------------------------

def clocked_call(monkeypatch: pytest.MonkeyPatch, times: list[float], **settings: Any) -> CallResult:
    """A streamed call whose clock reads ``times``: its start, one content chunk per reading in
    between (nobody times the reads), and its end."""
    ticks = iter(times)
    monkeypatch.setattr(tracker_module, "clock", lambda: next(ticks))
    call = lifecycle.begin(make_harness(**settings).telemetry, "chat", "m", stream=True)
    for _ in range(len(times) - 2):
        call.content()
    result = call.finish()
    assert result is not None
    return result


def test_itl_p99_and_max_count_gaps_past_the_offsets_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [0.0]  # start
    for gap in [0.1, 0.01, 0.01, 0.01, 0.5, 0.02, 0.9]:  # the two long gaps come after the 4th offset
        times.append(times[-1] + gap)
    result = clocked_call(monkeypatch, [*times, times[-1] + 0.1], token_timestamps_max=4)
    assert len(result.offsets) == 4 and result.offsets_truncated is True
    assert (result.itl_p50, result.itl_p99) == pytest.approx((0.01, 0.01))  # over the capped offsets
    assert result.itl_max == pytest.approx(0.9)  # over all gaps


@pytest.mark.parametrize(("chunks", "truncated"), [(3, False), (4, False), (5, True)])
def test_offsets_truncated_flag(monkeypatch: pytest.MonkeyPatch, chunks: int, truncated: bool) -> None:
    result = clocked_call(monkeypatch, [float(t) for t in range(chunks + 2)], token_timestamps_max=4)
    assert result.offsets_truncated is truncated and len(result.offsets) == min(chunks, 4)


def test_itl_p99_of_many_gaps_is_the_nearest_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [0.0, 1.0]
    for gap in [0.01] * 98 + [0.2, 0.3]:  # 100 gaps: p50 0.01, p99 the 99th (0.2), max 0.3
        times.append(times[-1] + gap)
    result = clocked_call(monkeypatch, [*times, times[-1]])
    assert (result.itl_p50, result.itl_p99, result.itl_max) == pytest.approx((0.01, 0.2, 0.3))


def test_stall_events_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [2.0 * index for index in range(42)]  # 40 stalls of 2 s
    result = clocked_call(monkeypatch, [*times, times[-1]], stall_threshold_seconds=1.0)
    assert len(result.stalls) == 32 and result.stalls[0][1] == 2.0


def test_a_stall_after_a_bundled_chunk_is_still_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk 1 came bundled with chunk 0 (it was waiting when read, at 0.2 s), then the server
    stalled until 2.2 s: the gap is at least 2.0 s, and that is a stall (seen on a busy CI runner)."""
    result = timed_call(monkeypatch, [(0.1, True), (0.2, False), (2.2, True), (2.3, True)], end=2.3,
                        stall_threshold_seconds=1.0)
    [(index, gap, _)] = result.stalls
    assert index == 2 and gap == pytest.approx(2.0)
    assert result.itl_max == pytest.approx(2.0) and result.itl_p50 == pytest.approx(0.1)  # the one measured gap


def test_stalls_become_span_events_at_their_time(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = make_harness(stall_threshold_seconds=1.0)
    ticks = iter([0.0, 0.1, 2.1, 2.2])
    monkeypatch.setattr(tracker_module, "clock", lambda: next(ticks))
    call = lifecycle.begin(harness.telemetry, "chat", "m", stream=True)
    call.content()
    call.content()
    lifecycle.end(call)
    span = harness.llm_span()
    [stall] = [event for event in span.events if event.name == "llm.stream.stall"]
    assert stall.attributes["llm.stall.chunk_index"] == 1 and stall.attributes["llm.stall.gap_seconds"] == 2.0
    assert stall.timestamp == span.start_time + 2_100_000_000


@given(st.lists(st.integers(0, 10**9), max_size=60).map(sorted), st.none() | st.integers(0, 400))
def test_offsets_encode_to_a_string_that_decodes_to_a_prefix_of_them(offsets: list[int], limit: int | None) -> None:
    text, cut = encode_offsets(offsets, limit)
    decoded = decode_offsets(text)
    assert decoded == offsets[:len(decoded)] and cut == (len(decoded) < len(offsets))
    if limit is None:
        assert decoded == offsets
    else:
        assert len(text) <= limit


def test_offsets_cut_to_an_attribute_length_limit_stay_whole_numbers() -> None:
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=20))
    span = provider.get_tracer("t").start_span("call")
    offsets = tuple(range(1_000_000, 2_000_000, 31_250))
    result = RESULT._replace(offsets=offsets, offsets_truncated=False)
    emit(result, span, span, 0, False, None, None, None)  # type: ignore[arg-type]
    assert span.attributes["llm.token.offsets"] == "1000000,31250,31250"
    assert span.attributes["llm.token.offsets_truncated"] is True


@given(reads=st.lists(st.tuples(st.floats(0.001, 1.0), st.booleans(), st.integers(1, 6)), min_size=1, max_size=12),
       cap=st.integers(0, 20))
def test_chunks_recorded_together_measure_what_one_call_each_measures(reads: list[tuple[float, bool, int]],
                                                                       cap: int) -> None:
    """A read that brings several content chunks: its first one recorded as it came, the rest in
    one ``waited_contents`` call, or all of them in one ``contents`` call, give the result that
    one ``content`` call per chunk gives."""
    def measured(together: bool, at_once: bool = False) -> CallResult:
        call = lifecycle.begin(make_harness(token_timestamps_max=cap).telemetry, "chat", "m", stream=True)
        timing = ReadTiming()
        call.timed_by(timing)
        timing.timed, at = True, 0.0
        for pause, fresh, contents in reads:
            at += pause
            timing.read_time = at
            read_as(timing, fresh)
            if at_once:
                call.contents(contents)
                continue
            call.content(None, 1, 1)
            if together:
                call.waited_contents(contents - 1)
            else:
                for _ in range(contents - 1):
                    call.content(None, 1, 1)
        result = call.finish()
        assert result is not None
        return result

    ticks = iter([0.0, 100.0] * 3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracker_module, "clock", lambda: next(ticks))
        one_each, together, at_once = measured(False), measured(True), measured(True, at_once=True)
    assert together == one_each
    assert at_once == one_each


@given(reads=st.lists(st.tuples(st.floats(0.001, 1.0), st.booleans(), st.integers(1, 3)), min_size=1, max_size=30),
       cap=st.integers(0, 40))
def test_the_gaps_are_those_between_consecutive_chunks_that_both_arrived_when_read(
        reads: list[tuple[float, bool, int]], cap: int) -> None:
    """Reads of one or more content chunks, each read's data waiting or not: a gap is measured
    between two consecutive chunks (within the offsets cap) only when both took their read's
    arrival, the first chunk of a read whose data did not wait."""
    call = lifecycle.begin(make_harness(token_timestamps_max=cap).telemetry, "chat", "m", stream=True)
    timing = ReadTiming()
    call.timed_by(timing)
    timing.timed, at, chunks = True, 0.0, []
    for pause, fresh, contents in reads:
        at += pause
        timing.read_time = at
        read_as(timing, fresh)
        for position in range(contents):
            call.content(None, 1, 1)
            chunks.append((at, fresh and position == 0))
    result = call.finish()
    assert result is not None
    kept = chunks[:cap]
    expected = sorted(b - a for (a, a_timed), (b, b_timed) in itertools.pairwise(kept) if a_timed and b_timed)
    assert result.gaps == pytest.approx(tuple(expected))


@pytest.mark.parametrize("adopted", [False, True])
def test_attributes_reported_during_the_call_yield_a_name_to_the_end_as_they_did_when_set_first(adopted: bool) -> None:
    """On the agent's span the end's value of a name wins, in the end's place; on a span adopted from
    an SDK, which keeps the first value of a name, the one reported during the call."""
    from opentelemetry.sdk.trace import TracerProvider

    from nexent_autoinstrument.adoption import Adoption

    span = TracerProvider().get_tracer("t").start_span("call", attributes={"first": 1})
    writer = Adoption(span) if adopted else span
    result = RESULT._replace(error_type="timeout")
    emit(result, span, writer, 0, False, {"error.type": "from the call", "llm.request.retries": 1},
         None, None)  # type: ignore[arg-type]
    assert span.attributes["error.type"] == ("from the call" if adopted else "timeout")
    assert span.attributes["llm.request.retries"] == 1
    if not adopted:
        assert list(span.attributes)[:2] == ["first", "llm.request.retries"]  # (the end's names after)

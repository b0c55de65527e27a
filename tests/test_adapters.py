"""The adapters on their own: SSE decoding, and what each reader counts as content."""

from __future__ import annotations

import io
import itertools
import json
import random
import re
import sys
from dataclasses import MISSING, fields
from types import SimpleNamespace
from typing import Any

import pydantic
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from openai._models import construct_type
from openai.types.chat import ChatCompletionChunk
from openai.types.completion import Completion
from openai.types.completion_usage import CompletionUsage
from openai.types.responses import ResponseUsage

from conftest import examples
from nexent_autoinstrument.adapters import anthropic as anthropic_adapter
from nexent_autoinstrument.adapters import gemini as gemini_adapter
from nexent_autoinstrument.adapters import ollama as ollama_adapter
from nexent_autoinstrument.adapters.endpoints import PROTOCOLS, endpoint_for, request_attributes
from nexent_autoinstrument.adapters.openai import (
    is_usage_only_event,
    read_chat_chunk,
    read_chat_event,
    read_completion_chunk,
    read_completion_event,
    read_response_event,
    skim_chat_event,
    skim_completion_event,
    skim_response_event,
)
from nexent_autoinstrument.adapters.protocol import Protocol, Route
from nexent_autoinstrument.adapters.sse import EventFilter, NDJSONDecoder, PlainReads, SSEDecoder, events_of
from nexent_autoinstrument.adapters.usage import cached_input, get_field, usage_counts
from nexent_autoinstrument.tools.mock import Dialect, Wire

# -- SSE ----------------------------------------------------------------------------------------

SSE_CASES = [
    ("one data line per event", b'data: {"a":1}\n\ndata: {"b":2}\n\n', [b'{"a":1}', b'{"b":2}']),
    ("CRLF line ends", b'data: {"a":1}\r\n\r\ndata: x\r\n\r\n', [b'{"a":1}', b"x"]),
    ("CR line ends", b"data: one\r\rdata: two\r\rdata: three\n\n", [b"one", b"two", b"three"]),
    ("comments and other fields", b": keep-alive\n\nevent: delta\nid: 7\nretry: 5\ndata: x\n\n", [b"x"]),
    ("named events", b"event: ping\ndata: {}\n\nevent: delta\ndata: \n\nevent: a\ndata:b\n\n", [b"{}", b"", b"b"]),
    ("multi-line data", b"data: first\ndata: second\n\n", [b"first\nsecond"]),
    ("mixed line ends, then a whole line", b"data: x\ndata: a\r\ndata: b\n\n", [b"x\na\nb"]),
    ("no space after the colon", b"data:x\n\n", [b"x"]),
    ("an event without data", b"event: ping\n\ndata: y\n\n", [b"y"]),
    ("the end marker", b"data: [DONE]\n\n", [b"[DONE]"]),
    ("non-ASCII text", "data: {\"c\":\"héllo ✓\"}\n\n".encode(), ["{\"c\":\"héllo ✓\"}".encode()]),
]


@pytest.mark.parametrize(("body", "events"), [(b, e) for _, b, e in SSE_CASES], ids=[n for n, _, _ in SSE_CASES])
def test_sse_decoder_whole_and_split_anywhere(body: bytes, events: list[bytes]) -> None:
    assert SSEDecoder().feed(body) == events
    for cut in range(len(body) + 1):  # two reads: the second may be one whole event line (the fast path)
        decoder = SSEDecoder()
        assert decoder.feed(body[:cut]) + decoder.feed(body[cut:]) == events
    rng = random.Random(7)
    for _ in range(300):  # the same events whatever the network read boundaries
        decoder, seen, position = SSEDecoder(), [], 0
        while position < len(body):
            step = rng.randint(1, 5)
            seen += decoder.feed(body[position:position + step])
            position += step
        assert seen == events


def test_sse_decoder_keeps_an_unfinished_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: par") == []
    assert decoder.feed(b"tial\n") == []
    assert decoder.feed(b"\ndata: next") == [b"partial"]
    assert decoder.feed(b"\r\n\r\n") == [b"next"]


def spec_events(body: bytes) -> list[bytes]:
    """The reference: the events a spec-literal parser dispatches from ``body`` (every line end,
    a last lone \\r too, acted on; an event without its blank line not dispatched)."""
    *lines, _unfinished = re.split(rb"\r\n|\r|\n", body)
    events, data = [], None
    for line in lines:
        if not line:
            if data is not None:
                events.append(b"\n".join(data))
            data = None
        elif not line.startswith(b":"):
            name, _, value = line.partition(b":")
            if name == b"data":
                data = [*(data or []), value[1:] if value.startswith(b" ") else value]
    return events


MORE_SSE_CASES = [
    ("CR line ends, the last \\r ends the body", b"data: one\r\rdata: two\r\r", [b"one", b"two"]),
    ("a data line without a colon", b"data\n\ndata\ndata\n\n", [b"", b"\n"]),
    ("fields that only begin like data", b"database: x\ndata : y\ndata:z\n\n", [b"z"]),
    ("two spaces after the colon", b"data:  x\n\n", [b" x"]),
    ("CR, then a CRLF blank line", b"data: a\r\r\ndata: b\r\n\n", [b"a", b"b"]),
    ("blank lines between events", b"\n\r\n\rdata: a\n\n\n\r\r\ndata: b\r\n\r\n\n", [b"a", b"b"]),
    ("comment-only and field-only events", b": ping\n\nid: 3\nretry: 9\n\nevent: e\r\n\r\ndata: x\n\n", [b"x"]),
    ("an event without its blank line at the end", b"data: a\n\ndata: b\n", [b"a"]),
    ("the fields dialect, CRLF, no space", b": keep-alive\r\nid:1\r\nretry:3000\r\nevent:message\r\ndata:{}\r\n\r\n",
     [b"{}"]),
]


@pytest.mark.parametrize(("body", "events"), [(b, e) for _, b, e in SSE_CASES + MORE_SSE_CASES],
                         ids=[n for n, _, _ in SSE_CASES + MORE_SSE_CASES])
def test_sse_decoder_dispatches_each_event_when_its_blank_line_is_read(body: bytes, events: list[bytes]) -> None:
    assert spec_events(body) == events  # (the reference agrees with the table)
    for cut in range(len(body) + 1):
        decoder = SSEDecoder()
        assert decoder.feed(body[:cut]) == spec_events(body[:cut])  # nothing waits for the next read
        assert decoder.feed(body[cut:]) + decoder.finish() == events[len(spec_events(body[:cut])):]
    decoder, seen = SSEDecoder(), []
    for byte in range(len(body)):  # one byte per read
        seen += decoder.feed(body[byte:byte + 1])
        assert seen == spec_events(body[:byte + 1])
    assert decoder.finish() == [] and decoder.idle


sse_line = st.one_of(
    st.binary(max_size=12).filter(lambda v: b"\n" not in v and b"\r" not in v).map(lambda v: b"data: " + v),
    st.sampled_from([b"", b"", b"event: x", b"id: 1", b": comment", b"data", b"data:x", b"data:  y", b"retry: 5"]))


@settings(max_examples=examples(250), deadline=None)
@given(lines=st.lists(st.tuples(sse_line, st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"])), max_size=14),
       cuts=st.lists(st.integers(0, 200), max_size=6))
@example(lines=[(b"data: abc", b"\n"), (b"", b"\n")], cuts=[3])  # (always: a read of a piece of a line, held)
def test_events_taken_as_regions_are_the_events_of_the_spec(lines: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    """``feed_region`` takes a read with ``\\n`` line ends whole and gives the bytes of the events
    it completes; a read it leaves to ``feed`` is taken whole by it. Together, read in any pieces,
    they give the spec's events, as ``feed`` alone does, and hold what it holds."""
    body = b"".join(line + end for line, end in lines)
    bounds = sorted({0, len(body), *(cut for cut in cuts if cut < len(body))})
    decoder, reference, seen = SSEDecoder(), SSEDecoder(), []
    for start, end in itertools.pairwise(bounds):
        region = decoder.feed_region(body[start:end])
        if region is None:
            seen += decoder.feed(body[start:end])
        else:
            assert not region or (region.endswith(b"\n\n") and b"\r" not in region)
            seen += events_of(region)
        reference.feed(body[start:end])
        assert decoder.idle == reference.idle
    assert seen == spec_events(body)


@pytest.mark.parametrize("read", [b"data: a\r\n\r\n", b"\n", b"data: a\n\rdata: b\n\n"])
def test_a_read_with_cr_or_leading_blank_lines_is_left_to_the_general_decoder(read: bytes) -> None:
    decoder = SSEDecoder()
    assert decoder.feed_region(read) is None
    assert decoder.feed(read) == spec_events(read)  # (it took nothing)


def test_the_events_of_a_region() -> None:
    decoder = SSEDecoder()
    region = decoder.feed_region(b"data: a\n\n: keep-alive\n\nevent: x\ndata: b\n\n\ndata: c\ndata: d\n\ndata: e")
    assert region is not None and not decoder.idle
    assert events_of(region) == [b"a", b"b", b"c\nd"]
    assert decoder.feed_region(b"\n") == b"" and decoder.feed_region(b"\n") == b"data: e\n\n" and decoder.idle


def test_the_end_of_the_body_completes_no_sse_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == [] and not decoder.idle
    assert decoder.feed(b"\r") == [b"a"]  # a lone \r at the end of a read is a line end already
    assert not decoder.idle  # (a \n next would be its second half: the next read may not begin an event)
    assert decoder.feed(b"\n") == [] and decoder.idle  # it was: no blank line of its own
    assert decoder.feed(b"data: b\n") == [] and decoder.finish() == []  # no blank line: never an event
    assert decoder.idle and decoder.feed(b"\n") == []  # (finish forgets what was held)
    assert decoder.feed(b"data: c\n\n\r\n") == [b"c"] and decoder.idle  # (blank lines after it hold nothing)


# -- the mock LLM's dialects, through its own writer ---------------------------------------------

DIALECT_EVENTS = [
    (b'{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}', None),
    (b'{"id":"c1","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}', None),
    (b'{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}', None),
    (b'{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}', None),
    (b'{"type":"message_delta","usage":{"output_tokens":2}}', "message_delta"),
    (b"[DONE]", None),
]
USAGE_ONLY = 3  # (the index of the usage-only event the agent asked for)
LINE_DIALECTS = ["", "crlf", "cr", "nospace", "fields", "crlf,nospace,fields", "cr,nospace,fields", "cr,fields"]


def wire_events(dialect: str) -> list[bytes]:
    """Each of ``DIALECT_EVENTS`` as the mock LLM writes it in ``dialect`` (its HTTP chunks undone)."""
    out = io.BytesIO()
    wire = Wire(out, Dialect.parse(dialect))
    written = []
    for data, name in DIALECT_EVENTS:
        start = out.tell()
        wire.event(data, name)
        size, _, rest = out.getvalue()[start:].partition(b"\r\n")
        assert len(rest) == int(size, 16) + 2
        written.append(rest[:-2])
    return written


def read_splits(body: bytes, rng: random.Random) -> list[list[bytes]]:
    """Network reads of ``body``: whole, bytewise, two reads at every position, random pieces."""
    splits = [[body], [body[i:i + 1] for i in range(len(body))]]
    splits += [[body[:cut], body[cut:]] for cut in range(len(body) + 1)]
    for _ in range(50):
        cuts = sorted(rng.sample(range(len(body) + 1), 6))
        splits.append([body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)])
    return splits


@pytest.mark.parametrize("dialect", LINE_DIALECTS)
def test_every_dialect_of_the_mock_llm_is_decoded_and_filtered(dialect: str) -> None:
    events = wire_events(dialect)
    body = b"".join(events)
    datas = [data for data, _ in DIALECT_EVENTS]
    for reads in read_splits(body, random.Random(dialect)):
        decoder, decoded, strip, out, position = SSEDecoder(), [], EventFilter(is_usage_only_event), b"", 0
        for read in reads:
            decoded += decoder.feed(read)
            out += strip.feed(read)
            position += len(read)
            # All the events complete so far, and nothing of another: decoded, and handed on (a cut
            # stream gives the caller every event it completed before the error).
            done = completed(events, position)
            assert decoded == datas[:done]
            assert out == handed_on(events, [i != USAGE_ONLY for i in range(len(events))], position)
        assert decoder.finish() == [] and strip.flush() == b""
        assert out == b"".join(event for i, event in enumerate(events) if i != USAGE_ONLY)
    bytewise = io.BytesIO()  # (the mock's bytewise dialect: the same bytes, one HTTP chunk each)
    Wire(bytewise, Dialect.parse(f"{dialect},bytewise")).event(*DIALECT_EVENTS[0])
    assert bytewise.getvalue() == b"".join(b"1\r\n" + events[0][i:i + 1] + b"\r\n" for i in range(len(events[0])))


def test_the_event_filter_holds_only_the_unfinished_event() -> None:
    strip = EventFilter(lambda data: data == b"x")
    assert strip.feed(b"data: a\r\n\r\ndata: x\r\n") == b"data: a\r\n\r\n"
    assert strip.feed(b"\r") == b""  # the dropped event is complete; its \n may follow
    assert strip.feed(b"\n: c\r\n") == b""  # ... and does: dropped with it
    assert strip.feed(b"\r\n\n\rdata: b") == b": c\r\n\r\n\n\r"  # a comment-only event, blank lines
    assert strip.flush() == b"data: b" and strip.flush() == b""
    strip = EventFilter(lambda data: data == b"x")
    assert strip.feed(b"data: x\r\r") == b""
    assert strip.feed(b"\r\n") == b"\r\n"  # (a \r\n after the blank line: a blank line of its own)
    assert strip.feed(b"\ndata: x\n\n\ndata: y\n\n") == b"\n\ndata: y\n\n"  # blank lines before an event stay
    assert strip.feed(b"\ndata: x\n\n") == b"\n"


# -- properties: any events, in any dialect, split into reads anywhere ---------------------------

LINE_END = st.sampled_from([b"\n", b"\r\n", b"\r"])
VALUE = st.one_of(st.sampled_from([b"", b" ", b"x", b"DROP", b"DROP it", b" DROP", b"data: y", b":", b"\xc3\xa9"]),
                  st.binary(max_size=6).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))


@st.composite
def sse_event(draw: Any) -> tuple[list[bytes], bytes | None]:
    """One event: its lines (without line ends), and its data (None: no data line)."""
    lines, data = [], []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["data", "data", "comment", "field"]))
        if kind == "data":
            value = draw(VALUE)
            forms = [b"data: " + value] + ([b"data:" + value] if not value.startswith(b" ") else []) + \
                ([b"data"] if not value else [])
            lines.append(draw(st.sampled_from(forms)))
            data.append(value)
        elif kind == "comment":
            lines.append(b":" + draw(VALUE))
        else:
            lines.append(draw(st.sampled_from([b"event: delta", b"event:x", b"id: 7", b"retry: 3000", b"event",
                                               b"database: DROP", b"data : DROP"])))
    return lines, b"\n".join(data) if data else None


@st.composite
def sse_stream(draw: Any) -> tuple[list[bytes], list[bytes | None], bytes, list[bytes]]:
    """Events serialized with one line end for the whole stream or one per line (a \\r never
    followed by a blank line's \\n: that would be one \\r\\n), maybe blank lines between them
    (as events without data: handed on), maybe an unfinished event last, and the stream cut into
    reads anywhere (empty reads too)."""
    events = draw(st.lists(sse_event(), max_size=6))
    fixed = draw(st.one_of(st.none(), LINE_END))
    previous = b""

    def end(blank: bool) -> bytes:
        nonlocal previous
        previous = fixed or draw(st.sampled_from([b"\r", b"\r\n"] if blank and previous == b"\r" else
                                                 [b"\n", b"\r\n", b"\r"]))
        return previous

    serialized, datas = [], []
    for lines, data in events:
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # blank lines that end no event
            serialized.append(end(True))
            datas.append(None)
        serialized.append(b"".join(line + end(False) for line in lines) + end(True))
        datas.append(data)
    tail_lines, _ = draw(st.one_of(st.just(([], None)), sse_event()))
    tail = b"".join(line + end(False) for line in tail_lines)
    if tail_lines and draw(st.booleans()):
        tail = tail[:-len(previous)]  # the last line without its line end
    body = b"".join(serialized) + tail
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=8)))
    reads = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return serialized, datas, tail, reads


def completed(serialized: list[bytes], position: int) -> int:
    """How many of the events are complete when ``position`` bytes are read (the \\r of a final
    \\r\\n ends the blank line: its \\n may come in the next read)."""
    done, end = 0, 0
    for raw in serialized:
        end += len(raw)
        if end <= position or (end == position + 1 and raw.endswith(b"\r\n")):
            done += 1
    return done


def handed_on(serialized: list[bytes], kept: list[bool], position: int) -> bytes:
    """What an ``EventFilter`` should have handed on when ``position`` bytes are read: every
    complete event that is kept (but a \\n still to come), nothing of the others."""
    done = completed(serialized, position)
    out = b"".join(raw for raw, keep in zip(serialized[:done], kept, strict=False) if keep)
    if done and kept[done - 1] and len(b"".join(serialized[:done])) > position:
        out = out[:-1]
    return out


def drop(data: bytes) -> bool:
    return data.startswith(b"DROP")


@settings(max_examples=examples(300), deadline=None)
@given(stream=sse_stream())
def test_any_events_in_any_dialect_are_decoded_as_the_spec_says_whatever_the_reads(stream: Any) -> None:
    serialized, datas, tail, reads = stream
    body = b"".join(serialized) + tail
    assert spec_events(body) == [data for data in datas if data is not None]  # (the generator is right)
    decoder, decoded, position = SSEDecoder(), [], 0
    for read in reads:
        decoded += decoder.feed(read)
        position += len(read)
        assert decoded == [data for data in datas[:completed(serialized, position)] if data is not None]
    assert decoder.finish() == [] and decoder.idle


@settings(max_examples=examples(300), deadline=None)
@given(stream=sse_stream())
def test_the_event_filter_hands_on_exactly_the_kept_events_as_soon_as_each_is_complete(stream: Any) -> None:
    serialized, datas, tail, reads = stream
    kept = [raw if data is None or not drop(data) else b"" for raw, data in zip(serialized, datas, strict=True)]
    strip, out, position = EventFilter(drop), b"", 0
    for read in reads:
        out += strip.feed(read)
        position += len(read)
        assert out == handed_on(serialized, [bool(raw) for raw in kept], position)
    assert out + strip.flush() == b"".join(kept) + tail


@settings(max_examples=examples(150), deadline=None)
@given(lines=st.lists(st.one_of(VALUE, st.sampled_from([b'{"a":1}', b"  ", b"\t{}"])), max_size=8),
       ends=st.lists(LINE_END, min_size=8, max_size=8), last_end=st.booleans(),
       cuts=st.lists(st.integers(0, 120), max_size=8))
def test_ndjson_lines_end_with_any_line_end_whatever_the_reads(lines: list[bytes], ends: list[bytes],
                                                                last_end: bool, cuts: list[int]) -> None:
    body = b"".join(line + end for line, end in zip(lines, ends, strict=False))
    if lines and not last_end:
        body = body[:-len(ends[len(lines) - 1])]
    cuts = sorted(min(cut, len(body)) for cut in cuts)
    decoder, seen = NDJSONDecoder(), []
    for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True):
        seen += decoder.feed(body[a:b])
    assert decoder.pending == bool(lines and not last_end and lines[-1].strip())
    assert seen + decoder.finish() == [line for line in lines if line.strip()]
    assert not decoder.pending and decoder.finish() == []


PLAIN_DIALECTS = {  # (line end, data line prefix, lines before it)
    "lf": (b"\n", b"data: ", b""), "named": (b"\n", b"data: ", b"event: delta\n"), "crlf": (b"\r\n", b"data: ", b""),
    "cr": (b"\r", b"data: ", b""), "nospace": (b"\n", b"data:", b""), "fields": (b"\n", b"data: ", b": k\nid: 1\n"),
    "cr named": (b"\r", b"data: ", b"event: delta\r"), "lf after cr": (b"\n", b"data: ", b"event: a\rdata: b\r\r"),
    "two events": (b"\n", b"data: ", b"data: a\r\r"),
}


@settings(max_examples=examples(200), deadline=None)
@given(learned=st.sampled_from(sorted(PLAIN_DIALECTS)), read=st.sampled_from(sorted(PLAIN_DIALECTS)),
       text=st.text(min_size=1, max_size=5))
def test_a_plain_read_is_recognised_only_in_the_dialect_learned(learned: str, read: str, text: str) -> None:
    def write(dialect: str, content: str) -> bytes:
        newline, prefix, before = PLAIN_DIALECTS[dialect]
        event = json.dumps({"id": "c1", "choices": [{"index": 0, "delta": {"content": content}}]},
                           separators=(",", ":"))
        return before + prefix + event.encode() + newline * 2

    plain = learned_from(write(learned, "tok"))
    from_the_read = learned in ("lf", "named", "nospace")  # one event, "\n" only
    # (else from the event, where it was one: a read of it is then taken as servers write them)
    assert plain.prefix == (write(learned, "tok") if from_the_read else write("lf", "tok")).split(b"tok")[0] \
        or (plain.prefix == b"" and learned in ("two events", "lf after cr"))
    if plain.matches(write(read, text)):
        assert read == learned or (read == "lf" and not from_the_read)
        decoder = SSEDecoder()
        [data] = decoder.feed(write(read, text))
        assert json.loads(data)["choices"][0]["delta"]["content"] == text and decoder.idle


def learned_from(read: bytes, whole: bool = True) -> PlainReads:
    """What ``EventBody`` learns from ``read``'s first event, a plain delta: ``whole``, the read
    as its decoder got it from an idle start; else only the event (a read of many, or cut)."""
    reads = PlainReads(b'"content":"')
    events = SSEDecoder().feed(read)
    reads.learn(read if whole else b"", events[0] if events else b"")
    return reads


_LEARNED = (b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"tok "},'
            b'"finish_reason":null}]}\n\n')
PLAIN_READS = [
    ("another text", _LEARNED.replace(b"tok ", b"other words"), 1),
    ("escaped quote and line end in the text", _LEARNED.replace(b"tok ", b'say \\"hi\\"\\n'), 1),
    ("unicode escape", _LEARNED.replace(b"tok ", b"\\u00e9t\\u00e9"), 1),
    ("raw UTF-8 text", _LEARNED.replace(b"tok ", "été 你好".encode()), 1),
    ("a field after the text", _LEARNED.replace(b"tok ", b'a","refusal":"no'), 0),
    ("an unescaped quote after an escape", _LEARNED.replace(b"tok ", b'a\\n","refusal":"no'), 0),
    ("a line end in the text", _LEARNED.replace(b"tok ", b"a\n\ndata: b"), 0),
    ("a carriage return in the text", _LEARNED.replace(b"tok ", b"a\rb"), 0),
    ("an escape cut in two", _LEARNED.replace(b"tok ", b"a\\"), 0),
    ("empty text", _LEARNED.replace(b"tok ", b""), 0),
    ("another finish reason", _LEARNED.replace(b"null", b'"stop"'), 0),
    ("another id", _LEARNED.replace(b"c1", b"c2"), 0),
    ("two events in one read", _LEARNED + _LEARNED.replace(b"tok ", b"a\\\"b"), 2),
    ("two events, an escape cut in two in the second", _LEARNED + _LEARNED.replace(b"tok ", b"a\\"), 0),
    ("three events, one of them no plain delta", _LEARNED * 2 + _LEARNED.replace(b"null", b'"stop"') + _LEARNED, 0),
    ("two events with a comment between", _LEARNED + b": keep-alive\n\n" + _LEARNED, 0),
    ("two events, the second with a field after its data", _LEARNED + _LEARNED[:-1] + b"id: 2\n\n", 0),
]


@pytest.mark.parametrize(("read", "plain"), [(r, p) for _, r, p in PLAIN_READS], ids=[n for n, _, _ in PLAIN_READS])
@pytest.mark.parametrize("whole", [True, False], ids=["learned from a read", "learned from an event"])
def test_a_read_is_recognised_as_the_learned_delta_only_when_just_its_text_differs(read: bytes, plain: int,
                                                                                   whole: bool) -> None:
    """A read is counted as that many plain deltas only when it is nothing else (one, or several
    back to back); the template of a read is the same, learned from a read of the event or from
    the event alone."""
    assert not PlainReads(b'"content":"').matches(_LEARNED)  # nothing learned yet
    reads = learned_from(_LEARNED, whole)
    assert reads.prefix == _LEARNED[:_LEARNED.index(b"tok ")]
    assert reads.matches(_LEARNED) == 1
    assert reads.matches(read) == plain
    if plain:  # what the bytes say is what a parse says: the learned event with another text
        events = SSEDecoder().feed(read)
        assert len(events) == plain
        for data in events:
            event = json.loads(data)
            assert event["choices"][0]["delta"]["content"]
            event["choices"][0]["delta"]["content"] = "tok "
            assert event == json.loads(_LEARNED[6:-2])


@pytest.mark.parametrize("whole", [True, False], ids=["learned from a read", "learned from an event"])
@pytest.mark.parametrize(("read", "plain"), [(r, p) for _, r, p in PLAIN_READS], ids=[n for n, _, _ in PLAIN_READS])
def test_an_event_of_a_read_of_many_is_recognised_only_when_just_its_text_differs(read: bytes, plain: int,
                                                                                   whole: bool) -> None:
    """The same, for the data of each event of a read that brings several (a burst, or events cut
    across reads): the template of the event's data, learned from a read of one event or from an
    event of a read of many, is the same."""
    reads = learned_from(_LEARNED, whole)
    assert reads.data_prefix
    in_a_burst = learned_from(_LEARNED + read, False)
    assert (in_a_burst.data_prefix, in_a_burst.data_suffix) == (reads.data_prefix, reads.data_suffix)
    first = SSEDecoder().feed(read)[0]
    assert reads.matches_data(first) is (plain > 0 or first == _LEARNED[6:-2])  # (several events: the first is it)
    if reads.matches_data(first):
        event = json.loads(first)
        assert event["choices"][0]["delta"]["content"]
        event["choices"][0]["delta"]["content"] = "tok "
        assert event == json.loads(_LEARNED[6:-2])


def test_only_a_read_of_one_event_of_one_data_line_is_learned() -> None:
    """A read of another shape teaches no read's template: where the event's data is one line, a
    read of it is taken as servers write events, one ``data: `` line, and only that."""
    for read, learned in ((b'event: "content":"a"\ndata: {"text":"b"}\n\n', b""),  # the key in the name only
                          (b'data: {"content":"a"}\ndata: x\n\n', b""), (b'data: {"content":"a"}\n', b""),
                          (b'data: {"content":"a"}\r\n\r\n', b'data: {"content":"'),
                          (b'id: 1\ndata: {"content":"a"}\n\n', b'data: {"content":"'),
                          (b'data: {"content":"a"}\n\ndata: {"content":"b"}\n\n', b'data: {"content":"')):
        reads = learned_from(read)
        assert reads.prefix == learned
        assert reads.matches(read) == (2 if read.count(b"\n\ndata: ") == 1 else 0)


# -- what counts as content ---------------------------------------------------------------------

class Recorder:
    """Stands in for the call tracker: records which facts an adapter reported."""

    def __init__(self) -> None:
        self.facts: list[tuple[str, tuple[Any, ...]]] = []
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.texts: list[str] | None = None

    def content(self, text: str | None = None, tokens: int = 1) -> None:
        self.facts.append(("content", (text,)))

    def finish_reason(self, reason: str, index: Any = 0) -> None:
        self.facts.append(("finish_reason", (reason, index)))

    def response(self, model: Any = None, response_id: Any = None) -> None:
        self.response_id = response_id
        self.response_model = model

    def usage(self, input_tokens: Any, output_tokens: Any, cache_read: Any = None, cache_write: Any = None) -> None:
        self.facts.append(("usage", (input_tokens, output_tokens)))
        if cache_read is not None or cache_write is not None:
            self.facts.append(("cache", (cache_read, cache_write)))

    def fail(self, error: Any) -> None:
        self.facts.append(("fail", (error,)))

    def annotate(self, attributes: dict[str, Any]) -> None:
        self.facts.append(("annotate", (attributes,)))

    def whole_text(self, text: str) -> None:
        pass


def chat(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


CHAT_CASES = [
    ("text", chat({"content": "hi"}), [("content", ("hi",))]),
    ("role only", chat({"role": "assistant", "content": ""}), []),
    ("empty delta", chat({}), []),
    ("tool-call arguments", chat({"tool_calls": [{"index": 0, "id": "t", "type": "function",
                                                  "function": {"name": "f", "arguments": "{\""}}]}),
     [("content", ("",))]),
    ("refusal", chat({"refusal": "no"}), [("content", ("",))]),
    ("reasoning", chat({"reasoning_content": "think"}), [("content", ("",))]),
    ("reasoning, another name", chat({"reasoning": "think"}), [("content", ("",))]),
    ("finish", chat({}, "stop"), [("finish_reason", ("stop", 0))]),
    ("usage only", {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}},
     [("usage", (3, 9))]),
]


@pytest.mark.parametrize(("chunk", "facts"), [(c, f) for _, c, f in CHAT_CASES], ids=[n for n, _, _ in CHAT_CASES])
def test_chat_readers_count_content_alike_from_sdk_objects_and_dicts(chunk: dict[str, Any],
                                                                      facts: list[Any]) -> None:
    from_sdk, from_stream, from_dict = Recorder(), Recorder(), Recorder()
    read_chat_chunk(from_sdk, ChatCompletionChunk.model_validate(chunk))  # type: ignore[arg-type]
    # (built as the SDK builds a stream's chunks: not validated)
    read_chat_chunk(from_stream, construct_type(type_=ChatCompletionChunk, value=chunk))  # type: ignore[arg-type]
    read_chat_event(from_dict, chunk)  # type: ignore[arg-type]
    assert from_sdk.facts == from_stream.facts == from_dict.facts == facts
    assert from_sdk.response_id == from_stream.response_id == from_dict.response_id == "c1"


def test_completion_readers() -> None:
    for text, facts in (("hi", [("content", ("hi",))]), ("", [])):
        chunk = {"id": "c1", "object": "text_completion", "created": 1, "model": "m",
                 "choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}]}
        from_sdk, from_dict = Recorder(), Recorder()
        read_completion_chunk(from_sdk, Completion.construct(**chunk))  # type: ignore[arg-type]
        read_completion_event(from_dict, chunk)  # type: ignore[arg-type]
        assert from_sdk.facts == from_dict.facts == facts


def test_response_events() -> None:
    recorder = Recorder()
    for event in ({"type": "response.output_text.delta", "delta": "hi"},
                  {"type": "response.reasoning_summary_text.delta", "delta": "thinking"},
                  {"type": "response.function_call_arguments.delta", "delta": "{"},
                  {"type": "response.output_text.delta", "delta": ""},
                  {"type": "response.output_text.done", "text": "hi"},
                  {"type": "response.completed", "response": {"id": "r1", "object": "response", "model": "m",
                                                              "status": "completed", "usage": {
                                                                  "input_tokens": 2, "output_tokens": 3}}}):
        read_response_event(recorder, event)  # type: ignore[arg-type]
    assert recorder.facts == [("content", ("hi",)), ("content", (None,)), ("content", (None,)),
                              ("finish_reason", ("completed", 0)), ("usage", (2, 3))]


class _Reply(CompletionUsage):
    """An SDK model with a property and a method beside its fields."""

    @property
    def doubled(self) -> int:
        return 2 * self.prompt_tokens

    def label(self) -> str:
        return "reply"


def test_a_field_is_read_as_the_model_gives_it_and_a_missing_one_is_not_asked_of_the_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reply = construct_type(type_=_Reply, value={"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5,
                                                 "reasoning": "undeclared"})
    asked: list[str] = []
    lookup = pydantic.BaseModel.__getattr__
    monkeypatch.setattr(pydantic.BaseModel, "__getattr__", lambda self, name: asked.append(name) or lookup(self, name))
    assert (get_field(reply, "prompt_tokens"), get_field(reply, "reasoning")) == (2, "undeclared")
    assert (get_field(reply, "doubled"), get_field(reply, "label")()) == (4, "reply")
    assert get_field(reply, "prompt_tokens_details") is None  # declared, not sent
    assert get_field(reply, "input_tokens_details") is None and asked == []  # (pydantic would raise inside)
    assert get_field(SimpleNamespace(a=1), "a") == 1 and get_field(SimpleNamespace(), "a") is None


class _Forwarding:
    """A proxy that forwards every attribute to the object it wraps."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _Computed(CompletionUsage):
    """A model that answers some names itself."""

    def __getattr__(self, name: str) -> Any:
        return f"computed {name}" if name == "input_tokens" else super().__getattr__(name)


def test_an_object_that_answers_names_itself_is_asked_for_the_field() -> None:
    usage = CompletionUsage(prompt_tokens=2, completion_tokens=3, total_tokens=5)
    assert get_field(_Forwarding(usage), "prompt_tokens") == 2  # (it answers __pydantic_extra__ too)
    assert usage_counts(_Forwarding(usage)) == (2, 3)
    computed = construct_type(type_=_Computed, value={"prompt_tokens": 2})
    assert (get_field(computed, "input_tokens"), get_field(computed, "prompt_tokens")) == ("computed input_tokens", 2)
    assert (get_field({"a": 1}, "a"), get_field({}, "a")) == (1, None)


USAGES = [
    ("chat, declared", lambda: CompletionUsage(prompt_tokens=2, completion_tokens=3, total_tokens=5), (2, 3)),
    ("Responses, declared", lambda: construct_type(  # (built as the SDK builds a response)
        type_=ResponseUsage, value={"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}), (2, 3)),
    ("chat model, Responses counts undeclared", lambda: construct_type(
        type_=CompletionUsage, value={"input_tokens": 2, "output_tokens": 3}), (2, 3)),
    ("dict", lambda: {"input_tokens": 2, "output_tokens": 3}, (2, 3)),
    ("another kind of object", lambda: SimpleNamespace(prompt_tokens=2, completion_tokens=None), (2, None)),
    ("no counts", lambda: construct_type(type_=CompletionUsage, value={}), None),
]


@pytest.mark.parametrize(("make", "counts"), [(m, c) for _, m, c in USAGES], ids=[n for n, _, _ in USAGES])
def test_usage_is_read_from_every_shape(make: Any, counts: Any) -> None:
    assert usage_counts(make()) == counts


CACHED = [
    ("chat, declared", lambda: CompletionUsage(prompt_tokens=20, completion_tokens=3, total_tokens=23,
                                               prompt_tokens_details={"cached_tokens": 16}), 16),
    ("Responses, declared", lambda: construct_type(type_=ResponseUsage, value={
        "input_tokens": 20, "output_tokens": 3, "total_tokens": 23, "input_tokens_details": {"cached_tokens": 8},
        "output_tokens_details": {"reasoning_tokens": 0}}), 8),
    ("chat dict", lambda: {"prompt_tokens": 20, "prompt_tokens_details": {"cached_tokens": 0}}, 0),
    ("no details", lambda: CompletionUsage(prompt_tokens=2, completion_tokens=3, total_tokens=5), None),
    ("details without a count", lambda: {"prompt_tokens_details": {"audio_tokens": 3}}, None),
]


@pytest.mark.parametrize(("make", "cached"), [(m, c) for _, m, c in CACHED], ids=[n for n, _, _ in CACHED])
def test_openai_cached_input_tokens_are_read_from_every_shape(make: Any, cached: Any) -> None:
    from nexent_autoinstrument.adapters.openai import read_usage

    usage = make()
    assert cached_input(usage) == cached
    recorder = Recorder()
    read_usage(recorder, usage)  # type: ignore[arg-type]
    assert (("cache", (cached, None)) in recorder.facts) == (cached is not None)


def test_malformed_items_are_skipped_without_raising() -> None:
    for chunk in ({"choices": "not a list", "usage": 5}, {"choices": [1, None, "x"]}, {"choices": [{"delta": 3}]}):
        read_chat_event(Recorder(), chunk)  # type: ignore[arg-type]
        read_chat_chunk(Recorder(), ChatCompletionChunk.model_construct(**chunk))  # type: ignore[arg-type]


SKIMS = [
    (skim_chat_event, chat({"content": "x"}), True),
    (skim_chat_event, chat({"content": ""}), False),
    (skim_chat_event, chat({"content": None, "tool_calls": []}), False),
    (skim_chat_event, chat({"content": "x"}, "stop"), False),
    (skim_chat_event, chat({"content": "x"}, usage={"prompt_tokens": 1}), False),
    (skim_chat_event, chat({"content": "x"}, usage=None), True),
    (skim_chat_event, {**chat({"content": "x"}), "choices": chat({"content": "x"})["choices"] * 2}, False),
    (skim_chat_event, chat({"content": '"finish_reason":"stop"'}), True),  # escaped inside the text
    (skim_chat_event, {"choices": [{"index": 0, "delta": {"refusal": "no"}},  # (found by hypothesis)
                                   {"index": 1, "delta": {"content": "x"}, "finish_reason": None}]}, False),
    (skim_completion_event, {"choices": [{"index": 0, "text": "x", "finish_reason": None}]}, True),
    (skim_completion_event, {"choices": [{"index": 0, "text": "", "finish_reason": None}]}, False),
    (skim_completion_event, {"choices": [{"index": 0, "text": "a"}, {"index": 1, "text": "b", "finish_reason": None}]},
     False),
    (skim_response_event, {"type": "response.output_text.delta", "delta": "x"}, True),
    (skim_response_event, {"type": "response.output_text.delta", "delta": ""}, False),
    (skim_response_event, {"type": "response.completed", "response": {}}, False),
]


@pytest.mark.parametrize(("skim", "event", "plain"), SKIMS)
def test_skims_let_only_plain_content_through(skim: Any, event: dict[str, Any], plain: bool) -> None:
    assert skim(json.dumps(event, separators=(",", ":")).encode()) is plain
    assert skim(json.dumps(event).encode()) is False  # another spelling is parsed, never guessed


# -- the other providers ------------------------------------------------------------------------

def test_ndjson_decoder_whole_and_split_anywhere() -> None:
    body = b'{"a":1}\n\n{"b":"x\xc3\xa9"}\r\n{"c":3}\n'
    rng = random.Random(3)
    for _ in range(300):
        decoder, seen, position = NDJSONDecoder(), [], 0
        while position < len(body):
            step = rng.randint(1, 5)
            seen += decoder.feed(body[position:position + step])
            position += step
        assert [json.loads(line) for line in seen] == [{"a": 1}, {"b": "x\u00e9"}, {"c": 3}]
        assert not decoder.pending
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n{"done":true}') == [b'{"a":1}'] and decoder.pending
    assert decoder.feed(b"\n") == [b'{"done":true}']


ANTHROPIC_EVENTS = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 7,
                  "cache_creation_input_tokens": 4}}}, [("usage", (16, None)), ("cache", (7, 4))]),
    ("text", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
     [("content", ("hi",))]),
    ("empty text", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ""}}, []),
    ("tool input", {"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": '{"a'}}, [("content", (None,))]),
    ("thinking", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
     [("content", (None,))]),
    ("signature", {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}},
     []),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 9}}, [("finish_reason", ("end_turn", 0)), ("usage", (None, 9))]),
    ("message_stop", {"type": "message_stop"}, []),
]


@pytest.mark.parametrize(("event", "facts"), [(e, f) for _, e, f in ANTHROPIC_EVENTS],
                         ids=[n for n, _, _ in ANTHROPIC_EVENTS])
def test_anthropic_reader_reads_sdk_objects_and_dicts_alike(event: dict[str, Any], facts: list[Any]) -> None:
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    from_sdk, from_dict = Recorder(), Recorder()
    anthropic_adapter.read_event(from_sdk, TypeAdapter(RawMessageStreamEvent).validate_python(event))  # type: ignore[arg-type]
    anthropic_adapter.read_event(from_dict, event)  # type: ignore[arg-type]
    assert from_sdk.facts == from_dict.facts == facts


def test_anthropic_error_event_and_whole_message() -> None:
    recorder = Recorder()
    anthropic_adapter.read_event(recorder, {"type": "error", "error": {"type": "overloaded_error"}})  # type: ignore[arg-type]
    anthropic_adapter.read_response(recorder, {  # type: ignore[arg-type]
        "id": "msg_1", "type": "message", "model": "claude-x", "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "max_tokens", "usage": {"input_tokens": 3, "output_tokens": 4}})
    assert recorder.facts == [("fail", ("overloaded_error",)), ("finish_reason", ("max_tokens", 0)), ("usage", (3, 4))]


def test_ollama_lines() -> None:
    recorder = Recorder()
    for line in ({"model": "m", "message": {"role": "assistant", "content": "hi"}, "done": False},
                 {"model": "m", "message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False},
                 {"model": "m", "message": {"role": "assistant", "content": ""}, "done": False},
                 {"model": "m", "response": "yo", "done": False},
                 {"model": "m", "message": {"content": ""}, "done": True, "done_reason": "length", "eval_count": 4,
                  "prompt_eval_count": 2, "eval_duration": 2 * 10**9, "load_duration": 5 * 10**8},
                 {"error": "model failed"}):
        ollama_adapter.read_event(recorder, line)  # type: ignore[arg-type]
    assert recorder.facts == [("content", ("hi",)), ("content", (None,)), ("content", ("yo",)),
                              ("finish_reason", ("length", 0)), ("usage", (2, 4)),
                              ("annotate", ({"llm.server.load_duration": 0.5, "llm.server.eval_duration": 2.0,
                                             "llm.server.token_generation_rate": 2.0},)),
                              ("fail", ("stream_error",))]


def test_gemini_chunks() -> None:
    recorder = Recorder()
    for chunk in ({"candidates": [{"content": {"parts": [{"text": "hm", "thought": True}]}}], "responseId": "r1"},
                  {"candidates": [{"content": {"parts": [{"text": "hi"}]}, "index": 0}],
                   "usageMetadata": {"promptTokenCount": 3}},
                  {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f"}}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "thoughtsTokenCount": 1,
                                     "cachedContentTokenCount": 2}},
                  {"error": {"code": 503, "status": "UNAVAILABLE"}}):
        gemini_adapter.read_event(recorder, chunk)  # type: ignore[arg-type]
    assert recorder.facts == [("content", (None,)), ("content", ("hi",)), ("usage", (3, None)),
                              ("finish_reason", ("STOP", 0)), ("content", (None,)), ("usage", (3, 3)),
                              ("cache", (2, None)), ("fail", ("UNAVAILABLE",))]
    assert gemini_adapter.model_from_path("/v1beta/models/gemini-2.0-flash:streamGenerateContent") == "gemini-2.0-flash"
    assert gemini_adapter.provider_for("us-central1-aiplatform.googleapis.com") == "gcp.vertex_ai"


ENDPOINT_CASES = [
    ("/v1/chat/completions", "chat", "openai"), ("/openai/deployments/x/chat/completions", "chat", "openai"),
    ("/v1/messages", "chat", "anthropic"), ("/v1/messages/count_tokens", None, None),
    ("/v1/threads/t1/messages", None, None), ("/api/chat", "chat", "ollama"),
    ("/api/generate", "text_completion", "ollama"), ("/api/tags", None, None),
    ("/v1beta/models/g:streamGenerateContent?alt=sse", "generate_content", "gcp.gemini"),
    ("/v1beta/models/g:generateContent", "generate_content", "gcp.gemini"),
    ("/v1beta/models/g:countTokens", None, None),
]


@pytest.mark.parametrize(("path", "operation", "provider"), ENDPOINT_CASES)
def test_one_endpoint_table_for_every_protocol(path: str, operation: str | None, provider: str | None) -> None:
    endpoint = endpoint_for("POST", path)
    assert (endpoint.operation, endpoint.provider("api.openai.com", False)) == (operation, provider) if endpoint else \
        operation is None
    assert endpoint_for("GET", path) is None


def test_what_a_request_says_per_protocol() -> None:
    ollama, gemini_stream, chat = (endpoint_for("POST", p) for p in ("/api/chat", "/x/models/g:streamGenerateContent",
                                                                       "/v1/chat/completions"))
    assert ollama and gemini_stream and chat
    assert ollama.is_streamed({}) and not ollama.is_streamed({"stream": False}) and ollama.usage_expected({})
    assert gemini_stream.is_streamed({"stream": False})

    class URL:
        path = "/v1beta/models/gemini-x:streamGenerateContent"

    assert gemini_stream.model_of({"model": "ignored"}, URL()) == "gemini-x"
    assert not chat.is_streamed({}) and not chat.usage_expected({"stream": True})
    assert chat.usage_expected({"stream_options": {"include_usage": True}})
    ollama_chat, gemini_call = endpoint_for("POST", "/api/chat"), endpoint_for("POST", "/models/g:generateContent")
    assert ollama_chat is not None and gemini_call is not None
    assert request_attributes({"options": {"temperature": 0.2, "num_predict": 9}}, False,
                              ollama_chat.request_fields) == {"gen_ai.request.temperature": 0.2,
                                                              "gen_ai.request.max_tokens": 9}
    assert request_attributes({"generationConfig": {"topK": 3}, "max_tokens": True}, False,
                              gemini_call.request_fields) == {"gen_ai.request.top_k": 3}
    # Later rows of a protocol's fields win (the newer max_completion_tokens over max_tokens),
    # whatever the body's order; absent, non-numeric fields and another API's fields give nothing.
    assert request_attributes({"max_completion_tokens": 20, "temperature": 0.5, "max_tokens": 10, "seed": "7",
                               "messages": [{"role": "user", "content": "x"}], "options": {"top_k": 3}}, False,
                              chat.request_fields) == {"gen_ai.request.temperature": 0.5,
                                                       "gen_ai.request.max_tokens": 20}


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=[protocol.name for protocol in PROTOCOLS])
def test_a_protocol_is_one_declarative_unit(protocol: Protocol) -> None:
    """Everything about a provider is in its own module's ``PROTOCOL``: every field required (no
    provider inherits another's readers), its readers its own, every route reachable."""
    module = sys.modules[protocol.provider.__module__]
    assert module.PROTOCOL is protocol
    for route in protocol.routes:
        endpoint = endpoint_for("POST", "/any/prefix" + route.suffix)
        assert endpoint is not None and endpoint.protocol is protocol and endpoint.operation == route.operation
        for reader in (route.read_item, route.read_event, route.read_response, route.skim):
            assert reader is None or reader.__module__ == module.__name__, reader
    for schema in (Protocol, Route):
        assert all(field.default is MISSING and field.default_factory is MISSING for field in fields(schema))

"""Bytes of an HTTP body, as the user reads them -> the data of each server-sent event.

``SSEDecoder`` is incremental: it is fed exactly the bytes the user has already pulled, so it
never reads ahead, and returns the ``data`` of each event completed so far. Servers that send
one ``data:`` line per event with ``\\n`` line ends (all the LLM servers we know) take a fast
path of a few C-level calls; anything else (CRLF or CR line ends, comments, ``event:``/``id:``
fields, multi-line data) takes the general path. ``NDJSONDecoder`` does the same for
newline-delimited JSON (Ollama's streams). ``EventFilter`` takes whole events out of an SSE
byte stream and hands on every other byte as it came.

The rules (the WHATWG ``text/event-stream`` interpretation, on bytes):

* A line ends with ``\\r\\n``, ``\\n`` or ``\\r``. A ``\\r`` is a line end the moment it is read:
  the line it ends is acted on at once, and a ``\\n`` that begins the next read is the second
  half of that ``\\r\\n``, not a line of its own. So no event ever waits for the next read (or
  for the end of the body) to be known complete.
* A blank line ends an event; the event is dispatched if it had ``data`` lines, its data being
  their values joined with ``\\n`` (one data line with an empty value is an event with empty
  data). An event without data lines (comments, ``event:``/``id:``/``retry:`` only) is none.
* A line ``name:value`` is a field, one space after the colon being dropped; a line without a
  colon is the field ``name`` with an empty value; a line that begins with ``:`` is a comment.
  Only ``data`` matters here.
* At the end of the body, an event without its blank line is discarded (the spec's rule, and
  the SDKs'): ``finish()`` completes nothing for SSE. NDJSON has no such rule: there
  ``finish()`` gives a last line that came without its line end.
* (A byte-order mark at the very start of the stream is not skipped: no LLM server sends one.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import repeat
from typing import Any


def decode_json(data: bytes | str) -> Any:
    """Parse a JSON document (objects as plain dicts)."""
    return json.loads(data)


#: (Bytes as integers: ``in`` with a bytes operand first tries it as an integer, and raises and
#: clears a TypeError, which costs more than the search.)
_COLON, _LF, _CR = b":"[0], b"\n"[0], b"\r"[0]


def _data_of(block: bytes) -> bytes | None:
    """The data of one event: ``block`` is its lines with ``\\n`` line ends, without its blank
    line (maybe after blank lines that ended no event); None if it has no ``data`` line."""
    if block.startswith(b"data: "):
        if _LF not in block:
            return block[6:]  # one data line: the common case
    elif block.startswith(b"event: ") and block.count(b"\n") == 1:
        at = block.find(b"\ndata: ")
        if at >= 0:
            return block[at + 7:]  # a named event of one data line (Anthropic, Responses)
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data"):
            value = line[4:]
            if value:
                if value[0] != _COLON:
                    continue  # another field whose name begins with "data"
                value = value[2:] if value[1:2] == b" " else value[1:]
            data.append(value)
    return b"\n".join(data) if data else None


def _normalize(raw: bytes) -> bytes:
    """``raw`` with every line end (``\\r\\n``, ``\\r``, ``\\n``) as ``\\n``."""
    raw = raw.replace(b"\r\n", b"\n")
    return raw.replace(b"\r", b"\n") if _CR in raw else raw


def events_of(region: bytes) -> list[bytes]:
    """The data of the events in ``region``, whole events with ``\\n`` line ends, each ending with
    its blank line (``SSEDecoder.feed_region``)."""
    *blocks, _ = region.split(b"\n\n")
    return [data for block in blocks if (data := _data_of(block)) is not None]


class SSEDecoder:
    """Server-sent events from byte chunks split anywhere (mid-line, mid-character, mid-``\\r\\n``)."""

    __slots__ = ("_buffer", "_cr", "idle")

    def __init__(self) -> None:
        self._buffer = b""  # the unfinished event's lines, their line ends made ``\n``
        self._cr = False  # the last read ended with a ``\r``: a ``\n`` that begins the next is its half
        #: Nothing of an unfinished event is held: the next read starts a new one. (An attribute
        #: kept by ``feed``, not a property: it is read before every network read is matched.)
        self.idle = True

    def feed(self, chunk: bytes) -> list[bytes]:
        """The ``data`` of every event that ``chunk`` completes."""
        if self.idle and chunk.startswith(b"data: ") and chunk.find(b"\n") == len(chunk) - 2 \
                and chunk.endswith(b"\n\n") and _CR not in chunk:
            return [chunk[6:-2]]  # one event in one read, as servers flush them: the common case
        if not chunk:
            return []
        if self._cr:
            self._cr = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        if _CR in chunk:
            self._cr = chunk.endswith(b"\r")
            chunk = _normalize(chunk)
        buffer = self._buffer + chunk if self._buffer else chunk
        *blocks, rest = buffer.split(b"\n\n")
        # (Blank lines after an event's end end no event: nothing of one is held.)
        self._buffer = rest.lstrip(b"\n") if rest.startswith(b"\n") else rest
        self.idle = not self._buffer and not self._cr
        events = []
        for block in blocks:
            data = _data_of(block)
            if data is not None:
                events.append(data)
        return events

    def feed_region(self, chunk: bytes) -> bytes | None:
        """``feed`` for a stream with ``\\n`` line ends, without looking into the events: the bytes
        of the whole events ``chunk`` completes, each with its blank line (``events_of`` tells
        their data); nothing (held) if it completes none. None for a read with a ``\\r``, with
        nothing taken: ``feed`` takes it."""
        if self._cr or _CR in chunk:
            return None
        if _LF not in chunk:  # (a piece of a line: held, as a read of a few bytes mostly is)
            if chunk:
                self._buffer += chunk
                self.idle = False
            return b""
        buffer = self._buffer + chunk if self._buffer else chunk
        end = buffer.rfind(b"\n\n") + 2
        if end == 1:
            if buffer.startswith(b"\n"):
                return None  # (blank lines that end no event: ``feed`` drops them)
            self._buffer, self.idle = buffer, False
            return b""
        if end == len(buffer):
            self._buffer, self.idle = b"", True
            return buffer
        # (What follows never begins with a line end: that would be a later blank line.)
        self._buffer, self.idle = buffer[end:], False
        return buffer[:end]

    def finish(self) -> list[bytes]:
        """The body ended: the events its end completes. None: every line end was acted on when
        read (a last lone ``\\r`` too), and an event without its blank line is discarded, as the
        spec says. What was held is dropped; the decoder is as new."""
        self._buffer, self._cr, self.idle = b"", False, True
        return []


class NDJSONDecoder:
    """Newline-delimited JSON (one document per line, as Ollama streams) from byte chunks split
    anywhere: the same ``feed`` as ``SSEDecoder``, each item one line's JSON text. Lines end with
    ``\\n``, ``\\r\\n`` or ``\\r``; blank lines are skipped (so each ``\\r`` ends its line at once:
    the ``\\n`` of a ``\\r\\n``, in this read or the next, leaves only a blank line)."""

    __slots__ = ("_buffer", "idle")

    def __init__(self) -> None:
        self._buffer = b""
        self.idle = True  #: nothing of an unfinished line is held

    def feed(self, chunk: bytes) -> list[bytes]:
        """Every non-blank line that ``chunk`` completes."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if _CR in buffer:
            buffer = buffer.replace(b"\r", b"\n")
        *lines, self._buffer = buffer.split(b"\n")
        self.idle = not self._buffer
        return [line for line in lines if line.strip()]

    @property
    def pending(self) -> bool:
        """A last line without its line end is held (if the body ends there, ``finish`` gives it)."""
        return bool(self._buffer.strip())

    def finish(self) -> list[bytes]:
        """The body ended: the last line, if it came without its line end (and is not blank)."""
        line, self._buffer, self.idle = self._buffer, b"", True
        return [line] if line.strip() else []


#: The end of a blank line: a line end right after another (``\r\n`` is one line end, never
#: ``\r`` then ``\n``; a ``\r`` at the end of what is read is a line end already).
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")


class EventFilter:
    """Takes whole events out of an SSE byte stream and hands on every other byte unchanged.

    An event's bytes run from its first line to the end of the blank line after it (the ``\\n``
    of a ``\\r\\n`` split across reads included); it is taken out if it has data and ``drop(data)``
    says so (its ``data`` found as ``SSEDecoder`` finds it). All other bytes, blank lines
    between events and events without data included, are handed on as they came, as soon as the
    event they belong to is complete: only the unfinished event is held, so what comes out is
    the stream as the server would have sent it without those events. Line ends may be
    ``\\n`` (a fast path), ``\\r\\n``, ``\\r`` or mixed."""

    __slots__ = ("_drop", "_drop_lf", "_held")

    def __init__(self, drop: Callable[[bytes], bool]) -> None:
        self._drop = drop  # (data bytes) -> True for an event to take out
        self._held = b""  # the unfinished event, from its first line
        self._drop_lf = False  # a dropped event ended the last read with \r: a \n next is its half

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` (and of what was held) that can be handed on now."""
        if not chunk:
            return b""
        if self._drop_lf:
            self._drop_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        buffer = self._held + chunk if self._held else chunk
        if _CR in buffer:
            return self._general(buffer)
        end = buffer.rfind(b"\n\n")
        if end < 0:
            if buffer.startswith(b"\n"):  # blank lines that end no event (nothing was held)
                self._held = buffer.lstrip(b"\n")
                return buffer[:len(buffer) - len(self._held)]
            self._held = buffer
            return b""
        if end + 2 == len(buffer):
            ready, self._held = buffer, b""
        else:
            ready, self._held = buffer[:end + 2], buffer[end + 2:]  # (what is held never begins with \n)
        if ready.startswith(b"data: ") and ready.find(b"\n") == end:  # one event of one data line
            return b"" if self._drop(ready[6:end]) else ready
        if ready.find(b"\n\n") == end and ready[0] != _LF:  # one event (named, or with other fields)
            data = _data_of(ready[:end])
            return b"" if data is not None and self._drop(data) else ready
        blocks = ready.split(b"\n\n")  # (the last one is empty, or \n: a blank line after the last event)
        kept: list[bytes] = []
        dropped = False
        for block in blocks[:-1]:
            data = _data_of(block)
            if data is not None and self._drop(data):
                dropped = True
                kept.append(block[:len(block) - len(block.lstrip(b"\n"))])  # (blank lines before it stay)
            else:
                kept.append(block + b"\n\n")
        if not dropped:
            return ready
        kept.append(blocks[-1])
        return b"".join(kept)

    def _general(self, buffer: bytes) -> bytes:
        """``feed`` for a stream with ``\\r`` in its line ends: blank lines found by a regular expression."""
        out: list[bytes] = []
        start = 0
        dropped = False
        for blank in _BLANK_LINE.finditer(buffer):
            lines = buffer[start:blank.start()]
            data = _data_of(_normalize(lines))
            dropped = data is not None and self._drop(data)
            out.append(lines[:len(lines) - len(lines.lstrip(b"\r\n"))] if dropped else buffer[start:blank.end()])
            start = blank.end()
        self._drop_lf = dropped and start == len(buffer) and buffer.endswith(b"\r")
        rest = buffer[start:]
        self._held = rest.lstrip(b"\r\n")  # (blank lines that end no event are handed on)
        out.append(rest[:len(rest) - len(self._held)])
        return b"".join(out)

    def flush(self) -> bytes:
        """What was held back when the body ended (an unfinished event: handed on as it is)."""
        held, self._held, self._drop_lf = self._held, b"", False
        return held


#: The body of a JSON string on one SSE line: no unescaped quote or backslash, no line end.
_TEXT = rb'(?:[^"\\\r\n]|\\[^\r\n])'
_TEXT_RUN = re.compile(_TEXT + b"*")
_NON_EMPTY_TEXT = re.compile(_TEXT + b"+")
_BACKSLASH, _QUOTE = b"\\"[0], b'"'[0]
#: Above this many events in a read, its plain deltas are checked together: one pass of C-level
#: calls costs more than a Python step per event for a few, and less for many.
_MANY_EVENTS = 12


class PlainReads:
    """Recognises, from its bytes alone, a plain content delta: an event that differs from a
    plain delta already seen (``learn``) only in the text of ``key``. ``matches`` takes a network
    read that is exactly such events, one or several; ``matches_data`` the data of one event of a
    read that brought others too.

    Servers write the events of one stream alike (the same id, model, fields, order), so the
    bytes before the text and after it repeat. Cutting them off and checking the text between is
    a few C-level calls, against an SSE split, a skim and a JSON parse. The text must be a
    non-empty JSON string body on one line, so the event's structure is the learned one. When in
    doubt: parsed. (One regular expression serves every stream: a pattern per stream would churn
    the ``re`` module's cache, which the application shares.)"""

    __slots__ = ("_around", "_data_around", "_event_around", "_event_prefix", "_joint", "data_prefix", "data_suffix",
                 "key", "prefix", "suffix")

    def __init__(self, key: bytes) -> None:
        self.key = key  # e.g. b'"content":"', ending where the text's string begins
        self.prefix = self.suffix = b""  # around the text in a read of the event
        self._around = 0  # len(prefix) + len(suffix)
        self._joint = b""  # suffix + prefix: between two such events in a read
        self.data_prefix = self.data_suffix = b""  # around the text in the event's data
        self._data_around = 0
        self._event_prefix = b""  # "data: " and data_prefix: around the text in an event's lines
        self._event_around = 0

    def matches(self, read: bytes) -> int:
        """How many learned plain deltas with other non-empty texts ``read`` is, back to back
        (0: it is anything else)."""
        if not self.prefix:
            return 0
        # (``removeprefix`` and ``removesuffix`` cost a fraction of ``startswith``'s argument
        # parsing; the length tells whether both ends were there.)
        text = read.removeprefix(self.prefix).removesuffix(self.suffix)
        if not text or len(text) != len(read) - self._around:
            return 0
        if _LF in text:  # (several events, or anything else)
            # Between the first event's text and the last's, each joint of two plain deltas is the
            # template's end and its start again: what the cuts there leave are the texts, each
            # checked as ``matches_data`` checks one (any other event leaves a quote or a line end).
            texts = text.split(self._joint)
            joined = b"".join(texts)
            if not all(texts) or _LF in joined:
                return 0
            if _BACKSLASH in joined:
                return len(texts) if all(map(_NON_EMPTY_TEXT.fullmatch, texts)) else 0
            return len(texts) if _QUOTE not in joined and _CR not in joined else 0
        if _BACKSLASH in text:  # escapes: the exact check
            return 1 if _NON_EMPTY_TEXT.fullmatch(text) is not None else 0
        return 1 if _QUOTE not in text and _CR not in text else 0

    def matches_data(self, data: bytes) -> bool:
        """Whether ``data``, one event's, is the learned plain delta's with some other non-empty text."""
        if not self.data_prefix:
            return False
        text = data.removeprefix(self.data_prefix).removesuffix(self.data_suffix)
        if not text or len(text) != len(data) - self._data_around:
            return False
        if _BACKSLASH in text:  # (as in ``matches``, inlined: both run once per chunk)
            return _NON_EMPTY_TEXT.fullmatch(text) is not None
        return _QUOTE not in text and _LF not in text and _CR not in text

    def learn(self, read: bytes, data: bytes) -> None:
        """``data``, an event of ``read`` (all the decoder was given since it last completed an
        event), is a plain content delta. If ``read`` is that one whole event, the bytes around
        its text become the template of a read and of an event's data; else of an event's data,
        unless one is known (and of a read, the event written as one ``data:`` line). A read is
        one event only with ``\\n`` line ends and one ``data`` line (after an ``event`` line, or
        not): a read of any other shape is never learned as a read."""
        data_line = self._one_event(read)
        if data_line is None:
            if self.data_prefix:
                return  # (kept: a read of several events, or a cut one, is no reason to look again)
            found = self._text_in(data, 0)
            if found is not None:
                start, end = found
                self._learn_data(data[:start], data[end:])
                if self._event_prefix:  # (data on one line: a read of it, as servers write events)
                    self._learn_read(self._event_prefix, self.data_suffix + b"\n\n")
            return
        found = self._text_in(read, data_line)
        if found is None:
            return
        start, end = found
        self._learn_read(read[:start], read[end:])
        value = data_line + 5 + (read[data_line + 5:data_line + 6] == b" ")  # (after "data:" and one space)
        self._learn_data(self.prefix[value:], self.suffix[:-2])

    def _learn_read(self, prefix: bytes, suffix: bytes) -> None:
        self.prefix, self.suffix, self._around = prefix, suffix, len(prefix) + len(suffix)
        self._joint = suffix + prefix

    def _learn_data(self, prefix: bytes, suffix: bytes) -> None:
        self.data_prefix, self.data_suffix = prefix, suffix
        self._data_around = len(prefix) + len(suffix)
        # (An event of one data line, as ``sort_events`` finds them: none if the data has several.)
        one_line = _LF not in prefix and _LF not in suffix
        self._event_prefix = b"data: " + prefix if one_line else b""
        self._event_around = self._data_around + 6

    def sort_events(self, region: bytes) -> tuple[int, bytes] | None:
        """Of the whole events in ``region`` (``SSEDecoder.feed_region``): how many are the learned
        plain delta with some other non-empty text (``matches_data``) on one ``data: `` line, and
        the bytes of the others, in their order. None where the region does not begin with a data
        line, or no template is known, or the known one spans several lines."""
        prefix, suffix, around = self._event_prefix, self.data_suffix, self._event_around
        if not prefix or not region.startswith(b"data: "):
            return None
        # (A short separator: CPython prepares the search for a long one anew at every cut, which
        # in a region of many events costs more than the rest of the work.)
        events = region.split(b"\n\n")
        events.pop()  # (what follows the last blank line: nothing, or a line end that ends no event)
        if len(events) > _MANY_EVENTS:
            # The events at either end that are no plain delta (the response's first, its end, its
            # usage) are set aside, and the others checked together, as C-level calls over them all.
            first, last, plain = 0, len(events), self._plain_event
            while first < last and not plain(events[first]):
                first += 1
            while last > first and not plain(events[last - 1]):
                last -= 1
            if self._all_plain(events[first:last]):
                return last - first, b"".join([event + b"\n\n" for event in events[:first] + events[last:]])
        count = 0
        others = []
        # (``_plain_event``, inlined: this runs per event of a read of a few, or of many with an odd one amid them)
        for event in events:
            text = event.removeprefix(prefix).removesuffix(suffix)
            if text and len(text) == len(event) - around and (
                    _NON_EMPTY_TEXT.fullmatch(text) is not None if _BACKSLASH in text
                    else _QUOTE not in text and _LF not in text and _CR not in text):
                count += 1
            else:
                others.append(event + b"\n\n")
        return count, b"".join(others)

    def _plain_event(self, event: bytes) -> bool:
        """Whether ``event``, its lines without the blank line, is one ``data: `` line whose value
        ``matches_data`` takes."""
        return event.startswith(b"data: ") and self.matches_data(event[6:])

    def _all_plain(self, events: list[bytes]) -> bool:
        """Whether every one of ``events`` is what ``_plain_event`` takes, found without a Python
        step per event. (``removeprefix`` and ``removesuffix`` take off exactly the template's
        bytes or nothing, so the lengths add up only if each event lost both.)"""
        texts = list(map(bytes.removesuffix, map(bytes.removeprefix, events, repeat(self._event_prefix)),
                         repeat(self.data_suffix)))
        if not all(texts) or sum(map(len, texts)) != sum(map(len, events)) - self._event_around * len(events):
            return False
        joined = b"".join(texts)
        if _BACKSLASH in joined:
            return all(map(_NON_EMPTY_TEXT.fullmatch, texts))
        return _QUOTE not in joined and _LF not in joined and _CR not in joined

    @staticmethod
    def _one_event(read: bytes) -> int | None:
        """Where the data line begins, if ``read`` is one event of one ``data`` line, maybe named."""
        if read.find(b"\n\n") != len(read) - 2 or _CR in read:
            return None  # (more than one event: found at the first one's end, not after scanning them all)
        lines = read.count(b"\n")
        if lines == 2 and read.startswith(b"data:"):
            return 0
        if lines == 3 and read.startswith(b"event:"):
            data_line = read.find(b"\ndata:") + 1  # (the second line, if any is a data line)
            return data_line or None
        return None

    def _text_in(self, raw: bytes, after: int) -> tuple[int, int] | None:
        """Where the text of ``key`` starts and ends in ``raw``, if ``key`` is there once, from
        ``after`` on, and a JSON string's closing quote follows a non-empty text."""
        start = raw.find(self.key)
        if start < after or raw.find(self.key, start + 1) >= 0:
            return None
        start += len(self.key)
        text = _TEXT_RUN.match(raw, start)
        end = text.end() if text is not None else start
        return (start, end) if end > start and raw[end:end + 1] == b'"' else None


"""Bytes of an HTTP body, as the user reads them -> the data of each server-sent event.

``SSEDecoder`` is incremental: it is fed exactly the bytes the user has already pulled, so it
never reads ahead, and returns the ``data`` of each event completed so far. Servers that send
one ``data:`` line per event with ``\\n`` line ends (all the LLM servers we know) take a fast
path of a few C-level splits; anything else (CRLF or CR line ends, comments, ``event:``/``id:``
fields, multi-line data) takes the general line-by-line path. ``NDJSONDecoder`` does the same for
newline-delimited JSON (Ollama's streams).
"""

from __future__ import annotations

import json
import re
from typing import Any


def decode_json(data: bytes | str) -> Any:
    """Parse a JSON document (objects as plain dicts)."""
    return json.loads(data)


class SSEDecoder:
    """Server-sent events from byte chunks split anywhere (mid-line, mid-character)."""

    __slots__ = ("_buffer", "_data", "idle")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        #: Nothing of an unfinished event is held: the next read starts a new one. (An attribute
        #: kept by ``feed``, not a property: it is read before every network read is matched.)
        self.idle = True

    def feed(self, chunk: bytes) -> list[bytes]:
        """The ``data`` of every event that ``chunk`` completes."""
        if self.idle and chunk.startswith(b"data: ") and chunk.find(b"\n") == len(chunk) - 2 \
                and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            return [chunk[6:-2]]  # one event in one read, as servers flush them: the common case
        events = self._split(self._buffer + chunk if self._buffer else chunk)
        self.idle = not self._buffer and not self._data
        return events

    def _split(self, buffer: bytes) -> list[bytes]:
        """The events completed in ``buffer`` (what was held, then the new read); keeps the rest."""
        if b"\r" in buffer or self._data:
            if self._data or not buffer.count(b"\r") == buffer.count(b"\n") == buffer.count(b"\r\n"):
                events, self._buffer = self._lines(buffer)
                return events
            buffer = buffer.replace(b"\r\n", b"\n")  # CRLF line ends only (Gemini): the same lines, the fast path
        *blocks, self._buffer = buffer.split(b"\n\n")
        events = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                events.append(block[6:])
            elif block.startswith(b"event: ") and block.count(b"\n") == 1 and b"\ndata: " in block:
                events.append(block[block.index(b"\ndata: ") + 7:])  # a named event (Anthropic, Responses)
            elif block:
                events.extend(self._lines(block + b"\n\n")[0])
        return events

    def _lines(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        """The general path: the events completed in ``buffer``, and what is left of it."""
        events: list[bytes] = []
        while True:
            cut = _line_end(buffer)
            if cut is None:
                break
            end, after = cut
            line, buffer = buffer[:end], buffer[after:]
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return events, buffer


class NDJSONDecoder:
    """Newline-delimited JSON (one document per line, as Ollama streams) from byte chunks split
    anywhere: the same ``feed`` as ``SSEDecoder``, each item one line's JSON text."""

    __slots__ = ("_buffer", "idle")

    def __init__(self) -> None:
        self._buffer = b""
        self.idle = True  #: nothing of an unfinished line is held

    def feed(self, chunk: bytes) -> list[bytes]:
        """Every non-blank line that ``chunk`` completes."""
        buffer = self._buffer + chunk if self._buffer else chunk
        *lines, self._buffer = buffer.split(b"\n")
        self.idle = not self._buffer
        return [line for line in lines if line.strip()]

    @property
    def pending(self) -> bool:
        """A last line without its line end is held (the body ended there: ``feed(b"\\n")`` completes it)."""
        return bool(self._buffer.strip())


class EventFilter:
    """Takes whole events out of an SSE byte stream and hands on every other byte unchanged.

    Bytes are held back only until the event they belong to is complete, so what comes out is
    the stream as the server would have sent it without those events. Events separated by
    ``\\n\\n`` (how the servers that take ``stream_options`` write) are filtered; other bytes
    pass through as they are."""

    __slots__ = ("_drop", "_held")

    def __init__(self, drop: Any) -> None:
        self._drop = drop  # (data bytes) -> True for an event to take out
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` (and of what was held) that can be handed on now."""
        buffer = self._held + chunk if self._held else chunk
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._held = buffer
            return b""
        ready, self._held = buffer[:end + 2], buffer[end + 2:]
        return self._filter(ready)

    def flush(self) -> bytes:
        """What was held back when the body ended (an unfinished event: handed on as it is)."""
        held, self._held = self._held, b""
        return held

    def _filter(self, ready: bytes) -> bytes:
        blocks = ready.split(b"\n\n")  # the last one is empty: ``ready`` ends with a separator
        kept = [b for b in blocks[:-1] if not (b.startswith(b"data: ") and b"\n" not in b and self._drop(b[6:]))]
        if len(kept) == len(blocks) - 1:
            return ready
        return b"".join(block + b"\n\n" for block in kept)


#: The body of a JSON string on one SSE line: no unescaped quote or backslash, no line end.
_TEXT = rb'(?:[^"\\\r\n]|\\[^\r\n])'
_TEXT_RUN = re.compile(_TEXT + b"*")
_NON_EMPTY_TEXT = re.compile(_TEXT + b"+")
_BACKSLASH, _QUOTE, _LF, _CR = b"\\"[0], b'"'[0], b"\n"[0], b"\r"[0]


class PlainReads:
    """Recognises, from its bytes alone, a network read that is exactly one event, a plain
    content delta: one that differs from a plain delta already seen (``learn``) only in the text
    of ``key``.

    Servers write the events of one stream alike (the same id, model, fields, order) and flush
    each on its own, so the bytes before the text and after it repeat. Cutting them off and
    checking the text between is a few C-level calls, against an SSE split and a JSON parse. The
    text must be a non-empty JSON string body on one line, so the event's structure is the
    learned one. When in doubt: parsed. (One regular expression serves every stream: a pattern
    per stream would churn the ``re`` module's cache, which the application shares.)"""

    __slots__ = ("_around", "key", "prefix", "suffix")

    def __init__(self, key: bytes) -> None:
        self.key = key  # e.g. b'"content":"', ending where the text's string begins
        self.prefix = self.suffix = b""
        self._around = 0  # len(prefix) + len(suffix)

    def matches(self, read: bytes) -> bool:
        """Whether ``read`` is the learned plain delta with some other non-empty text."""
        if not self.prefix:
            return False
        # (``removeprefix`` and ``removesuffix`` cost a fraction of ``startswith``'s argument
        # parsing; the length tells whether both ends were there.)
        text = read.removeprefix(self.prefix).removesuffix(self.suffix)
        if not text or len(text) != len(read) - self._around:
            return False
        if _BACKSLASH in text:  # escapes: the exact check
            return _NON_EMPTY_TEXT.fullmatch(text) is not None
        # (Integers, not one-byte strings: ``in`` with bytes first tries the operand as an
        # integer and raises and clears a TypeError.)
        return _QUOTE not in text and _LF not in text and _CR not in text

    def learn(self, read: bytes) -> None:
        """``read``, all the decoder was given since it last completed an event, held a plain
        content delta: if it is that one whole event, its bytes around the text become the template."""
        lines = read.count(b"\n")
        one_data_line = lines == 2 and read.startswith(b"data: ")
        named = lines == 3 and read.startswith(b"event: ") and b"\ndata: " in read
        if not read.endswith(b"\n\n") or not (one_data_line or named):
            return  # not one event of one ``data`` line (with or without a name)
        start = read.find(self.key)
        if start < 0 or read.find(self.key, start + 1) >= 0:
            return
        start += len(self.key)
        text = _TEXT_RUN.match(read, start)
        end = text.end() if text is not None else start
        if end > start and read[end:end + 1] == b'"':
            self.prefix, self.suffix = read[:start], read[end:]
            self._around = len(read) - (end - start)


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line of ``buffer`` ends, and where the next begins (\\n, \\r\\n or \\r)."""
    newline = buffer.find(b"\n")
    carriage = buffer.find(b"\r")
    if carriage != -1 and (newline == -1 or carriage < newline):
        if carriage + 1 == len(buffer):
            return None  # a \r at the very end may be half of \r\n
        return carriage, carriage + (2 if buffer[carriage + 1:carriage + 2] == b"\n" else 1)
    if newline == -1:
        return None
    return newline, newline + 1

"""How a streamed answer is written: the wire dialects, and ``Wire``, which writes SSE events or
NDJSON lines in one of them as HTTP chunks."""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Any


class Dropped(Exception):
    """The server cut the connection on purpose."""


#: The wire dialects: each writes the same events of a stream another way.
DIALECTS = {
    "crlf": "every line ends with \\r\\n",
    "cr": "every line ends with \\r alone",
    "nospace": "no space after a field's colon: data:{...}",
    "fields": "in each event a comment line, id: and retry: lines, and event: message where it had no name",
    "gzip": "Content-Encoding: gzip, the body compressed as one stream, flushed after each event",
    "deflate": "Content-Encoding: deflate (zlib), likewise",
    "bytewise": "every byte of the body written and flushed as its own HTTP chunk",
    "usage_first": "OpenAI: the usage chunk before the finish chunks; Anthropic: message_delta before the last delta",
    "no_done": "no [DONE] event (Anthropic: no message_stop)",
}
_EXCLUSIVE = ({"crlf", "cr"}, {"gzip", "deflate"})


@dataclass(frozen=True)
class Dialect:
    """A set of ``DIALECTS`` names, and where to cut the stream (after that many events)."""

    names: frozenset[str] = frozenset()
    cut_after: int | None = None

    @classmethod
    def parse(cls, spec: Any, cut_after: Any = None) -> Dialect:
        """From ``"crlf,gzip"``, ``["crlf", "gzip"]`` or ``"cr,cut_after=3"``; ValueError if unknown."""
        items = spec.split(",") if isinstance(spec, str) else list(spec or ())
        names: set[str] = set()
        for item in items:
            name, _, value = str(item).strip().partition("=")
            if name == "cut_after":
                cut_after = int(value) if cut_after is None else cut_after
            elif name:
                if name not in DIALECTS:
                    raise ValueError(f"unknown dialect {name!r}; known: {', '.join(DIALECTS)}, cut_after=N")
                names.add(name)
        for pair in _EXCLUSIVE:
            if pair <= names:
                raise ValueError(f"dialects {' and '.join(sorted(pair))} exclude each other")
        return cls(frozenset(names), None if cut_after is None else int(cut_after))

    def __contains__(self, name: str) -> bool:
        return name in self.names


class Wire:
    """Writes the events of one streamed answer in a ``Dialect``, as HTTP chunks: SSE events
    (``event``), NDJSON lines (``line``) or binary frames (``frame``), then ``end``. Raises
    ``Dropped`` after the event that ``cut_after`` names."""

    def __init__(self, out: io.BufferedIOBase, dialect: Dialect, newline: bytes = b"\n") -> None:
        self.out, self.dialect = out, dialect
        self.newline = b"\r\n" if "crlf" in dialect else b"\r" if "cr" in dialect else newline
        self.colon = b":" if "nospace" in dialect else b": "
        self.encoding = "gzip" if "gzip" in dialect else "deflate" if "deflate" in dialect else None
        self.compressor = zlib.compressobj(wbits=31 if self.encoding == "gzip" else 15) if self.encoding else None
        self.events = 0

    def event(self, data: bytes, name: str | None = None) -> None:
        """One server-sent event: its fields, its ``data`` line and the blank line after it."""
        if "no_done" in self.dialect and (data == b"[DONE]" or name == "message_stop"):
            return
        fields: list[tuple[bytes, bytes]] = []
        if "fields" in self.dialect:
            fields += [(b"", b"keep-alive"), (b"id", str(self.events + 1).encode()), (b"retry", b"3000")]
            name = name or "message"
        if name:
            fields.append((b"event", name.encode()))
        fields.append((b"data", data))
        lines = [key + self.colon + value if key else b": " + value for key, value in fields]
        self._send(self.newline.join(lines) + self.newline * 2)

    def line(self, data: bytes) -> None:
        """One NDJSON line."""
        self._send(data + self.newline)

    def frame(self, data: bytes) -> None:
        """One binary frame (Bedrock's event stream), as it is."""
        self._send(data)

    def end(self) -> None:
        """The compressed stream's end, and the chunked body's."""
        if self.compressor is not None:
            self._chunk(self.compressor.flush())
        self.out.write(b"0\r\n\r\n")
        self.out.flush()

    def _send(self, raw: bytes) -> None:
        if self.compressor is not None:
            raw = self.compressor.compress(raw) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        self._chunk(raw)
        self.events += 1
        if self.dialect.cut_after is not None and self.events >= self.dialect.cut_after:
            raise Dropped

    def _chunk(self, raw: bytes) -> None:
        pieces = [raw[i:i + 1] for i in range(len(raw))] if "bytewise" in self.dialect else [raw] if raw else []
        for piece in pieces:
            self.out.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.out.flush()

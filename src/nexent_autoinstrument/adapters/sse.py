"""Bytes of an HTTP body, as the user reads them -> JSON documents, for the raw httpx layer.

``SSEDecoder`` is incremental: it is fed exactly the bytes the user has already pulled, so it
never reads ahead, and returns the ``data`` of each event completed so far.
"""

from __future__ import annotations

import json
from typing import Any


class AttrDict(dict[str, Any]):
    """A JSON object whose fields read as attributes (missing ones as None), like SDK objects,
    so the chunk readers in ``adapters.openai`` serve both."""

    __slots__ = ()
    __getattr__ = dict.get


def decode_json(data: bytes | str) -> Any:
    """Parse JSON with objects as ``AttrDict``."""
    return json.loads(data, object_hook=AttrDict)


class SSEDecoder:
    """Server-sent events from byte chunks split anywhere (mid-line, mid-character)."""

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The ``data`` of every event that ``chunk`` completes."""
        events: list[bytes] = []
        buffer = self._buffer + chunk
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
        self._buffer = buffer
        return events


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

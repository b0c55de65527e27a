"""How the HTTP layer saw a call's body arrive: written by it (``instrumentors.exchange``), one
object per HTTP attempt, and read by the call's tracker, which measures from it."""

from __future__ import annotations

#: A network read that returned sooner than this found its data waiting (in the socket or in
#: the HTTP parser's buffer): it took microseconds, while a read that waits for the server takes
#: at least the gap between two of its writes.
WAITED_READ_SECONDS = 0.0002


class ReadTiming:
    """The reads of one response body, as the caller made them, and the request's phases. Per
    read the HTTP layer only stores clock readings; the tracker judges them for the reads that
    brought content (``CallTracker.content``)."""

    __slots__ = ("asked", "by_arrival", "connection_reused", "headers_at", "previous_read_time", "read_time",
                 "reader_seconds", "request_sent", "timed")

    def __init__(self) -> None:
        #: Whether the HTTP layer times the body's reads (from when reading starts; False: the tracker
        #: reads the clock itself).
        self.timed = False
        #: The reads are the connection's, timed as the data arrived, not the caller's (aiohttp reads
        #: ahead of its caller): each is then asked for when the previous one arrived, and the
        #: caller's pace is not in them.
        self.by_arrival = False
        #: The latest read, in clock readings: when it returned (the arrival of the content it
        #: completed), when the caller asked for it, and when the read before it returned. (How long
        #: it waited and how long the caller had been away are differences the tracker takes only
        #: for the reads that brought content.)
        self.read_time = 0.0
        self.asked = 0.0
        self.previous_read_time = 0.0
        #: The caller's own time between reads (seconds).
        self.reader_seconds = 0.0
        #: When the request was on the wire, and its response headers in (clock), and whether the
        #: connection had carried a request before.
        self.request_sent: float | None = None
        self.headers_at: float | None = None
        self.connection_reused: bool | None = None


#: The timing of a call whose reads nobody times (the manual API, an SDK without the HTTP layer).
UNTIMED = ReadTiming()

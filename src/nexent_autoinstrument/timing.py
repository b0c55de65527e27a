"""How the HTTP layer saw a call's body arrive: written by it (``instrumentors.exchange``), one
object per HTTP attempt, and read by the call's tracker, which measures from it."""

from __future__ import annotations


class ReadTiming:
    """The reads of one response body, as the caller made them, and the request's phases."""

    __slots__ = ("connection_reused", "fresh", "headers_at", "read_time", "reader_seconds", "reads", "request_sent")

    def __init__(self) -> None:
        #: Per network read: True when the read waited for its data (the next content chunk
        #: arrived just now), False when the data was there already (it arrived earlier, while the
        #: caller was busy, or with an earlier chunk); None while nobody times the reads.
        self.fresh: bool | None = None
        #: When the latest read returned (clock): the arrival of the content it completed.
        self.read_time = 0.0
        #: How many reads returned (the tracker takes one arrival per read).
        self.reads = 0
        #: The caller's own time between reads (seconds).
        self.reader_seconds = 0.0
        #: When the request was on the wire, and its response headers in (clock), and whether the
        #: connection had carried a request before.
        self.request_sent: float | None = None
        self.headers_at: float | None = None
        self.connection_reused: bool | None = None


#: The timing of a call whose reads nobody times (the manual API, an SDK without the HTTP layer).
UNTIMED = ReadTiming()

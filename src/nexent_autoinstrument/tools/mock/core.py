"""What every protocol of the mock LLM shares: its settings (``MockConfig``), the answer a
generation request gets before a protocol shapes it (``answer``), and ``Call``, one request being
answered: JSON answers, streams written through ``Wire``, tokens on schedule."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .wire import Dialect, Dropped, Wire

if TYPE_CHECKING:
    from ...adapters.bedrock import Operation
    from ...adapters.endpoints import Endpoint
    from .server import MockLLMHandler

WORDS = ("the", "model", "streams", "tokens", "one", "at", "a", "time", "while", "the", "agent",
         "measures", "each", "gap", "between", "them", "and", "reports", "latency", "rates")
DEFAULT_TOOL_CALL = {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}


@dataclass(frozen=True, kw_only=True)
class Sample:
    """A request a client of the protocol sends to one of its routes: what tests send to each
    route of the registry, and what the agent must report for it."""

    path: str  # when it streams
    whole_path: str  # when it does not
    body: dict[str, Any]
    provider: str  # the gen_ai.provider.name expected
    model: str  # the requested model
    response_model: str | None  # the model the answer names (None: it names none)
    stream_in_body: bool  # the body says whether it streams (else the path does)
    stream_error: str  # the error.type of the error event the mock sends mid-stream (mock_error_event)

    def request(self, stream: bool, **extra: Any) -> tuple[str, dict[str, Any]]:
        """(path, body) of the request, streamed or not, with ``extra`` (``mock_*``) in its body."""
        body = {**self.body, **extra}
        if self.stream_in_body:
            body["stream"] = stream
        return (self.path if stream else self.whole_path), body


@dataclass(frozen=True)
class MockConfig:
    """How the mock LLM behaves unless a request says otherwise."""

    ttft: float = 0.05
    itl: float = 0.01
    tokens: int = 20
    jitter: float = 0.0
    error_rate: float = 0.0
    drop_after: int | None = None
    error_status: int | None = None
    stall_at: int | None = None
    stall: float = 0.0
    reject_stream_options: bool = False  # answer 400 to any body with stream_options, as some servers do
    dialect: str | tuple[str, ...] = ()  # how streams are written (see ``DIALECTS``), e.g. "crlf,gzip"
    cut_after: int | None = None  # close the connection right after this many events of a stream


class ErrorEvent(Exception):
    """The mock ends a stream with the protocol's error event here (``mock_error_event``)."""


# -- what is answered -----------------------------------------------------------------------------


def words(count: int, as_json: bool = False) -> list[str]:
    """``count`` token strings; as a JSON object {"answer": ...} when structured output was asked for."""
    result = [WORDS[i % len(WORDS)] + " " for i in range(count)]
    if as_json and count >= 2:
        result[0], result[-1] = '{"answer": "' + result[0], result[-1].strip() + '"}'
    return result


def pieces(text: str) -> list[str]:
    """``text`` cut into word-sized chunks that join back to exactly ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def slices(text: str, size: int = 6) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


@dataclass
class Answer:
    """What a generation request is answered with: one delta per scheduled token, per choice
    (OpenAI's chat deltas; the other protocols reshape them)."""

    deltas: list[dict[str, Any]]  # chat deltas; for text completions only "content" is used
    n: int
    finish_reasons: list[str]
    tool_call: dict[str, Any] | None
    call_id: str

    def text(self, key: str) -> str | None:
        parts = [d[key] for d in self.deltas if key in d]
        return "".join(parts) if parts else None


def answer(body: dict[str, Any], tokens: int) -> Answer:
    """The answer ``body`` asks for (``mock_content``, ``mock_tool_call``, ``mock_refusal``,
    ``mock_reasoning``, ``mock_n``, ``mock_finish_reason``), else ``tokens`` words."""
    content = body.get("mock_content")
    if isinstance(content, list):
        chunks = [str(p) for p in content]
    elif isinstance(content, str):
        chunks = pieces(content)
    else:
        chunks = words(tokens, wants_json(body))
    tool = body.get("mock_tool_call")
    tool = {**DEFAULT_TOOL_CALL, **tool} if isinstance(tool, dict) else DEFAULT_TOOL_CALL if tool else None
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    deltas: list[dict[str, Any]] = [{"reasoning_content": p} for p in pieces(str(body.get("mock_reasoning") or ""))]
    if tool:
        deltas.append({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                       "function": {"name": tool["name"], "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                   for piece in slices(tool["arguments"])]
    elif body.get("mock_refusal"):
        deltas += [{"refusal": p} for p in pieces(str(body["mock_refusal"]))]
    else:
        deltas += [{"content": p} for p in chunks]
    n = int(body.get("mock_n") or body.get("n") or 1)
    finish = body.get("mock_finish_reason") or ("tool_calls" if tool else "stop")
    finish_reasons = [str(f) for f in finish] if isinstance(finish, list) else [str(finish)] * n
    return Answer(deltas, n, (finish_reasons * n)[:n], tool, call_id)


def wants_json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    return isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object")


def prompt_tokens(body: dict[str, Any]) -> int:
    text = json.dumps(body.get("messages") or body.get("prompt") or body.get("input") or body.get("contents") or "")
    return max(1, len(text) // 4)


def int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# -- one request being answered -------------------------------------------------------------------


class Call:
    """One generation request, answered by a protocol module's handler through this: ``json`` for a
    whole answer; ``start_stream``, then ``event`` (SSE) or ``wire.line`` (NDJSON), then ``end``
    for a stream; ``schedule`` and ``timed`` pace the tokens."""

    wire: Wire

    def __init__(self, handler: MockLLMHandler, endpoint: Endpoint | Operation, body: dict[str, Any],
                 config: MockConfig,
                 started: float, dialect: Dialect, timeline: dict[str, Any] | None) -> None:
        self.handler, self.endpoint, self.body, self.config = handler, endpoint, body, config
        self.started, self.dialect, self.timeline = started, dialect, timeline
        #: ``mock_error_event``: ``timed`` ends the stream with ``ErrorEvent`` after that many pieces.
        self.error_after = int_or_none(body.get("mock_error_event"))

    @property
    def path(self) -> str:
        """The request's path, without its query."""
        return self.handler.path.split("?")[0]

    def json(self, status: int, payload: Any) -> None:
        self.handler.send_json(status, payload)

    def start_sse(self) -> None:
        self.start_stream("text/event-stream", cache_control=True)

    def start_stream(self, content_type: str, newline: bytes = b"\n", cache_control: bool = False) -> None:
        """The headers of a streamed answer; its events then go through ``self.wire``, in the
        request's dialect, with ``newline`` as the protocol's own line end."""
        handler = self.handler
        self.wire = Wire(handler.wfile, self.dialect, newline)
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        if self.wire.encoding:
            handler.send_header("Content-Encoding", self.wire.encoding)
        if cache_control:
            handler.send_header("Cache-Control", "no-cache")
        handler.common_headers()
        handler.end_headers()

    def event(self, payload: Any, name: str | None = None) -> None:
        """One SSE event: ``payload`` as compact JSON (as OpenAI writes it), or as it is when it is a
        string (``[DONE]``)."""
        text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        self.wire.event(text.encode(), name)

    def end(self) -> None:
        self.wire.end()

    def schedule(self, config: MockConfig) -> Iterator[int]:
        """Yield once per token, at the configured time of that token (noted in the request's
        timeline, when it has a ``mock_label``: the server-side truth tests compare with)."""
        rng = self.handler.server.rng
        sent = self.timeline.get("tokens") if self.timeline is not None else None
        for index in range(config.tokens):
            if config.drop_after is not None and index >= config.drop_after:
                raise Dropped
            due = self.started + config.ttft + index * config.itl
            if config.stall_at is not None and index >= config.stall_at:
                due += config.stall
            if config.jitter:
                due += rng.uniform(-config.jitter, config.jitter) * config.itl
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if sent is not None:
                sent.append(time.perf_counter())
            yield index

    def timed(self, config: MockConfig, items: list[Any]) -> Iterator[tuple[Any, float]]:
        """``(item, when it was sent)`` for each item, on the schedule; a protocol error event
        (``mock_error_event``: after that many items) ends the stream with ``ErrorEvent``."""
        for index in self.schedule(replace(config, tokens=len(items))):
            if self.error_after is not None and index >= self.error_after:
                raise ErrorEvent
            yield items[index], time.perf_counter()
        if self.error_after is not None:
            raise ErrorEvent

"""A mock OpenAI-compatible LLM server, for the demo, the tests and dashboards without an API key.

Serves ``/v1/chat/completions`` (streaming, with ``stream_options.include_usage``, and ``n``
choices), ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses`` (streaming and not) and
``/v1/models``. Timing is scheduled from the moment the request arrives, so the time to first
token and the gaps between tokens are what was configured, plus jitter. Next to them, with
realistic shapes and no state: stored chat completions (list, retrieve, update, delete, messages),
``/v1/responses/{id}`` (retrieve, delete, cancel, input_items), ``/v1/models/{id}`` and
``/v1/moderations``.

Per request, a JSON body may override the server's defaults with ``mock_ttft``,
``mock_itl`` (seconds between tokens), ``mock_tokens``, ``mock_error`` (an HTTP status to
answer with), ``mock_drop_after`` (cut the connection after that many content chunks),
``mock_stall_at`` with ``mock_stall`` (pause that many seconds before that token),
``mock_fail_attempts`` (answer ``mock_fail_status``, default 503, until the SDK's
``x-stainless-retry-count`` reaches it), and shape what is answered with ``mock_content``
(the exact text, or a list of the chunks), ``mock_n`` (choices, like ``n``),
``mock_finish_reason`` (one, or a list per choice), ``mock_tool_call`` (``true`` or
``{"name", "arguments"}``), ``mock_refusal`` and ``mock_reasoning`` (text; reasoning is sent as
``reasoning_content`` before the answer), ``mock_stream_usage`` (a usage chunk even when not
asked for) and ``mock_reject_stream_options`` (answer 400 when the body has ``stream_options``,
as some OpenAI-compatible servers do; ``MockConfig.reject_stream_options`` makes a whole
server do so).

A request's ``mock_label`` names it: its timeline (arrival, each token's send time) is kept for
in-process tests, and ``GET /mock/requests/<label>`` says how many requests carried it (what a
server received, for tests in other processes).

Wire dialects: ``mock_dialect`` (a name, a comma-separated string or a list; ``MockConfig.dialect``
and ``--dialect`` for a whole server, which a request's own replaces) changes how the same events
of every stream (OpenAI's and Anthropic's SSE, Gemini's SSE, Ollama's NDJSON) are written:
``crlf`` or ``cr`` line ends, ``nospace`` (``data:{...}``), ``fields`` (a comment, ``id:`` and
``retry:`` lines in each event, and ``event: message`` where it had no name), ``gzip`` or
``deflate`` (a compressed body, flushed after each event), ``bytewise`` (each byte its own HTTP
chunk), ``usage_first`` (OpenAI's usage chunk before the finish chunks; Anthropic's
``message_delta`` before the last content delta), ``no_done`` (no ``[DONE]``; Anthropic: no
``message_stop``). ``mock_cut_after`` (or ``cut_after=N`` in the dialect) closes the connection
right after the Nth event, without the chunked body's end. ``Wire`` writes them all.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORDS = ("the", "model", "streams", "tokens", "one", "at", "a", "time", "while", "the", "agent",
         "measures", "each", "gap", "between", "them", "and", "reports", "latency", "rates")


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


class _Dropped(Exception):
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
    (``event``) or NDJSON lines (``line``), then ``end``. Raises ``_Dropped`` after the event
    that ``cut_after`` names."""

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
            raise _Dropped

    def _chunk(self, raw: bytes) -> None:
        pieces = [raw[i:i + 1] for i in range(len(raw))] if "bytewise" in self.dialect else [raw] if raw else []
        for piece in pieces:
            self.out.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.out.flush()


def _words(count: int, as_json: bool = False) -> list[str]:
    """``count`` token strings; as a JSON object {"answer": ...} when structured output was asked for."""
    words = [WORDS[i % len(WORDS)] + " " for i in range(count)]
    if as_json and count >= 2:
        words[0], words[-1] = '{"answer": "' + words[0], words[-1].strip() + '"}'
    return words


def _pieces(text: str) -> list[str]:
    """``text`` cut into word-sized chunks that join back to exactly ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def _slices(text: str, size: int = 6) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


DEFAULT_TOOL_CALL = {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                         "sexual/minors", "violence", "violence/graphic")


@dataclass
class _Answer:
    """What a generation request is answered with: one delta per scheduled token, per choice."""

    deltas: list[dict[str, Any]]  # chat deltas; for text completions only "content" is used
    n: int
    finish_reasons: list[str]
    tool_call: dict[str, Any] | None
    call_id: str

    def text(self, key: str) -> str | None:
        parts = [d[key] for d in self.deltas if key in d]
        return "".join(parts) if parts else None


def _answer(body: dict[str, Any], tokens: int) -> _Answer:
    content = body.get("mock_content")
    if isinstance(content, list):
        pieces = [str(p) for p in content]
    elif isinstance(content, str):
        pieces = _pieces(content)
    else:
        pieces = _words(tokens, _wants_json(body))
    tool = body.get("mock_tool_call")
    tool = {**DEFAULT_TOOL_CALL, **tool} if isinstance(tool, dict) else DEFAULT_TOOL_CALL if tool else None
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    deltas: list[dict[str, Any]] = [{"reasoning_content": p} for p in _pieces(str(body.get("mock_reasoning") or ""))]
    if tool:
        deltas.append({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                       "function": {"name": tool["name"], "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                   for piece in _slices(tool["arguments"])]
    elif body.get("mock_refusal"):
        deltas += [{"refusal": p} for p in _pieces(str(body["mock_refusal"]))]
    else:
        deltas += [{"content": p} for p in pieces]
    n = int(body.get("mock_n") or body.get("n") or 1)
    finish = body.get("mock_finish_reason") or ("tool_calls" if tool else "stop")
    finish_reasons = [str(f) for f in finish] if isinstance(finish, list) else [str(finish)] * n
    return _Answer(deltas, n, (finish_reasons * n)[:n], tool, call_id)


def _wants_json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    return isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object")


def _prompt_tokens(body: dict[str, Any]) -> int:
    text = json.dumps(body.get("messages") or body.get("prompt") or body.get("input") or body.get("contents") or "")
    return max(1, len(text) // 4)


class MockLLMHandler(BaseHTTPRequestHandler):
    """One request to the mock LLM."""

    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY, as real servers set it: without it a token written after a quiet moment on a
    #: reused connection waits for the client's delayed ACK (up to 40 ms on Linux).
    disable_nagle_algorithm = True
    server: MockLLMServer
    _timeline: dict[str, Any] | None = None
    _dialect = Dialect()  # how this request's stream is written
    _wire: Wire

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # -- plumbing --------------------------------------------------------------------------------

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers()
        if status >= 500 or status == 429:
            self.send_header("retry-after-ms", "10")  # keeps SDK retries fast in tests
        if status == 429:
            self.send_header("retry-after", "1")
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self) -> None:
        self._start_stream("text/event-stream", cache_control=True)

    def _start_stream(self, content_type: str, newline: bytes = b"\n", cache_control: bool = False) -> None:
        """The headers of a streamed answer; its events then go through ``self._wire``, in the
        request's dialect, with ``newline`` as the protocol's own line end."""
        self._wire = Wire(self.wfile, self._dialect, newline)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        if self._wire.encoding:
            self.send_header("Content-Encoding", self._wire.encoding)
        if cache_control:
            self.send_header("Cache-Control", "no-cache")
        self._common_headers()
        self.end_headers()

    def _common_headers(self) -> None:
        """What OpenAI sends with every answer: a request id, processing time, rate limits (and
        Anthropic's request id)."""
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:12]}")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
        self.send_header("openai-processing-ms", "7")
        self.send_header("x-ratelimit-remaining-requests", "4999")
        self.send_header("x-ratelimit-remaining-tokens", "159000")
        self.send_header("x-ratelimit-reset-requests", "12ms")

    def _send_event(self, payload: Any, event: str | None = None) -> None:
        self._wire.event((payload if isinstance(payload, str) else json.dumps(payload)).encode(), event)

    def _end_sse(self) -> None:
        self._wire.end()

    def _config_for(self, body: dict[str, Any]) -> MockConfig:
        config = self.server.config
        casts: dict[str, Callable[[Any], Any]] = {
            "ttft": float, "itl": float, "tokens": int, "drop_after": int, "stall_at": int, "stall": float,
            "cut_after": int, "dialect": lambda spec: spec if isinstance(spec, str) else tuple(spec or ())}
        overrides = {field: cast(body[f"mock_{field}"]) for field, cast in casts.items() if f"mock_{field}" in body}
        if "mock_error" in body:
            overrides["error_status"] = int(body["mock_error"])
        retry = int(self.headers.get("x-stainless-retry-count") or 0)
        if retry < int(body.get("mock_fail_attempts", 0)):
            overrides["error_status"] = int(body.get("mock_fail_status", 503))
        config = replace(config, **overrides)
        limit = body.get("max_tokens") or body.get("max_output_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and limit > 0:
            config = replace(config, tokens=min(config.tokens, limit))
        return config

    def _schedule(self, config: MockConfig, started: float) -> Any:
        """Yield once per token, at the configured time of that token (noted in the request's
        timeline, when it has a ``mock_label``: the server-side truth tests compare with)."""
        rng = self.server.rng
        sent = self._timeline.get("tokens") if self._timeline is not None else None
        for index in range(config.tokens):
            if config.drop_after is not None and index >= config.drop_after:
                raise _Dropped
            due = started + config.ttft + index * config.itl
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

    # -- routes ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        parts = self._route()
        routes = {("chat", "completions", "*"): lambda: self._stored_completion(parts[2]),
                  ("chat", "completions", "*", "messages"): lambda: self._list([{
                      "id": f"{parts[2]}-0", "role": "user", "content": "hello", "name": None,
                      "content_parts": None}]),
                  ("chat", "completions"): lambda: self._list([self._stored_completion("chatcmpl-stored1"),
                                                                 self._stored_completion("chatcmpl-stored2")]),
                  ("responses", "*"): lambda: self._response_object(parts[1], "completed", "stored answer"),
                  ("responses", "*", "input_items"): lambda: self._list([{
                      "id": "msg_input1", "type": "message", "role": "user", "status": "completed",
                      "content": [{"type": "input_text", "text": "hello"}]}]),
                  ("models",): lambda: {"object": "list", "data": [
                      {"id": m, "object": "model", "created": 0, "owned_by": "mock"}
                      for m in ("mock-gpt", "mock-gpt-mini", "mock-embed")]},
                  ("models", "*"): lambda: {"id": parts[1], "object": "model", "created": 0,
                                            "owned_by": "mock"}}
        if self.path == "/health":
            self._json(200, {"status": "ok"})
        elif self.path.startswith("/mock/requests/"):  # how many requests carried this mock_label
            label = self.path.removeprefix("/mock/requests/")
            self._json(200, {"count": self.server.timelines.get(label, {}).get("count", 0)})
        else:
            self._answer_route(routes, parts)

    def do_DELETE(self) -> None:
        parts = self._route()
        self._answer_route({("chat", "completions", "*"): lambda: {
                                "id": parts[2], "object": "chat.completion.deleted", "deleted": True},
                            ("responses", "*"): lambda: {"id": parts[1], "object": "response.deleted",
                                                         "deleted": True}}, parts)

    def _route(self) -> list[str]:
        """The path's segments after ``/v1``: ``/v1/chat/completions/x`` -> ["chat", "completions", "x"]."""
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        return parts[1:] if parts[:1] == ["v1"] else parts

    def _answer_route(self, routes: dict[tuple[str, ...], Any], parts: list[str]) -> None:
        for pattern, answer in routes.items():
            if len(pattern) == len(parts) and all(p in ("*", q) for p, q in zip(pattern, parts, strict=True)):
                self._json(200, answer())
                return
        self._json(404, {"error": {"message": f"Invalid URL ({self.command} {self.path})",
                                   "type": "invalid_request_error", "param": None, "code": None}})

    @staticmethod
    def _list(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"object": "list", "data": items, "first_id": items[0]["id"], "last_id": items[-1]["id"],
                "has_more": False}

    @staticmethod
    def _stored_completion(cid: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"id": cid, "object": "chat.completion", "created": 1700000000, "model": "mock-gpt",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "stored answer"},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                "metadata": metadata or {}}

    def do_POST(self) -> None:
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        self.server.record_request(self.path, dict(self.headers), body)
        if isinstance(body, dict) and isinstance(body.get("options"), dict):  # Ollama's SDK: options={...}
            body = {**{k: v for k, v in body["options"].items() if str(k).startswith("mock_")}, **body}
        protocol = _protocol(self.path)
        self._timeline = None
        if isinstance(body, dict) and body.get("mock_label"):
            label = str(body["mock_label"])
            self._timeline = self.server.timelines[label] = {
                "arrived": time.perf_counter(), "tokens": [], "peer": self.client_address[1],
                "count": self.server.timelines.get(label, {}).get("count", 0) + 1}
        try:
            config = self._config_for(body)
            self._dialect = Dialect.parse(config.dialect, config.cut_after)
        except (TypeError, ValueError) as bad:
            self._json(400, {"error": {"message": f"invalid mock override: {bad}", "type": "invalid_request_error"}})
            return
        status = config.error_status
        if status is None and config.error_rate and self.server.rng.random() < config.error_rate:
            status = 500
        if status is not None:
            time.sleep(min(config.ttft, 0.05))
            self._json(status, ERROR_BODIES[protocol](status))
            return
        rejects = self.server.config.reject_stream_options or body.get("mock_reject_stream_options")
        if rejects and "stream_options" in body:
            self._json(400, {"error": {"message": "Unrecognized request argument supplied: stream_options",
                                       "type": "invalid_request_error", "param": None, "code": None}})
            return
        parts = self._route()
        last = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]  # any prefix: /v1, Azure deployments
        handler = {"completions": self._completions, "embeddings": self._embeddings,
                   "responses": self._responses}.get(last) if protocol is None else getattr(self, f"_{protocol}")
        if handler is None:
            self._answer_route({
                ("chat", "completions", "*"): lambda: self._stored_completion(parts[2], body.get("metadata")),
                ("responses", "*", "cancel"): lambda: self._response_object(parts[1], "cancelled", None),
                ("moderations",): lambda: self._moderation(body)}, parts)
            return
        try:
            handler(body, config, started)
        except _Dropped:
            self.close_connection = True
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _moderation(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input") or [""]
        result = {"flagged": False, "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
                  "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 0.0001),
                  "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES}}
        return {"id": f"modr-{uuid.uuid4().hex[:16]}", "model": body.get("model") or "omni-moderation-latest",
                "results": [result for _ in (inputs if isinstance(inputs, list) else [inputs])]}

    def _completions(self, body: dict[str, Any], config: MockConfig, started: float) -> None:
        chat = self.path.split("?")[0].rstrip("/").endswith("chat/completions")
        model = body.get("model", "mock-gpt")
        cid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        answer = _answer(body, config.tokens)
        deltas = answer.deltas if chat else [{"content": d["content"]} for d in answer.deltas if "content" in d]
        config = replace(config, tokens=len(deltas))
        generated = len(deltas) * answer.n
        usage = {"prompt_tokens": _prompt_tokens(body), "completion_tokens": generated,
                 "total_tokens": _prompt_tokens(body) + generated}
        obj = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            for _ in self._schedule(config, started):
                pass
            choices = []
            for index in range(answer.n):
                if not chat:
                    choices.append({"index": index, "text": answer.text("content") or "",
                                    "finish_reason": answer.finish_reasons[index], "logprobs": None})
                    continue
                content = answer.text("content")
                answered = answer.tool_call or answer.text("refusal") is not None
                message: dict[str, Any] = {"role": "assistant", "content": content if answered else content or ""}
                for key in ("refusal", "reasoning_content"):
                    if answer.text(key) is not None:
                        message[key] = answer.text(key)
                if answer.tool_call:
                    message["tool_calls"] = [{"id": answer.call_id, "type": "function",
                                              "function": dict(answer.tool_call)}]
                choices.append({"index": index, "message": message, "finish_reason": answer.finish_reasons[index],
                                "logprobs": None})
            self._json(200, {"id": cid, "object": obj, "created": int(time.time()), "model": model,
                             "choices": choices, "usage": usage})
            return
        created = int(time.time())
        self._start_sse()

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = ({"index": index, "delta": delta, "finish_reason": finish, "logprobs": None} if chat else
                      {"index": index, "text": delta.get("content", ""), "finish_reason": finish, "logprobs": None})
            return {"id": cid, "object": f"{obj}.chunk" if chat else obj, "created": created,
                    "model": model, "choices": [choice]}

        if chat:
            for index in range(answer.n):
                self._send_event(chunk(index, {"role": "assistant", "content": ""}))
        for token in self._schedule(config, started):
            for index in range(answer.n):
                self._send_event(chunk(index, deltas[token]))
        usage_chunk = {"id": cid, "object": f"{obj}.chunk" if chat else obj, "created": created,
                       "model": model, "choices": [], "usage": usage}
        with_usage = (body.get("stream_options") or {}).get("include_usage") or body.get("mock_stream_usage")
        if with_usage and "usage_first" in self._dialect:
            self._send_event(usage_chunk)
        for index in range(answer.n):
            self._send_event(chunk(index, {}, answer.finish_reasons[index]))
        if with_usage and "usage_first" not in self._dialect:
            self._send_event(usage_chunk)
        self._send_event("[DONE]")
        self._end_sse()

    def _embeddings(self, body: dict[str, Any], config: MockConfig, started: float) -> None:
        inputs = body.get("input") or [""]
        inputs = inputs if isinstance(inputs, list) else [inputs]
        time.sleep(max(0.0, started + config.ttft - time.perf_counter()))
        tokens = _prompt_tokens(body)
        self._json(200, {"object": "list", "model": body.get("model", "mock-embed"),
                         "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]}
                                  for i in range(len(inputs))],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @staticmethod
    def _response_object(rid: str, status: str, text: str | None, model: str = "mock-gpt",
                         usage: dict[str, Any] | None = None, mid: str = "msg_stored1",
                         tool: dict[str, Any] | None = None, call_id: str = "") -> dict[str, Any]:
        """A Responses API ``response`` object with one message (or function call) output."""
        output: list[dict[str, Any]] = []
        if tool:
            output.append({"type": "function_call", "id": mid.replace("msg_", "fc_"), "call_id": call_id,
                           "name": tool["name"], "arguments": tool["arguments"], "status": "completed"})
        elif text is not None:
            output.append({"type": "message", "id": mid, "status": "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": text, "annotations": []}]})
        return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
                "model": model, "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
                "tools": [], "usage": usage if status == "completed" else None}

    def _responses(self, body: dict[str, Any], config: MockConfig, started: float) -> None:
        model = body.get("model", "mock-gpt")
        rid = f"resp_{uuid.uuid4().hex[:16]}"
        mid = f"msg_{uuid.uuid4().hex[:16]}"
        answer = _answer(body, config.tokens)
        tool = answer.tool_call
        words = [d.get("content") or d.get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
                 for d in answer.deltas if "content" in d or "tool_calls" in d]
        if tool:
            words = words[1:]  # the first tool-call delta only names the function
        config = replace(config, tokens=len(words))
        usage = {"input_tokens": _prompt_tokens(body), "output_tokens": len(words),
                 "total_tokens": _prompt_tokens(body) + len(words),
                 "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
        text = "".join(words)

        def response(status: str, text: str | None) -> dict[str, Any]:
            return self._response_object(rid, status, text, model, usage, mid,
                                         tool if status == "completed" else None, answer.call_id)

        if not body.get("stream"):
            for _ in self._schedule(config, started):
                pass
            self._json(200, response("completed", text))
            return
        self._start_sse()
        seq = iter(range(1_000_000))

        def send(event: dict[str, Any]) -> None:
            self._send_event({"type": event["type"], "sequence_number": next(seq), **event}, event["type"])

        send({"type": "response.created", "response": response("in_progress", None)})
        if tool:
            item = {"type": "function_call", "id": mid.replace("msg_", "fc_"), "call_id": answer.call_id,
                    "name": tool["name"], "arguments": "", "status": "in_progress"}
            where = {"item_id": item["id"], "output_index": 0}
            send({"type": "response.output_item.added", "output_index": 0, "item": item})
            for index in self._schedule(config, started):
                send({"type": "response.function_call_arguments.delta", **where, "delta": words[index]})
            send({"type": "response.function_call_arguments.done", **where, "arguments": text})
            send({"type": "response.output_item.done", "output_index": 0,
                  "item": {**item, "arguments": text, "status": "completed"}})
            send({"type": "response.completed", "response": response("completed", text)})
            self._end_sse()
            return
        message = {"type": "message", "id": mid, "status": "in_progress", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": mid, "output_index": 0, "content_index": 0}
        send({"type": "response.output_item.added", "output_index": 0, "item": message})
        send({"type": "response.content_part.added", **where, "part": part})
        for index in self._schedule(config, started):
            send({"type": "response.output_text.delta", **where, "delta": words[index], "logprobs": []})
        send({"type": "response.output_text.done", **where, "text": text, "logprobs": []})
        send({"type": "response.content_part.done", **where, "part": {**part, "text": text}})
        send({"type": "response.output_item.done", "output_index": 0,
              "item": {**message, "status": "completed", "content": [{**part, "text": text}]}})
        send({"type": "response.completed", "response": response("completed", text)})
        self._end_sse()


    # -- the other providers' protocols -----------------------------------------------------------

    def _timed(self, config: MockConfig, started: float, pieces: list[Any]) -> Any:
        """``(piece, when it was sent)`` for each piece, on the schedule; a protocol error event
        (``mock_error_event``: after that many pieces) ends the stream with ``_ErrorEvent``."""
        for index in self._schedule(replace(config, tokens=len(pieces)), started):
            if self._error_after is not None and index >= self._error_after:
                raise _ErrorEvent
            yield pieces[index], time.perf_counter()
        if self._error_after is not None:
            raise _ErrorEvent

    _error_after: int | None = None

    def _anthropic(self, body: dict[str, Any], config: MockConfig, started: float) -> None:
        """Anthropic's Messages API: a whole ``Message``, or its typed SSE events (compact JSON)."""
        self._error_after = _int_or_none(body.get("mock_error_event"))
        answer = _answer(body, config.tokens)
        model, mid = body.get("model", "mock-claude"), f"msg_{uuid.uuid4().hex[:20]}"
        finish = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
        reason = finish.get(answer.finish_reasons[0], answer.finish_reasons[0])
        blocks: list[tuple[dict[str, Any], str, list[str]]] = []  # (block, delta type, pieces)
        thinking = [d["reasoning_content"] for d in answer.deltas if "reasoning_content" in d]
        if thinking:
            blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, "thinking_delta", thinking))
        if answer.tool_call:
            blocks.append(({"type": "tool_use", "id": "toolu_" + answer.call_id[5:], "name": answer.tool_call["name"],
                            "input": {}}, "input_json_delta", _slices(answer.tool_call["arguments"])))
        else:
            text = [d.get("content") or d.get("refusal") or "" for d in answer.deltas if "reasoning_content" not in d]
            blocks.append(({"type": "text", "text": ""}, "text_delta", text))
        generated = sum(len(pieces) for _, _, pieces in blocks)
        usage = {"input_tokens": _prompt_tokens(body), "output_tokens": generated}
        field = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
        if not body.get("stream"):
            for _ in self._schedule(replace(config, tokens=generated), started):
                pass
            content = []
            for block, kind, pieces in blocks:
                whole = "".join(pieces)
                content.append({**block, "input": json.loads(whole)} if kind == "input_json_delta" else
                               {**block, field[kind]: whole})
            self._json(200, {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
                             "stop_reason": reason, "stop_sequence": None, "usage": usage})
            return
        self._start_stream("text/event-stream; charset=utf-8")

        def send(payload: dict[str, Any]) -> None:
            self._wire.event(json.dumps(payload, separators=(",", ":")).encode(), payload["type"])

        send({"type": "message_start", "message": {"id": mid, "type": "message", "role": "assistant", "model": model,
                                                   "content": [], "stop_reason": None, "stop_sequence": None,
                                                   "usage": {**usage, "output_tokens": 1}}})
        send({"type": "ping"})
        deltas = [(index, kind, piece) for index, (_, kind, parts) in enumerate(blocks) for piece in parts]
        message_delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
                         "usage": {"output_tokens": generated}}
        usage_first = "usage_first" in self._dialect
        current = -1
        try:
            for number, ((index, kind, piece), _) in enumerate(self._timed(config, started, deltas)):
                if usage_first and number == len(deltas) - 1:
                    send(message_delta)  # the usage before the last delta (dialect usage_first)
                if index != current:
                    if current >= 0:
                        send({"type": "content_block_stop", "index": current})
                    send({"type": "content_block_start", "index": index, "content_block": blocks[index][0]})
                    current = index
                send({"type": "content_block_delta", "index": index, "delta": {"type": kind, field[kind]: piece}})
        except _ErrorEvent:
            send({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            self._end_sse()
            return
        if current >= 0:
            send({"type": "content_block_stop", "index": current})
        if not usage_first or not deltas:
            send(message_delta)
        send({"type": "message_stop"})
        self._end_sse()

    def _ollama(self, body: dict[str, Any], config: MockConfig, started: float, chat: bool) -> None:
        """Ollama's native API: NDJSON lines (the default), or one JSON object with ``"stream": false``;
        the last one with the counts and the server's timings of this very request."""
        self._error_after = _int_or_none(body.get("mock_error_event"))
        answer = _answer(body, config.tokens)
        model = body.get("model", "mock-llama")
        limit = (body.get("options") or {}).get("num_predict")
        if isinstance(limit, int) and limit > 0:
            config = replace(config, tokens=min(config.tokens, limit))
            answer = _answer(body, config.tokens)
        key = "content" if chat else "response"
        pieces: list[dict[str, Any]] = [{"thinking": d["reasoning_content"], key: ""} if "reasoning_content" in d
                                        else {key: d.get("content") or d.get("refusal") or ""}
                                        for d in answer.deltas if "tool_calls" not in d]
        if answer.tool_call and chat:
            call = {"name": answer.tool_call["name"], "arguments": json.loads(answer.tool_call["arguments"])}
            pieces.append({key: "", "tool_calls": [{"function": call}]})

        def line(piece: dict[str, Any], **extra: Any) -> dict[str, Any]:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
            inner = {"message": {"role": "assistant", **piece}} if chat else piece
            return {"model": model, "created_at": stamp, **inner, **extra}

        def final(sent: list[float]) -> dict[str, Any]:
            ended = time.perf_counter()
            load = min(float(body.get("mock_load", 0.001)), config.ttft / 2)
            first, last = (sent[0], sent[-1]) if sent else (ended, ended)
            decode = (last - first) * len(sent) / (len(sent) - 1) if len(sent) > 1 else config.itl
            ns = lambda seconds: int(seconds * 1e9)  # noqa: E731
            return line({key: ""}, done=True, done_reason=finish, total_duration=ns(ended - started),
                        load_duration=ns(load), prompt_eval_count=_prompt_tokens(body),
                        prompt_eval_duration=ns(max(0.0, first - started - load)), eval_count=len(sent),
                        eval_duration=ns(decode), **({} if chat else {"context": [1, 2, 3]}))

        finish = {"tool_calls": "stop"}.get(answer.finish_reasons[0], answer.finish_reasons[0])
        sent: list[float] = []
        if not body.get("stream", True):
            for _, when in self._timed(config, started, pieces):
                sent.append(when)
            whole = final(sent)
            text = "".join(p[key] for p in pieces)
            if chat:
                whole["message"] = {"role": "assistant", "content": text, **(
                    {"tool_calls": pieces[-1]["tool_calls"]} if answer.tool_call else {})}
            else:
                whole["response"] = text
            self._json(200, whole)
            return
        self._start_stream("application/x-ndjson")
        try:
            for piece, when in self._timed(config, started, pieces):
                sent.append(when)
                self._wire.line(json.dumps(line(piece, done=False), separators=(",", ":")).encode())
        except _ErrorEvent:
            self._wire.line(b'{"error":"an error was encountered while running the model"}')
            self._end_sse()
            return
        self._wire.line(json.dumps(final(sent), separators=(",", ":")).encode())
        self._end_sse()

    def _ollama_chat(self, body: dict[str, Any], config: MockConfig, started: float) -> None:
        self._ollama(body, config, started, chat=True)

    def _ollama_generate(self, body: dict[str, Any], config: MockConfig, started: float) -> None:
        self._ollama(body, config, started, chat=False)

    def _gemini(self, body: dict[str, Any], config: MockConfig, started: float) -> None:
        """Gemini's ``:generateContent`` (one ``GenerateContentResponse``) and
        ``:streamGenerateContent?alt=sse`` (one per token, CRLF-separated as Google sends them)."""
        self._error_after = _int_or_none(body.get("mock_error_event"))
        path = self.path.split("?")[0]
        model = path.rsplit("/", 1)[-1].partition(":")[0]
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
        if isinstance(limit, int) and limit > 0:
            config = replace(config, tokens=min(config.tokens, limit))
        answer = _answer(body, config.tokens)
        rid = f"resp_{uuid.uuid4().hex[:20]}"
        parts: list[dict[str, Any]] = [{"text": d["reasoning_content"], "thought": True} if "reasoning_content" in d
                                       else {"text": d.get("content") or d.get("refusal") or ""}
                                       for d in answer.deltas if "tool_calls" not in d]
        if answer.tool_call:
            parts.append({"functionCall": {"name": answer.tool_call["name"],
                                           "args": json.loads(answer.tool_call["arguments"])}})
        finish = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
        reason = finish.get(answer.finish_reasons[0], answer.finish_reasons[0])
        prompt = _prompt_tokens(body)
        thoughts = sum(1 for part in parts if part.get("thought"))

        def response(pieces: list[dict[str, Any]], done: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"parts": pieces, "role": "model"}, "index": 0}
            usage: dict[str, Any] = {"promptTokenCount": prompt, "totalTokenCount": prompt}
            if done:
                candidate["finishReason"] = reason
                usage = {"promptTokenCount": prompt, "candidatesTokenCount": len(parts) - thoughts,
                         "totalTokenCount": prompt + len(parts)}
                if thoughts:
                    usage["thoughtsTokenCount"] = thoughts
            return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": rid}

        if not path.endswith(":streamGenerateContent"):
            for _ in self._timed(config, started, parts):
                pass
            merged: list[dict[str, Any]] = []
            for part in parts:  # consecutive text parts of one kind come back as one
                same_kind = merged and "text" in merged[-1] and part.get("thought") == merged[-1].get("thought")
                if same_kind and "text" in part:
                    merged[-1] = {**merged[-1], "text": merged[-1]["text"] + part["text"]}
                else:
                    merged.append(part)
            self._json(200, response(merged, True))
            return
        self._start_stream("text/event-stream", newline=b"\r\n")
        try:
            for index, (part, _) in enumerate(self._timed(config, started, parts)):
                last = index == len(parts) - 1
                self._wire.event(json.dumps(response([part], last)).encode())
        except _ErrorEvent:
            error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
            self._wire.event(json.dumps(error).encode())
        self._end_sse()


class _ErrorEvent(Exception):
    """The mock ends a stream with the protocol's error event here (``mock_error_event``)."""


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _protocol(path: str) -> str | None:
    """Which protocol a POST path speaks (the name of its handler), or None for OpenAI's."""
    path = path.split("?")[0].rstrip("/")
    for suffix, protocol in (("/v1/messages", "anthropic"), ("/api/chat", "ollama_chat"),
                             ("/api/generate", "ollama_generate"), (":generateContent", "gemini"),
                             (":streamGenerateContent", "gemini")):
        if path.endswith(suffix):
            return protocol
    return None


_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_ANTHROPIC_ERROR = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                    429: "rate_limit_error", 529: "overloaded_error"}
#: The error body of each protocol, for an HTTP status.
ERROR_BODIES: dict[str | None, Any] = {
    None: lambda status: {"error": {"message": f"mock error {status}",
                                    "type": "server_error" if status >= 500 else "invalid_request_error",
                                    "param": None, "code": str(status)}},
    "anthropic": lambda status: {"type": "error", "error": {"type": _ANTHROPIC_ERROR.get(status, "api_error"),
                                                            "message": f"mock error {status}"}},
    "ollama_chat": lambda status: {"error": f"mock error {status}"},
    "ollama_generate": lambda status: {"error": f"mock error {status}"},
    "gemini": lambda status: {"error": {"code": status, "message": f"mock error {status}",
                                        "status": _GEMINI_STATUS.get(status, "UNKNOWN")}},
}


class MockLLMServer(ThreadingHTTPServer):
    """The mock LLM's HTTP server; ``requests`` keeps what it was sent (for tests)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # many clients connect at once in load tests

    def __init__(self, address: tuple[str, int], config: MockConfig, seed: int | None = None,
                 verbose: bool = False) -> None:
        super().__init__(address, MockLLMHandler)
        self.config = config
        self.rng = random.Random(seed)
        self.verbose = verbose
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        #: mock_label -> {"arrived": when the request was read, "tokens": when each token was sent,
        #: "peer": the client's port, which tells a reused connection}
        #: (``time.perf_counter`` of this process: the truth for tests that run the mock in-process)
        self.timelines: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}/v1"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (a finished process, a dropped keep-alive) are not errors."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    def record_request(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append((path, headers, body))
            del self.requests[:-1000]


def start_in_thread(config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                    seed: int | None = None) -> MockLLMServer:
    """Start a mock LLM on a background thread; call ``shutdown()`` to stop it."""
    server = MockLLMServer((host, port), config or MockConfig(), seed=seed)
    threading.Thread(target=server.serve_forever, name="mock-llm", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    """``nexent-autoinstrument mock-llm``: run the mock LLM in the foreground."""
    parser = argparse.ArgumentParser(prog="nexent-autoinstrument mock-llm", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on")
    parser.add_argument("--ttft", type=float, default=MockConfig.ttft, help="seconds to the first token")
    parser.add_argument("--tokens-per-second", type=float, default=1 / MockConfig.itl,
                        help="decode speed after the first token")
    parser.add_argument("--tokens", type=int, default=MockConfig.tokens, help="tokens per completion")
    parser.add_argument("--jitter", type=float, default=MockConfig.jitter,
                        help="random variation of each gap, as a fraction of it (e.g. 0.2)")
    parser.add_argument("--error-rate", type=float, default=MockConfig.error_rate,
                        help="fraction of requests answered with HTTP 500")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the random jitter and errors, for repeatable runs (None: random)")
    parser.add_argument("--dialect", default="",
                        help=f"how streams are written, comma-separated: {', '.join(DIALECTS)}, cut_after=N")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    try:
        Dialect.parse(args.dialect)
    except ValueError as bad:
        parser.error(str(bad))
    config = MockConfig(ttft=args.ttft, itl=1 / max(args.tokens_per_second, 1e-3), tokens=args.tokens,
                        jitter=args.jitter, error_rate=args.error_rate, dialect=args.dialect)
    server = MockLLMServer((args.host, args.port), config, seed=args.seed, verbose=args.verbose)
    print(f"mock LLM listening on {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

"""A mock OpenAI-compatible LLM server, for the demo, the tests and dashboards without an API key.

Serves ``/v1/chat/completions`` (streaming, with ``stream_options.include_usage``),
``/v1/completions``, ``/v1/embeddings``, ``/v1/responses`` (streaming and not) and
``/v1/models``. Timing is scheduled from the moment the request arrives, so the time to first
token and the gaps between tokens are what was configured, plus jitter.

Per request, a JSON body may override the server's defaults with ``mock_ttft``,
``mock_itl`` (seconds between tokens), ``mock_tokens``, ``mock_error`` (an HTTP status to
answer with), ``mock_drop_after`` (cut the connection after that many content chunks),
``mock_stall_at`` with ``mock_stall`` (pause that many seconds before that token), and
``mock_fail_attempts`` (answer 503 until the SDK's ``x-stainless-retry-count`` reaches it).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
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


class _Dropped(Exception):
    """The server cut the connection on purpose."""


def _words(count: int, as_json: bool = False) -> list[str]:
    """``count`` token strings; as a JSON object {"answer": ...} when structured output was asked for."""
    words = [WORDS[i % len(WORDS)] + " " for i in range(count)]
    if as_json and count >= 2:
        words[0], words[-1] = '{"answer": "' + words[0], words[-1].strip() + '"}'
    return words


def _wants_json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    return isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object")


def _prompt_tokens(body: dict[str, Any]) -> int:
    text = json.dumps(body.get("messages") or body.get("prompt") or body.get("input") or "")
    return max(1, len(text) // 4)


class MockLLMHandler(BaseHTTPRequestHandler):
    """One request to the mock LLM."""

    protocol_version = "HTTP/1.1"
    server: MockLLMServer

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
        if status >= 500:
            self.send_header("retry-after-ms", "10")  # keeps SDK retries fast in tests
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self._common_headers()
        self.end_headers()

    def _common_headers(self) -> None:
        """What OpenAI sends with every answer: a request id, processing time, rate limits."""
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:12]}")
        self.send_header("openai-processing-ms", "7")
        self.send_header("x-ratelimit-remaining-requests", "4999")
        self.send_header("x-ratelimit-remaining-tokens", "159000")
        self.send_header("x-ratelimit-reset-requests", "12ms")

    def _send_event(self, payload: Any, event: str | None = None) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        data = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
        raw = data.encode()
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()

    def _end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _config_for(self, body: dict[str, Any]) -> MockConfig:
        config = self.server.config
        casts = {"ttft": float, "itl": float, "tokens": int, "drop_after": int, "stall_at": int, "stall": float}
        overrides = {field: cast(body[f"mock_{field}"]) for field, cast in casts.items() if f"mock_{field}" in body}
        if "mock_error" in body:
            overrides["error_status"] = int(body["mock_error"])
        retry = int(self.headers.get("x-stainless-retry-count") or 0)
        if retry < int(body.get("mock_fail_attempts", 0)):
            overrides["error_status"] = 503
        config = replace(config, **overrides)
        limit = body.get("max_tokens") or body.get("max_output_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and limit > 0:
            config = replace(config, tokens=min(config.tokens, limit))
        return config

    def _schedule(self, config: MockConfig, started: float) -> Any:
        """Yield once per token, at the configured time of that token."""
        rng = self.server.rng
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
            yield index

    # -- routes ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "mock"}
                for m in ("mock-gpt", "mock-gpt-mini", "mock-embed")]})
        elif self.path == "/health":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        self.server.record_request(self.path, dict(self.headers), body)
        config = self._config_for(body)
        status = config.error_status
        if status is None and config.error_rate and self.server.rng.random() < config.error_rate:
            status = 500
        if status is not None:
            time.sleep(min(config.ttft, 0.05))
            self._json(status, {"error": {"message": f"mock error {status}", "type": "server_error",
                                          "code": str(status)}})
            return
        route = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        handler = {"completions": self._completions, "embeddings": self._embeddings,
                   "responses": self._responses}.get(route)
        if handler is None:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        try:
            handler(body, config, started)
        except _Dropped:
            self.close_connection = True
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _completions(self, body: dict[str, Any], config: MockConfig, started: float) -> None:
        chat = self.path.rstrip("/").endswith("chat/completions")
        model = body.get("model", "mock-gpt")
        cid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        usage = {"prompt_tokens": _prompt_tokens(body), "completion_tokens": config.tokens,
                 "total_tokens": _prompt_tokens(body) + config.tokens}
        obj = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            text = "".join(_words(config.tokens, _wants_json(body)))
            for _ in self._schedule(config, started):
                pass
            choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text},
                                       "finish_reason": "stop", "logprobs": None} if chat else
                                      {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None})
            self._json(200, {"id": cid, "object": obj, "created": int(time.time()), "model": model,
                             "choices": [choice], "usage": usage})
            return
        created = int(time.time())
        self._start_sse()

        def chunk(delta: dict[str, Any] | str, finish: str | None = None) -> dict[str, Any]:
            choice = ({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None} if chat else
                      {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None})
            return {"id": cid, "object": f"{obj}.chunk" if chat else obj, "created": created,
                    "model": model, "choices": [choice]}

        if chat:
            self._send_event(chunk({"role": "assistant", "content": ""}))
        words = _words(config.tokens, _wants_json(body))
        for index in self._schedule(config, started):
            self._send_event(chunk({"content": words[index]} if chat else words[index]))
        self._send_event(chunk({} if chat else "", "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._send_event({"id": cid, "object": f"{obj}.chunk" if chat else obj, "created": created,
                              "model": model, "choices": [], "usage": usage})
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

    def _responses(self, body: dict[str, Any], config: MockConfig, started: float) -> None:
        model = body.get("model", "mock-gpt")
        rid = f"resp_{uuid.uuid4().hex[:16]}"
        mid = f"msg_{uuid.uuid4().hex[:16]}"
        words = _words(config.tokens, _wants_json(body))
        usage = {"input_tokens": _prompt_tokens(body), "output_tokens": config.tokens,
                 "total_tokens": _prompt_tokens(body) + config.tokens,
                 "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}

        def response(status: str, text: str | None) -> dict[str, Any]:
            output = [] if text is None else [{
                "type": "message", "id": mid, "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}]
            return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
                    "model": model, "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
                    "tools": [], "usage": usage if status == "completed" else None}

        if not body.get("stream"):
            for _ in self._schedule(config, started):
                pass
            self._json(200, response("completed", "".join(words)))
            return
        self._start_sse()
        seq = iter(range(1_000_000))
        self._send_event({"type": "response.created", "sequence_number": next(seq),
                          "response": response("in_progress", None)}, "response.created")
        text = "".join(words)
        message = {"type": "message", "id": mid, "status": "in_progress", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": mid, "output_index": 0, "content_index": 0}
        self._send_event({"type": "response.output_item.added", "sequence_number": next(seq), "output_index": 0,
                          "item": message}, "response.output_item.added")
        self._send_event({"type": "response.content_part.added", "sequence_number": next(seq), **where,
                          "part": part}, "response.content_part.added")
        for index in self._schedule(config, started):
            self._send_event({"type": "response.output_text.delta", "sequence_number": next(seq), **where,
                              "delta": words[index], "logprobs": []}, "response.output_text.delta")
        self._send_event({"type": "response.output_text.done", "sequence_number": next(seq), **where,
                          "text": text, "logprobs": []}, "response.output_text.done")
        self._send_event({"type": "response.content_part.done", "sequence_number": next(seq), **where,
                          "part": {**part, "text": text}}, "response.content_part.done")
        self._send_event({"type": "response.output_item.done", "sequence_number": next(seq), "output_index": 0,
                          "item": {**message, "status": "completed", "content": [{**part, "text": text}]}},
                         "response.output_item.done")
        self._send_event({"type": "response.completed", "sequence_number": next(seq),
                          "response": response("completed", text)}, "response.completed")
        self._end_sse()


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
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    config = MockConfig(ttft=args.ttft, itl=1 / max(args.tokens_per_second, 1e-3), tokens=args.tokens,
                        jitter=args.jitter, error_rate=args.error_rate)
    server = MockLLMServer((args.host, args.port), config, seed=args.seed, verbose=args.verbose)
    print(f"mock LLM listening on {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

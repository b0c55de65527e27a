"""A mock OpenAI-compatible LLM server, for the demo, the tests and dashboards without an API key.

The HTTP side of the mock LLM: what every request goes through (its body read and recorded, its
``mock_label`` timeline, the ``mock_*`` overrides of the server's ``MockConfig``, the errors it
asks for, in its protocol's shape), then the protocol module that answers it. POST paths are routed
by the suffixes of the agent's own endpoint table (``adapters.endpoints``): what the agent
measures is what the mock serves.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

from ...adapters.endpoints import ENDPOINTS, PROTOCOLS, Endpoint
from ...cli import COMMANDS
from . import bedrock, openai
from .core import Call, MockConfig
from .wire import DIALECTS, Dialect, Dropped

#: The module that speaks each protocol of the agent's registry (``adapters.endpoints``): the
#: module of this package named as the protocol. A module has ``HANDLERS`` (a handler per operation
#: of the protocol's routes) and ``error_body(status)``. A protocol without a module is not served (404).
MODULES: dict[str, ModuleType] = {
    protocol.name: importlib.import_module(f"{__package__}.{protocol.name}") for protocol in PROTOCOLS
    if importlib.util.find_spec(f"{__package__}.{protocol.name}") is not None}
#: POST path suffix -> (the endpoint, its protocol's module, its handler), in the registry's order:
#: the routes come from the agent's own table, so the mock serves what the agent measures.
ROUTES: tuple[tuple[str, Endpoint, ModuleType, Callable[[Call], None]], ...] = tuple(
    (suffix, endpoint, module, module.HANDLERS[endpoint.operation])
    for suffix, endpoint in ENDPOINTS if (module := MODULES.get(endpoint.protocol.name)) is not None)


def route(path: str) -> tuple[Endpoint, ModuleType, Callable[[Call], None]] | None:
    """The generation endpoint of a POST path (any prefix: ``/v1``, Azure deployments), else None."""
    path = path.split("?")[0].rstrip("/")
    for suffix, endpoint, module, handler in ROUTES:
        if path.endswith(suffix):
            return endpoint, module, handler
    return None


class MockLLMHandler(BaseHTTPRequestHandler):
    """One connection to the mock LLM."""

    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY, as real servers set it: without it a token written after a quiet moment on a
    #: reused connection waits for the client's delayed ACK (up to 40 ms on Linux).
    disable_nagle_algorithm = True
    server: MockLLMServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.common_headers()
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status >= 500 or status == 429:
            self.send_header("retry-after-ms", "10")  # keeps SDK retries fast in tests
        if status == 429:
            self.send_header("retry-after", "1")
        self.end_headers()
        self.wfile.write(data)

    def common_headers(self) -> None:
        """What OpenAI sends with every answer: a request id, processing time, rate limits (and
        Anthropic's request id)."""
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:12]}")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
        self.send_header("openai-processing-ms", "7")
        self.send_header("x-ratelimit-remaining-requests", "4999")
        self.send_header("x-ratelimit-remaining-tokens", "159000")
        self.send_header("x-ratelimit-reset-requests", "12ms")

    def _parts(self) -> list[str]:
        """The path's segments after ``/v1``: ``/v1/chat/completions/x`` -> ["chat", "completions", "x"]."""
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        return parts[1:] if parts[:1] == ["v1"] else parts

    def _answer_route(self, routes: openai.Routes, parts: list[str]) -> None:
        for pattern, answer in routes.items():
            if len(pattern) == len(parts) and all(p in ("*", q) for p, q in zip(pattern, parts, strict=True)):
                self.send_json(200, answer())
                return
        self.send_json(404, {"error": {"message": f"Invalid URL ({self.command} {self.path})",
                                       "type": "invalid_request_error", "param": None, "code": None}})

    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_json(200, {"status": "ok"})
        elif self.path.startswith("/mock/requests/"):  # how many requests carried this mock_label
            label = self.path.removeprefix("/mock/requests/")
            self.send_json(200, {"count": self.server.timelines.get(label, {}).get("count", 0)})
        else:
            parts = self._parts()
            self._answer_route(openai.get_routes(parts), parts)

    def do_DELETE(self) -> None:
        parts = self._parts()
        self._answer_route(openai.delete_routes(parts), parts)

    def do_POST(self) -> None:
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.send_json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        self.server.record_request(self.path, dict(self.headers), body)
        if isinstance(body, dict) and isinstance(body.get("options"), dict):  # Ollama's SDK: options={...}
            body = {**{k: v for k, v in body["options"].items() if str(k).startswith("mock_")}, **body}
        if isinstance(body, dict) and isinstance(body.get("additionalModelRequestFields"), dict):  # Bedrock Converse
            body = {**{k: v for k, v in body["additionalModelRequestFields"].items()
                       if str(k).startswith("mock_")}, **body}
        found = route(self.path)
        on_bedrock = bedrock.route(self.path) if found is None else None
        timeline = None
        if isinstance(body, dict) and body.get("mock_label"):
            label = str(body["mock_label"])
            timeline = self.server.timelines[label] = {
                "arrived": time.perf_counter(), "tokens": [], "peer": self.client_address[1],
                "count": self.server.timelines.get(label, {}).get("count", 0) + 1}
        try:
            config = self._config_for(body)
            dialect = Dialect.parse(config.dialect, config.cut_after)
        except (TypeError, ValueError) as bad:
            self.send_json(400, {"error": {"message": f"invalid mock override: {bad}",
                                           "type": "invalid_request_error"}})
            return
        status = config.error_status
        if status is None and config.error_rate and self.server.rng.random() < config.error_rate:
            status = 500
        if status is not None:
            time.sleep(min(config.ttft, 0.05))
            module = found[1] if found is not None else bedrock if on_bedrock is not None else openai
            error_headers = getattr(module, "error_headers", None)
            self.send_json(status, module.error_body(status), error_headers(status) if error_headers else None)
            return
        rejects = self.server.config.reject_stream_options or body.get("mock_reject_stream_options")
        if rejects and "stream_options" in body:
            self.send_json(400, {"error": {"message": "Unrecognized request argument supplied: stream_options",
                                           "type": "invalid_request_error", "param": None, "code": None}})
            return
        if found is None and on_bedrock is None:
            parts = self._parts()
            self._answer_route(openai.post_routes(parts, body), parts)
            return
        try:
            if found is not None:
                endpoint, _, handler = found
                handler(Call(self, endpoint, body, config, started, dialect, timeline))
            elif on_bedrock is not None:
                operation, model = on_bedrock
                bedrock.handle(Call(self, operation, body, config, started, dialect, timeline), operation, model)
        except Dropped:
            self.close_connection = True
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _config_for(self, body: dict[str, Any]) -> MockConfig:
        """The server's ``MockConfig`` with the request's ``mock_*`` overrides."""
        config = self.server.config
        casts: dict[str, Callable[[Any], Any]] = {
            "ttft": float, "itl": float, "tokens": int, "drop_after": int, "stall_at": int, "stall": float,
            "cut_after": int, "dialect": lambda spec: spec if isinstance(spec, str) else tuple(spec or ())}
        overrides = {field: cast(body[f"mock_{field}"]) for field, cast in casts.items() if f"mock_{field}" in body}
        if "mock_error" in body:
            overrides["error_status"] = int(body["mock_error"])
        retry = int(self.headers.get("x-stainless-retry-count") or 0)
        # (botocore's attempts: "amz-sdk-request: ttl=...; attempt=2; max=5")
        for part in str(self.headers.get("amz-sdk-request") or "").split(";"):
            if part.strip().startswith("attempt="):
                retry = int(part.strip().removeprefix("attempt=")) - 1
        if retry < int(body.get("mock_fail_attempts", 0)):
            overrides["error_status"] = int(body.get("mock_fail_status", 503))
        config = replace(config, **overrides)
        limit = body.get("max_tokens") or body.get("max_output_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and limit > 0:
            config = replace(config, tokens=min(config.tokens, limit))
        return config


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
    parser = argparse.ArgumentParser(prog="nexent-autoinstrument mock-llm", description=COMMANDS["mock-llm"][1],
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

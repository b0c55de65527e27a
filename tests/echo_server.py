"""A fake LLM server that echoes everything it was sent: for the leak suite (``test_leaks.py``).

It speaks six protocols, chosen by the path: OpenAI chat completions (also Azure's
``/openai/deployments/{d}/chat/completions``), Anthropic ``/v1/messages``, Gemini
``models/{m}:generateContent`` / ``:streamGenerateContent``, Ollama ``/api/chat``, Cohere
``/v2/chat`` and Bedrock's ``/model/{m}/converse`` / ``converse-stream`` (AWS event-stream frames;
its error code in ``x-amzn-ErrorType``, as Bedrock sends it). The first
path segment is the mode (so that any SDK can select it through its base URL):

- ``ok``: a normal answer, JSON or a stream (SSE, or NDJSON for Ollama), whose completion text
  is ``{completion}-{protocol}``; every event also carries an unusual field (``x_echo``) with
  every request header, the path with its query and the request body;
- ``e400``, ``e401``, ``e429``, ``e500``: that status, with the protocol's error body whose
  ``message`` (and ``param``, ``details``, ``x_echo``) echo the same;
- ``streamerr``: a stream that starts normally and ends with the protocol's error event, whose
  message echoes the same (a non-streamed request gets a 500 as above).

In every mode the response headers echo every request header (``x-echo-{name}``, and the
credential headers under their own names), the path and the body. The error *codes* and *types*
(``code``, ``type``, ``status``) stay fixed protocol values: a provider's error code is what an
agent may record; only its free text is the server's.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nexent_autoinstrument.tools.mock.bedrock import ERROR_CODES as BEDROCK_ERROR_CODES
from nexent_autoinstrument.tools.mock.bedrock import frame

MODES = ("ok", "e400", "e401", "e429", "e500", "streamerr")
#: Request headers echoed back under their own names too (as a careless proxy would).
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_GEMINI = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)$")
_BEDROCK = re.compile(r"/model/[^/]+/(converse|converse-stream)$")


def _protocol(path: str) -> str | None:
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/v1/messages"):
        return "anthropic"
    if _GEMINI.search(path):
        return "gemini"
    if path.endswith("/api/chat"):
        return "ollama"
    if path.endswith("/v2/chat"):
        return "cohere"
    if _BEDROCK.search(path):
        return "bedrock"
    return None


class EchoLLMServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, completion: str = "COMPLETION") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.completion = completion
        self.requests: list[tuple[str, str]] = []  # (mode, path)
        self.root = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # (clients that drop their keep-alive connections at exit)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: EchoLLMServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    # -- what is echoed --------------------------------------------------------------------------

    def _echo(self, body_text: str) -> tuple[dict[str, Any], str]:
        headers = {name.lower(): value for name, value in self.headers.items()}
        echo = {"headers": headers, "path": self.path, "body": body_text}
        text = ("echoing your request: " + "; ".join(f"{k}: {v}" for k, v in headers.items())
                + f"; path: {self.path}; body: {body_text}")
        return echo, text

    def _echo_headers(self, echo: dict[str, Any]) -> list[tuple[str, str]]:
        out = []
        for name, value in echo["headers"].items():
            out.append((f"x-echo-{name}", value))
            if name in CREDENTIAL_HEADERS:
                out.append((name, value))
        out.append(("x-echo-path", echo["path"]))
        out.append(("x-echo-body", json.dumps(echo["body"])[:4000]))
        return out

    def _send(self, status: int, content_type: str, payload: bytes, echo: dict[str, Any],
              error_code: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if error_code:
            self.send_header("x-amzn-ErrorType", error_code)
        for name, value in self._echo_headers(echo):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_stream(self, content_type: str, events: list[bytes], echo: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in self._echo_headers(echo):
            self.send_header(name, value)
        self.end_headers()
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    # -- requests ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        echo, _ = self._echo("")
        self._send(404, "application/json", b'{"error": "not found"}', echo)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body_text = raw.decode("utf-8", "replace")
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        _, mode, rest = self.path.split("/", 2) if self.path.count("/") >= 2 else ("", "ok", self.path)
        if mode not in MODES:
            mode, rest = "ok", self.path.lstrip("/")
        path = "/" + rest.split("?", 1)[0]
        self.server.requests.append((mode, self.path))
        protocol = _protocol(path)
        echo, text = self._echo(body_text)
        if protocol is None:
            self._send(404, "application/json", json.dumps({"error": {"message": text, "x_echo": echo}}).encode(),
                       echo)
            return
        if protocol == "gemini":
            stream = path.endswith(":streamGenerateContent")
        elif protocol == "bedrock":
            stream = path.endswith("-stream")
        elif protocol == "ollama":
            stream = body.get("stream", True) is not False
        else:
            stream = bool(body.get("stream"))
        if mode.startswith("e") or (mode == "streamerr" and not stream):
            status = int(mode[1:]) if mode.startswith("e") else 500
            code = BEDROCK_ERROR_CODES.get(status, "UnrecognizedClientException") if protocol == "bedrock" else None
            payload = json.dumps(ERRORS[protocol](status, text, echo)).encode()
            self._send(status, "application/json", payload, echo, code)
            return
        completion = f"{self.server.completion}-{protocol}"
        if not stream:
            self._send(200, "application/json", json.dumps(WHOLE[protocol](completion, echo)).encode(), echo)
            return
        events = STREAMS[protocol](completion, echo)
        if mode == "streamerr":
            events = [*events[:BEFORE_ERROR[protocol]], STREAM_ERRORS[protocol](text, echo)]
        content_type = {"ollama": "application/x-ndjson", "bedrock": "application/vnd.amazon.eventstream"}.get(
            protocol, "text/event-stream")
        self._send_stream(content_type, events, echo)


# -- the protocols -------------------------------------------------------------------------------

def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _openai_error(status: int, text: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"message": text, "type": "invalid_request_error", "param": text, "code": "echo_error"},
            "x_echo": echo}


def _anthropic_error(status: int, text: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": text, "x_echo": echo},
            "request_id": "req_echo"}


def _gemini_error(status: int, text: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": status, "message": text, "status": "INVALID_ARGUMENT",
                      "details": [{"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": text}]},
            "x_echo": echo}


def _ollama_error(status: int, text: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"error": text, "x_echo": echo}


def _cohere_error(status: int, text: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"id": "echo-error", "message": text, "x_echo": echo}


def _bedrock_error(status: int, text: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"message": text, "x_echo": echo}


ERRORS = {"openai": _openai_error, "anthropic": _anthropic_error, "gemini": _gemini_error, "ollama": _ollama_error,
          "cohere": _cohere_error, "bedrock": _bedrock_error}


def _openai_whole(completion: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"id": "chatcmpl-echo", "object": "chat.completion", "created": 1, "model": "echo-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion, "x_echo": echo},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, "x_echo": echo}


def _openai_stream(completion: str, echo: dict[str, Any]) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 1, "model": "echo-model",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "x_echo": echo})

    return [chunk({"role": "assistant", "content": ""}), chunk({"content": completion, "x_echo": echo}),
            chunk({}, "stop"), b"data: [DONE]\n\n"]


def _openai_stream_error(text: str, echo: dict[str, Any]) -> bytes:
    return _sse({"error": {"message": text, "type": "server_error", "code": "echo_error", "x_echo": echo}})


def _anthropic_whole(completion: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_echo", "type": "message", "role": "assistant", "model": "echo-model",
            "content": [{"type": "text", "text": completion, "x_echo": echo}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2}, "x_echo": echo}


def _anthropic_stream(completion: str, echo: dict[str, Any]) -> list[bytes]:
    message: dict[str, Any] = {
        "id": "msg_echo", "type": "message", "role": "assistant", "model": "echo-model", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 0}, "x_echo": echo}
    return [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             "content_block_start"),
        _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": completion},
              "x_echo": echo}, "content_block_delta"),
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
              "usage": {"output_tokens": 2}, "x_echo": echo}, "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]


def _anthropic_stream_error(text: str, echo: dict[str, Any]) -> bytes:
    return _sse({"type": "error", "error": {"type": "overloaded_error", "message": text, "x_echo": echo}}, "error")


def _gemini_whole(completion: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"candidates": [{"content": {"parts": [{"text": completion}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
            "modelVersion": "echo-model", "responseId": "resp-echo", "x_echo": echo}


def _gemini_stream(completion: str, echo: dict[str, Any]) -> list[bytes]:
    first = {"candidates": [{"content": {"parts": [{"text": completion}], "role": "model"}, "index": 0}],
             "modelVersion": "echo-model", "responseId": "resp-echo", "x_echo": echo}
    return [_sse(first), _sse({**_gemini_whole(" ", echo)})]


def _gemini_stream_error(text: str, echo: dict[str, Any]) -> bytes:
    return _sse({"error": {"code": 500, "message": text, "status": "INTERNAL"}, "x_echo": echo})


def _ollama_whole(completion: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"model": "echo-model", "created_at": "2024-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": completion}, "done": True, "done_reason": "stop",
            "prompt_eval_count": 3, "eval_count": 2, "x_echo": echo}


def _ollama_stream(completion: str, echo: dict[str, Any]) -> list[bytes]:
    def line(data: dict[str, Any]) -> bytes:
        return json.dumps(data).encode() + b"\n"

    return [line({"model": "echo-model", "created_at": "2024-01-01T00:00:00Z",
                  "message": {"role": "assistant", "content": completion}, "done": False, "x_echo": echo}),
            line({**_ollama_whole("", echo)})]


def _ollama_stream_error(text: str, echo: dict[str, Any]) -> bytes:
    return json.dumps({"error": text, "x_echo": echo}).encode() + b"\n"


_COHERE_USAGE = {"billed_units": {"input_tokens": 3, "output_tokens": 2},
                 "tokens": {"input_tokens": 3, "output_tokens": 2}}


def _cohere_whole(completion: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"id": "echo-id", "finish_reason": "COMPLETE", "usage": _COHERE_USAGE, "x_echo": echo,
            "message": {"role": "assistant", "content": [{"type": "text", "text": completion}]}}


def _cohere_stream(completion: str, echo: dict[str, Any]) -> list[bytes]:
    def event(data: dict[str, Any]) -> bytes:
        return _sse(data, data["type"])

    return [event({"type": "message-start", "id": "echo-id", "delta": {"message": {"role": "assistant"}},
                   "x_echo": echo}),
            event({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text"}}}}),
            event({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": completion}}},
                   "x_echo": echo}),
            event({"type": "content-end", "index": 0}),
            event({"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": _COHERE_USAGE},
                   "x_echo": echo})]


def _cohere_stream_error(text: str, echo: dict[str, Any]) -> bytes:
    return _sse({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": text}, "x_echo": echo},
                "message-end")


def _bedrock_whole(completion: str, echo: dict[str, Any]) -> dict[str, Any]:
    return {"output": {"message": {"role": "assistant", "content": [{"text": completion}], "x_echo": echo}},
            "stopReason": "end_turn", "usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8},
            "metrics": {"latencyMs": 5}, "x_echo": echo}


def _bedrock_event(kind: str, data: dict[str, Any]) -> bytes:
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                 json.dumps(data).encode())


def _bedrock_stream(completion: str, echo: dict[str, Any]) -> list[bytes]:
    return [_bedrock_event("messageStart", {"role": "assistant", "x_echo": echo}),
            _bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": completion},
                                                 "x_echo": echo}),
            _bedrock_event("contentBlockStop", {"contentBlockIndex": 0}),
            _bedrock_event("messageStop", {"stopReason": "end_turn", "x_echo": echo}),
            _bedrock_event("metadata", {"usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8},
                                        "metrics": {"latencyMs": 5}, "x_echo": echo})]


def _bedrock_stream_error(text: str, echo: dict[str, Any]) -> bytes:
    return frame({":exception-type": "modelStreamErrorException", ":content-type": "application/json",
                  ":message-type": "exception"},
                 json.dumps({"message": text, "originalMessage": text, "x_echo": echo}).encode())


WHOLE = {"openai": _openai_whole, "anthropic": _anthropic_whole, "gemini": _gemini_whole, "ollama": _ollama_whole,
         "cohere": _cohere_whole, "bedrock": _bedrock_whole}
STREAMS = {"openai": _openai_stream, "anthropic": _anthropic_stream, "gemini": _gemini_stream,
           "ollama": _ollama_stream, "cohere": _cohere_stream, "bedrock": _bedrock_stream}
#: How many events of a stream come before the error event of ``streamerr`` (the content, not the end).
BEFORE_ERROR = {"openai": 2, "anthropic": 3, "gemini": 1, "ollama": 1, "cohere": 3, "bedrock": 2}
STREAM_ERRORS = {"openai": _openai_stream_error, "anthropic": _anthropic_stream_error,
                 "gemini": _gemini_stream_error, "ollama": _ollama_stream_error, "cohere": _cohere_stream_error,
                 "bedrock": _bedrock_stream_error}

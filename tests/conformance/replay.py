"""Replays recorded OpenAI answers (the VCR cassettes in ``cassettes/``) on loopback, byte for byte.

``ReplayServer().base_url("chat_stream")`` is an OpenAI base URL whose generation endpoint answers
with the last recording of ``cassettes/chat_stream.yaml``: its status, its headers and its body
bytes exactly as recorded (gzip included). ``facts()`` reads, from the recorded body alone, what
the agent's span must then carry.
"""

from __future__ import annotations

import functools
import gzip
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

CASSETTES = Path(__file__).resolve().parent / "cassettes"
ENDPOINTS = ("/chat/completions", "/completions", "/embeddings", "/responses")
HOP_BY_HOP = {"transfer-encoding", "content-length", "connection", "keep-alive"}


@dataclass(frozen=True)
class Recording:
    method: str
    endpoint: str
    stream: bool
    status: int
    headers: list[tuple[str, str]]
    body: bytes  # as sent on the wire

    def decoded(self) -> bytes:
        encoding = {k.lower(): v for k, v in self.headers}.get("content-encoding", "")
        return gzip.decompress(self.body) if "gzip" in encoding else self.body


def _endpoint(path: str) -> str:
    return next((e for e in ENDPOINTS if path.split("?")[0].rstrip("/").endswith(e)), "")


@functools.cache
def load(name: str) -> Recording:
    """The last interaction recorded in ``cassettes/<name>.yaml``."""
    interaction = yaml.safe_load((CASSETTES / f"{name}.yaml").read_text())["interactions"][-1]
    request, response = interaction["request"], interaction["response"]
    body = response["body"]["string"]
    request_body = json.loads(request["body"] or "{}")
    return Recording(
        method=request["method"], endpoint=_endpoint(request["uri"]), stream=bool(request_body.get("stream")),
        status=response["status"]["code"],
        headers=[(k, str(v)) for k, values in response["headers"].items() for v in values],
        body=body if isinstance(body, bytes) else body.encode())


def facts(name: str) -> dict[str, Any]:
    """Model, response id, finish reasons and token counts, as the recorded body states them."""
    recording = load(name)
    body = recording.decoded()
    if not recording.stream:
        data = json.loads(body)
        return _facts_of(data)
    events = [json.loads(line[5:]) for line in body.splitlines()
              if line.startswith(b"data:") and line[5:].strip() != b"[DONE]"]
    if recording.endpoint == "/responses":
        return _facts_of(next(e["response"] for e in events if e.get("type") == "response.completed"))
    finish: dict[int, str] = {}
    for event in events:
        for choice in event.get("choices") or []:
            if choice.get("finish_reason"):
                finish[choice["index"]] = choice["finish_reason"]
    usage = next((e["usage"] for e in reversed(events) if e.get("usage")), None) or {}
    return {"model": events[0]["model"], "id": events[0]["id"], "finish_reasons": [finish[i] for i in sorted(finish)],
            "output_tokens": usage.get("completion_tokens"), "input_tokens": usage.get("prompt_tokens")}


def _facts_of(data: dict[str, Any]) -> dict[str, Any]:
    usage = data.get("usage") or {}
    if data.get("object") == "response":
        return {"model": data["model"], "id": data["id"], "finish_reasons": [data["status"]],
                "output_tokens": usage.get("output_tokens"), "input_tokens": usage.get("input_tokens")}
    return {"model": data["model"], "id": data.get("id"),
            "finish_reasons": [c["finish_reason"] for c in data["choices"]] if "choices" in data else None,
            "output_tokens": usage.get("completion_tokens"), "input_tokens": usage.get("prompt_tokens")}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        name = self.path.strip("/").split("/")[0]
        try:
            recording = load(name)
        except FileNotFoundError:
            self._refuse(404, f"no cassette {name}")
            return
        if (recording.method, recording.endpoint, recording.stream) != ("POST", _endpoint(self.path),
                                                                          bool(body.get("stream"))):
            self._refuse(400, f"{self.path} stream={body.get('stream')} is not what {name}.yaml recorded")
            return
        self.send_response(recording.status)
        for key, value in recording.headers:
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(recording.body)))
        self.end_headers()
        self.wfile.write(recording.body)

    def _refuse(self, status: int, message: str) -> None:
        data = json.dumps({"error": {"message": message, "type": "replay_error"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ReplayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, name="replay", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

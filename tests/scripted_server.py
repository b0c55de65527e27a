"""A fake LLM server that answers every POST with the reply a test scripts: a status, a content
type, the body's pieces (each its own HTTP chunk, flushed) and whether the connection is cut
before the body's end. The fuzz tests script what real servers never send."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int
    content_type: str
    pieces: list[bytes]
    cut: bool  # drop the connection instead of ending the body


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = self.server.reply
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in reply.pieces:
            if piece:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
        if reply.cut:
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")


class ScriptedServer(ThreadingHTTPServer):
    """On 127.0.0.1, a free port; ``reply`` is what the next requests get."""

    daemon_threads = True
    reply = Reply(200, "application/json", [b"{}"], False)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[ScriptedServer]:
        server = cls(("127.0.0.1", 0), ScriptedHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()

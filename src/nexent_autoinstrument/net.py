"""Whether an address accepts connections: for the pipeline at exit and for the tools. Standard
library only (the base install has no OpenTelemetry)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def accepts_connections(url: str, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at the URL's host and port right now."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return True
    except OSError:
        return False

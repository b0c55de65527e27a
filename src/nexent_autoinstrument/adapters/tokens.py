"""Output-token estimates for streams that carry no usage.

With tiktoken installed and its encoding available offline, the generated text is counted
with it; otherwise the estimate is the number of content chunks, which OpenAI-compatible
servers send about one token at a time. tiktoken downloads an encoding the first time it is
used, and the agent must never cause that: the cache file tiktoken would read is located the
way tiktoken locates it and checked against the expected hash first, and only then is the
encoding loaded, once, on a background thread.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("nexent_autoinstrument")

ENCODING = "o200k_base"
_encoder: Any = None
_loading = threading.Lock()
_started = False


def ready() -> bool:
    """True once a tiktoken encoding is loaded."""
    return _encoder is not None


def count(texts: Sequence[str]) -> int | None:
    """Tokens in the concatenated texts, or None without an encoding."""
    encoder = _encoder
    if encoder is None or not texts:
        return None
    return len(encoder.encode_ordinary("".join(texts)))


def encoding_source(module: Any, name: str) -> tuple[str, str] | None:
    """(blob path, sha256) that tiktoken's ``name`` constructor loads, read from its source."""
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            for call in ast.walk(node):
                if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "load_tiktoken_bpe"
                        and call.args and isinstance(call.args[0], ast.Constant)):
                    digest = next((k.value.value for k in call.keywords
                                   if k.arg == "expected_hash" and isinstance(k.value, ast.Constant)), None)
                    if isinstance(call.args[0].value, str) and isinstance(digest, str):
                        return call.args[0].value, digest
    return None


def cache_path(blobpath: str) -> str | None:
    """Where tiktoken caches ``blobpath`` (None when its caching is switched off)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":
        return None
    return os.path.join(cache_dir, hashlib.sha1(blobpath.encode()).hexdigest())


def _load() -> None:
    global _encoder
    try:
        import tiktoken
        import tiktoken_ext.openai_public as public
    except ImportError:
        return
    try:
        source = encoding_source(public, ENCODING)
        path = cache_path(source[0]) if source else None
        if source is None or path is None or not os.path.exists(path):
            logger.info("nexent-autoinstrument: tiktoken's %s is not available offline; "
                        "streams without usage are counted in content chunks", ENCODING)
            return
        with open(path, "rb") as cached:
            if hashlib.sha256(cached.read()).hexdigest() != source[1]:
                return  # tiktoken would delete it and download again: leave it alone
        _encoder = tiktoken.get_encoding(ENCODING)
    except Exception as exc:  # an estimate is optional; never let it hurt
        logger.info("nexent-autoinstrument: tiktoken not used (%s)", exc)


def start_loading() -> None:
    """Load the encoding in the background, once per process, if that is possible offline."""
    global _started
    with _loading:
        if _started:
            return
        _started = True
    threading.Thread(target=_load, name="nexent-tiktoken", daemon=True).start()

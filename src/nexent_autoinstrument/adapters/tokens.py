"""Output-token estimates for streams that carry no usage.

With tiktoken installed and its encoding available offline, the generated text is counted
with it; otherwise the estimate is the number of content chunks, which OpenAI-compatible
servers send about one token at a time. tiktoken downloads an encoding the first time it is
used, and the agent must never cause that: the cache file tiktoken would read is located the
way tiktoken locates it (read from tiktoken's source, without importing it) and checked
against the expected hash first, and only then is the encoding loaded, once. All of that runs
on the agent's thread when it starts (``guest.on_start``), off the application's start-up. A fork
waits for the load to finish (it holds import locks while it runs, and a child forked meanwhile
would deadlock on them).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from importlib.util import find_spec
from typing import Any

from .. import guest

logger = logging.getLogger("nexent_autoinstrument")

ENCODING = "o200k_base"
#: Longest a fork waits for the background load (it takes well under a second).
FORK_WAIT_SECONDS = 5.0
_encoder: Any = None
#: Set while no load runs: a fork waits for it.
_idle = threading.Event()
_idle.set()
_fork_hook = False


def ready() -> bool:
    """True once a tiktoken encoding is loaded."""
    return _encoder is not None


def count(texts: Sequence[str]) -> int | None:
    """Tokens in the concatenated texts, or None without an encoding."""
    encoder = _encoder
    if encoder is None or not texts:
        return None
    return len(encoder.encode_ordinary("".join(texts)))


def encoding_source(source: str, name: str) -> tuple[str, str] | None:
    """(blob path, sha256) that tiktoken's ``name`` constructor loads, read from its source code."""
    import ast

    tree = ast.parse(source)
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
    import hashlib
    import tempfile

    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":
        return None
    return os.path.join(cache_dir, hashlib.sha1(blobpath.encode()).hexdigest())


def offline_encoding() -> tuple[str, str] | None:
    """(cache file, sha256) of the encoding if tiktoken is installed and the file is on disk.
    Reads tiktoken's source as text: nothing is imported, nothing is fetched."""
    try:
        spec = find_spec("tiktoken_ext.openai_public")
        if spec is None or not spec.origin or find_spec("tiktoken") is None:
            return None
        with open(spec.origin, encoding="utf-8") as module_source:
            source = encoding_source(module_source.read(), ENCODING)
    except (ImportError, OSError, SyntaxError, ValueError):
        return None
    path = cache_path(source[0]) if source else None
    if source is None or path is None or not os.path.exists(path):
        return None
    return path, source[1]


def _find_and_load() -> None:
    try:
        found = offline_encoding()
    except Exception as exc:  # (a thread's exception would reach stderr: an estimate is optional)
        logger.info("nexent-autoinstrument: tiktoken not used (%s)", exc)
        return
    if found is None:
        logger.info("nexent-autoinstrument: tiktoken's %s is not available offline; "
                    "streams without usage are counted in content chunks", ENCODING)
        return
    _load(*found)


def _load(path: str, digest: str) -> None:
    global _encoder
    import hashlib

    try:
        with open(path, "rb") as cached:
            if hashlib.sha256(cached.read()).hexdigest() != digest:
                return  # tiktoken would delete it and download again: leave it alone
        import tiktoken

        _encoder = tiktoken.get_encoding(ENCODING)
    except Exception as exc:  # an estimate is optional; never let it hurt
        logger.info("nexent-autoinstrument: tiktoken not used (%s)", exc)


def load_offline() -> None:
    """Find and load the encoding if that is possible offline (on the agent's thread)."""
    global _fork_hook
    if _encoder is not None:
        return
    if not _fork_hook:
        _fork_hook = True
        os.register_at_fork(before=_wait_for_load)
    _idle.clear()
    try:
        _find_and_load()
    finally:
        _idle.set()


def _wait_for_load() -> None:
    guest.wait_until(_idle.is_set, FORK_WAIT_SECONDS)

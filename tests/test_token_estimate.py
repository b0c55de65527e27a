"""Token estimates for streams without usage: tiktoken only when available offline, never a download."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest

from nexent_autoinstrument import lifecycle
from nexent_autoinstrument.adapters import tokens


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the agent tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _tiktoken_source() -> str:
    from importlib.util import find_spec

    return Path(find_spec("tiktoken_ext.openai_public").origin).read_text()


def test_encoding_source_is_read_from_tiktokens_own_code() -> None:
    blob, digest = tokens.encoding_source(_tiktoken_source(), tokens.ENCODING)
    assert blob.endswith("o200k_base.tiktoken") and len(digest) == 64


def test_without_the_cached_encoding_nothing_is_loaded_or_downloaded(no_network: None, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens, "_encoder", None)
    monkeypatch.delitem(sys.modules, "tiktoken", raising=False)
    assert tokens.offline_encoding() is None
    assert "tiktoken" not in sys.modules  # the check imports nothing
    assert not tokens.ready() and tokens.count(["some text"]) is None


def test_a_corrupt_cache_file_is_left_alone(no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens, "_encoder", None)
    blob, digest = tokens.encoding_source(_tiktoken_source(), tokens.ENCODING)
    Path(tokens.cache_path(blob)).write_bytes(b"not the encoding")
    assert tokens.offline_encoding() == (tokens.cache_path(blob), digest)
    tokens._load(*tokens.offline_encoding())  # tiktoken would delete it and download again; we must not ask
    assert not tokens.ready() and Path(tokens.cache_path(blob)).exists()


class _WordEncoder:
    def encode_ordinary(self, text: str) -> list[str]:
        return text.split()


def test_a_verified_cache_file_loads_the_encoding_and_streams_use_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, harness_factory: Any) -> None:
    import tiktoken

    data = b"cached encoding bytes"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens, "_encoder", None)
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(tokens, "encoding_source", lambda source, name: ("blob://enc", digest))
    Path(tokens.cache_path("blob://enc")).write_bytes(data)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: _WordEncoder())
    tokens._load(*tokens.offline_encoding())
    assert tokens.ready()

    harness = harness_factory()
    call = lifecycle.begin(harness.telemetry, "chat", "m", stream=True)
    for piece in ("one two ", "three ", "four five six"):
        call.content(piece)
    call.finish()
    attrs = harness.llm_span().attributes
    assert attrs["gen_ai.usage.output_tokens"] == 6 and attrs["llm.usage.source"] == "estimated"
    assert "gen_ai.output.messages" not in attrs  # kept for counting, not recorded

    expected = lifecycle.begin(harness.telemetry, "chat", "m", stream=True, usage_expected=True)
    assert expected.texts is None  # the API will send usage: no text is kept
    expected.finish()

"""The adapters on their own: SSE decoding, and what each reader counts as content."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk
from openai.types.completion import Completion

from nexent_autoinstrument.adapters.openai import (
    read_chat_chunk,
    read_chat_event,
    read_completion_chunk,
    read_completion_event,
    read_response_event,
    skim_chat_event,
    skim_completion_event,
    skim_response_event,
)
from nexent_autoinstrument.adapters.sse import SSEDecoder

# -- SSE ----------------------------------------------------------------------------------------

SSE_CASES = [
    ("one data line per event", b'data: {"a":1}\n\ndata: {"b":2}\n\n', [b'{"a":1}', b'{"b":2}']),
    ("CRLF line ends", b'data: {"a":1}\r\n\r\ndata: x\r\n\r\n', [b'{"a":1}', b"x"]),
    ("CR line ends", b"data: one\r\rdata: two\r\rdata: three\n\n", [b"one", b"two", b"three"]),
    ("comments and other fields", b": keep-alive\n\nevent: delta\nid: 7\nretry: 5\ndata: x\n\n", [b"x"]),
    ("multi-line data", b"data: first\ndata: second\n\n", [b"first\nsecond"]),
    ("no space after the colon", b"data:x\n\n", [b"x"]),
    ("an event without data", b"event: ping\n\ndata: y\n\n", [b"y"]),
    ("the end marker", b"data: [DONE]\n\n", [b"[DONE]"]),
    ("non-ASCII text", "data: {\"c\":\"héllo ✓\"}\n\n".encode(), ["{\"c\":\"héllo ✓\"}".encode()]),
]


@pytest.mark.parametrize(("body", "events"), [(b, e) for _, b, e in SSE_CASES], ids=[n for n, _, _ in SSE_CASES])
def test_sse_decoder_whole_and_split_anywhere(body: bytes, events: list[bytes]) -> None:
    assert SSEDecoder().feed(body) == events
    rng = random.Random(7)
    for _ in range(300):  # the same events whatever the network read boundaries
        decoder, seen, position = SSEDecoder(), [], 0
        while position < len(body):
            step = rng.randint(1, 5)
            seen += decoder.feed(body[position:position + step])
            position += step
        assert seen == events


def test_sse_decoder_keeps_an_unfinished_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: par") == []
    assert decoder.feed(b"tial\n") == []
    assert decoder.feed(b"\ndata: next") == [b"partial"]
    assert decoder.feed(b"\r\n\r\n") == [b"next"]


# -- what counts as content ---------------------------------------------------------------------

class Recorder:
    """Stands in for the call tracker: records which facts an adapter reported."""

    def __init__(self) -> None:
        self.facts: list[tuple[str, tuple[Any, ...]]] = []
        self.response_id: str | None = None
        self.texts: list[str] | None = None

    def content(self, text: str | None = None, tokens: int = 1) -> None:
        self.facts.append(("content", (text,)))

    def finish_reason(self, reason: str, index: Any = 0) -> None:
        self.facts.append(("finish_reason", (reason, index)))

    def response(self, model: Any = None, response_id: Any = None) -> None:
        self.response_id = response_id

    def usage(self, input_tokens: Any, output_tokens: Any) -> None:
        self.facts.append(("usage", (input_tokens, output_tokens)))

    def fail(self, error: Any) -> None:
        self.facts.append(("fail", (error,)))

    def whole_text(self, text: str) -> None:
        pass


def chat(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


CHAT_CASES = [
    ("text", chat({"content": "hi"}), [("content", ("hi",))]),
    ("role only", chat({"role": "assistant", "content": ""}), []),
    ("empty delta", chat({}), []),
    ("tool-call arguments", chat({"tool_calls": [{"index": 0, "id": "t", "type": "function",
                                                  "function": {"name": "f", "arguments": "{\""}}]}),
     [("content", ("",))]),
    ("refusal", chat({"refusal": "no"}), [("content", ("",))]),
    ("reasoning", chat({"reasoning_content": "think"}), [("content", ("",))]),
    ("finish", chat({}, "stop"), [("finish_reason", ("stop", 0))]),
    ("usage only", {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}},
     [("usage", (3, 9))]),
]


@pytest.mark.parametrize(("chunk", "facts"), [(c, f) for _, c, f in CHAT_CASES], ids=[n for n, _, _ in CHAT_CASES])
def test_chat_readers_count_content_alike_from_sdk_objects_and_dicts(chunk: dict[str, Any],
                                                                      facts: list[Any]) -> None:
    from_sdk, from_dict = Recorder(), Recorder()
    read_chat_chunk(from_sdk, ChatCompletionChunk.model_validate(chunk))  # type: ignore[arg-type]
    read_chat_event(from_dict, chunk)  # type: ignore[arg-type]
    assert from_sdk.facts == from_dict.facts == facts
    assert from_sdk.response_id == from_dict.response_id == "c1"


def test_completion_readers() -> None:
    for text, facts in (("hi", [("content", ("hi",))]), ("", [])):
        chunk = {"id": "c1", "object": "text_completion", "created": 1, "model": "m",
                 "choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}]}
        from_sdk, from_dict = Recorder(), Recorder()
        read_completion_chunk(from_sdk, Completion.construct(**chunk))  # type: ignore[arg-type]
        read_completion_event(from_dict, chunk)  # type: ignore[arg-type]
        assert from_sdk.facts == from_dict.facts == facts


def test_response_events() -> None:
    recorder = Recorder()
    for event in ({"type": "response.output_text.delta", "delta": "hi"},
                  {"type": "response.reasoning_summary_text.delta", "delta": "thinking"},
                  {"type": "response.function_call_arguments.delta", "delta": "{"},
                  {"type": "response.output_text.delta", "delta": ""},
                  {"type": "response.output_text.done", "text": "hi"},
                  {"type": "response.completed", "response": {"id": "r1", "object": "response", "model": "m",
                                                              "status": "completed", "usage": {
                                                                  "input_tokens": 2, "output_tokens": 3}}}):
        read_response_event(recorder, event)  # type: ignore[arg-type]
    assert recorder.facts == [("content", ("hi",)), ("content", (None,)), ("content", (None,)),
                              ("finish_reason", ("completed", 0)), ("usage", (2, 3))]


def test_malformed_items_are_skipped_without_raising() -> None:
    for chunk in ({"choices": "not a list", "usage": 5}, {"choices": [1, None, "x"]}, {"choices": [{"delta": 3}]}):
        read_chat_event(Recorder(), chunk)  # type: ignore[arg-type]
        read_chat_chunk(Recorder(), ChatCompletionChunk.model_construct(**chunk))  # type: ignore[arg-type]


SKIMS = [
    (skim_chat_event, chat({"content": "x"}), True),
    (skim_chat_event, chat({"content": ""}), False),
    (skim_chat_event, chat({"content": None, "tool_calls": []}), False),
    (skim_chat_event, chat({"content": "x"}, "stop"), False),
    (skim_chat_event, chat({"content": "x"}, usage={"prompt_tokens": 1}), False),
    (skim_chat_event, chat({"content": "x"}, usage=None), True),
    (skim_chat_event, {**chat({"content": "x"}), "choices": chat({"content": "x"})["choices"] * 2}, False),
    (skim_chat_event, chat({"content": '"finish_reason":"stop"'}), True),  # escaped inside the text
    (skim_completion_event, {"choices": [{"index": 0, "text": "x", "finish_reason": None}]}, True),
    (skim_completion_event, {"choices": [{"index": 0, "text": "", "finish_reason": None}]}, False),
    (skim_response_event, {"type": "response.output_text.delta", "delta": "x"}, True),
    (skim_response_event, {"type": "response.output_text.delta", "delta": ""}, False),
    (skim_response_event, {"type": "response.completed", "response": {}}, False),
]


@pytest.mark.parametrize(("skim", "event", "plain"), SKIMS)
def test_skims_let_only_plain_content_through(skim: Any, event: dict[str, Any], plain: bool) -> None:
    assert skim(json.dumps(event, separators=(",", ":")).encode()) is plain
    assert skim(json.dumps(event).encode()) is False  # another spelling is parsed, never guessed

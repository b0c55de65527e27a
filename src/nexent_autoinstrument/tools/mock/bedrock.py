"""Amazon Bedrock's runtime API, as the mock LLM speaks it: ``POST /model/{modelId}/`` then
``converse``, ``converse-stream``, ``invoke`` or ``invoke-with-response-stream`` (the paths of the
agent's own declaration, ``adapters.bedrock.OPERATIONS``).

Streams are AWS's binary event-stream framing: each frame is its total length, its headers'
length, a CRC32 of those eight bytes, the headers (``:event-type``, ``:content-type``,
``:message-type``), the JSON payload, and a CRC32 of all before it. ``converse-stream`` sends the
Converse events; ``invoke-with-response-stream`` sends ``chunk`` events whose ``bytes`` are the
model family's own JSON events (Anthropic's Messages, Amazon Nova, Meta Llama, or Titan's for any
other model), base64-encoded. Errors are answered as Bedrock does: a JSON ``message``, the code in
``x-amzn-ErrorType``; ``mock_error_event`` ends a stream with an exception frame instead.

Frame faults for tests of the client's decoder: ``mock_bad_crc`` (the Nth frame's message CRC is
wrong) and ``mock_truncate`` (half of the Nth frame is sent, then the connection is cut).
``mock_cached_tokens``: Converse usage with that many more input tokens read from the prompt
cache (``cacheReadInputTokens``, apart from ``inputTokens``, as Bedrock counts them). With a
Converse request, ``mock_*`` settings go in ``additionalModelRequestFields``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
import zlib
from typing import Any
from urllib.parse import unquote

from ...adapters import bedrock
from .core import Call, ErrorEvent, answer, int_or_none, prompt_tokens
from .wire import Dropped

#: HTTP status -> Bedrock's error code for it.
ERROR_CODES = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
               408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
               500: "InternalServerException", 503: "ServiceUnavailableException"}
#: OpenAI's finish reasons (what the mock's answers carry) -> Bedrock's stop reasons.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "content_filtered"}
_BY_PATH = {operation.path: operation for operation in bedrock.OPERATIONS.values()}


def route(path: str) -> tuple[bedrock.Operation, str] | None:
    """The operation and model id of a Bedrock runtime path, else None."""
    parts = path.split("?")[0].strip("/").split("/")
    if len(parts) == 3 and parts[0] == "model" and parts[2] in _BY_PATH:
        return _BY_PATH[parts[2]], unquote(parts[1])
    return None


def error_body(status: int) -> dict[str, Any]:
    return {"message": f"mock error {status}"}


def error_headers(status: int) -> dict[str, str]:
    return {"x-amzn-ErrorType": ERROR_CODES.get(status, "InternalServerException")}


# -- the event-stream framing ----------------------------------------------------------------------------

def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude and its CRC, string headers, payload, message CRC."""
    encoded = b"".join(bytes([len(name)]) + name + b"\x07" + len(value).to_bytes(2, "big") + value
                       for name, value in ((k.encode(), v.encode()) for k, v in headers.items()))
    prelude = (16 + len(encoded) + len(payload)).to_bytes(4, "big") + len(encoded).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + encoded + payload
    return message + zlib.crc32(message).to_bytes(4, "big")


class Frames:
    """Writes the frames of one stream through the call's ``Wire``, with the faults it asks for."""

    def __init__(self, call: Call) -> None:
        call.start_stream("application/vnd.amazon.eventstream")
        self.wire = call.wire
        self.sent = 0
        self.bad_crc = int_or_none(call.body.get("mock_bad_crc"))
        self.truncate = int_or_none(call.body.get("mock_truncate"))

    def event(self, kind: str, payload: dict[str, Any]) -> None:
        # (Bedrock pads each event with a "p" of random length, so that sizes say nothing.)
        data = json.dumps({**payload, "p": "abcdefghijklmnopqrstuvwxyz"[:self.sent % 26]}, separators=(",", ":"))
        self._send(frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                         data.encode()))

    def exception(self, kind: str, message: str) -> None:
        self._send(frame({":exception-type": kind, ":content-type": "application/json",
                          ":message-type": "exception"}, json.dumps({"message": message}).encode()))

    def _send(self, raw: bytes) -> None:
        self.sent += 1
        if self.sent == self.bad_crc:
            raw = raw[:-4] + bytes(b ^ 0xFF for b in raw[-4:])
        if self.sent == self.truncate:
            self.wire.frame(raw[:len(raw) // 2])
            raise Dropped
        self.wire.frame(raw)

    def end(self) -> None:
        self.wire.end()


# -- the answers -----------------------------------------------------------------------------------------

def _settings(call: Call) -> dict[str, Any]:
    """The body the answer is shaped from: a Converse request's ``mock_*`` fields are in its
    ``additionalModelRequestFields``."""
    extra = call.body.get("additionalModelRequestFields")
    return {**call.body, **extra} if isinstance(extra, dict) else call.body


def _pieces(call: Call) -> tuple[list[str], str]:
    reply = answer(_settings(call), call.config.tokens)
    pieces = [d.get("content") or d.get("refusal") or "" for d in reply.deltas if "tool_calls" not in d]
    return pieces, reply.finish_reasons[0]


def converse(call: Call, streams: bool) -> None:
    pieces, finish = _pieces(call)
    stop = STOP_REASONS.get(finish, finish)
    inputs = prompt_tokens(call.body)
    usage = {"inputTokens": inputs, "outputTokens": len(pieces), "totalTokens": inputs + len(pieces)}
    cached = int_or_none(_settings(call).get("mock_cached_tokens"))
    if cached:  # (read from the prompt cache: Bedrock counts them apart from inputTokens)
        usage = {**usage, "cacheReadInputTokens": cached, "totalTokens": usage["totalTokens"] + cached}
    if not streams:
        for _ in call.timed(call.config, pieces):
            pass
        latency = int((time.perf_counter() - call.started) * 1000)
        call.json(200, {"output": {"message": {"role": "assistant", "content": [{"text": "".join(pieces)}]}},
                        "stopReason": stop, "usage": usage, "metrics": {"latencyMs": latency}})
        return
    frames = Frames(call)
    frames.event("messageStart", {"role": "assistant"})
    try:
        for piece, _ in call.timed(call.config, pieces):
            frames.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
    except ErrorEvent:
        frames.exception("modelStreamErrorException", "mock stream error")
        frames.end()
        return
    frames.event("contentBlockStop", {"contentBlockIndex": 0})
    frames.event("messageStop", {"stopReason": stop})
    latency = int((time.perf_counter() - call.started) * 1000)
    frames.event("metadata", {"usage": usage, "metrics": {"latencyMs": latency}})
    frames.end()


def _anthropic_model(model_id: str) -> str:
    """The model an Anthropic answer names: the id without its provider and version parts."""
    return model_id.split("anthropic.")[-1].split(":")[0].rsplit("-v", 1)[0]


def _family_events(family: str, model: str, pieces: list[str], finish: str, inputs: int) -> tuple[
        list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """A family's streamed events: those before the content, one per piece, and those after."""
    stop = STOP_REASONS.get(finish, finish)
    count = len(pieces)
    if family == "anthropic":
        return ([{"type": "message_start", "message": {
                    "id": f"msg_bdrk_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
                    "model": _anthropic_model(model), "content": [], "stop_reason": None,
                    "usage": {"input_tokens": inputs, "output_tokens": 1}}},
                 {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}],
                [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
                 for p in pieces],
                [{"type": "content_block_stop", "index": 0},
                 {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                  "usage": {"output_tokens": count}},
                 {"type": "message_stop"}])
    if family == "nova":
        return ([{"messageStart": {"role": "assistant"}}],
                [{"contentBlockDelta": {"delta": {"text": p}, "contentBlockIndex": 0}} for p in pieces],
                [{"contentBlockStop": {"contentBlockIndex": 0}}, {"messageStop": {"stopReason": stop}},
                 {"metadata": {"usage": {"inputTokens": inputs, "outputTokens": count}, "metrics": {}, "trace": {}}}])
    if family == "llama":
        events = [{"generation": p, "prompt_token_count": inputs if i == 0 else None,
                   "generation_token_count": i + 1, "stop_reason": None} for i, p in enumerate(pieces)]
        return [], events, [{"generation": "", "prompt_token_count": None, "generation_token_count": count,
                             "stop_reason": "length" if finish == "length" else "stop"}]
    return [], [{"outputText": p, "index": 0, "totalOutputTextTokenCount": None, "completionReason": None,
                 "inputTextTokenCount": inputs if i == 0 else None} for i, p in enumerate(pieces)], [
        {"outputText": "", "index": 0, "totalOutputTextTokenCount": count, "completionReason": "FINISH"}]


def _family_answer(family: str, model: str, pieces: list[str], finish: str, inputs: int) -> dict[str, Any]:
    text, stop, count = "".join(pieces), STOP_REASONS.get(finish, finish), len(pieces)
    if family == "anthropic":
        return {"id": f"msg_bdrk_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
                "model": _anthropic_model(model), "content": [{"type": "text", "text": text}],
                "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": inputs, "output_tokens": count}}
    if family == "nova":
        return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop,
                "usage": {"inputTokens": inputs, "outputTokens": count, "totalTokens": inputs + count}}
    if family == "llama":
        return {"generation": text, "prompt_token_count": inputs, "generation_token_count": count,
                "stop_reason": "length" if finish == "length" else "stop"}
    return {"inputTextTokenCount": inputs, "results": [{"tokenCount": count, "outputText": text,
                                                        "completionReason": "FINISH"}]}


def invoke(call: Call, streams: bool, model: str) -> None:
    family = bedrock.family_of(model, call.body).name
    pieces, finish = _pieces(call)
    inputs = prompt_tokens(call.body)
    if not streams:
        for _ in call.timed(call.config, pieces):
            pass
        latency = int((time.perf_counter() - call.started) * 1000)
        call.handler.send_json(200, _family_answer(family, model, pieces, finish, inputs), {
            bedrock.INPUT_TOKENS_HEADER: str(inputs), bedrock.OUTPUT_TOKENS_HEADER: str(len(pieces)),
            bedrock.LATENCY_HEADER: str(latency)})
        return
    before, per_piece, after = _family_events(family, model, pieces, finish, inputs)
    frames = Frames(call)

    def chunk(event: dict[str, Any]) -> None:
        frames.event("chunk", {"bytes": base64.b64encode(json.dumps(event).encode()).decode()})

    for event in before:
        chunk(event)
    first_byte = None
    try:
        for event, when in call.timed(call.config, per_piece):
            first_byte = first_byte or when
            chunk(event)
    except ErrorEvent:
        frames.exception("modelStreamErrorException", "mock stream error")
        frames.end()
        return
    ended = time.perf_counter()
    metrics = {"inputTokenCount": inputs, "outputTokenCount": len(pieces),
               "invocationLatency": int((ended - call.started) * 1000),
               "firstByteLatency": int(((first_byte or ended) - call.started) * 1000)}
    for index, event in enumerate(after):
        chunk({**event, bedrock.INVOCATION_METRICS: metrics} if index == len(after) - 1 else event)
    frames.end()


def handle(call: Call, operation: bedrock.Operation, model: str) -> None:
    """Answer one Bedrock runtime request."""
    if operation.model_body:
        invoke(call, operation.streams, model)
    else:
        converse(call, operation.streams)

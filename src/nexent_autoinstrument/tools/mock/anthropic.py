"""Anthropic's Messages API, as the mock LLM speaks it: a whole ``Message``, or its typed SSE
events (compact JSON), with thinking and tool-use blocks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .core import Call, ErrorEvent, Sample, answer, prompt_tokens, slices

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                429: "rate_limit_error", 529: "overloaded_error"}


def error_body(status: int) -> dict[str, Any]:
    """Anthropic's error body for an HTTP status."""
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"),
                                       "message": f"mock error {status}"}}


def messages(call: Call) -> None:
    """``/v1/messages``: a whole ``Message``, or its typed SSE events."""
    body, config = call.body, call.config
    reply = answer(body, config.tokens)
    model, mid = body.get("model", "mock-claude"), f"msg_{uuid.uuid4().hex[:20]}"
    finish = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
    reason = finish.get(reply.finish_reasons[0], reply.finish_reasons[0])
    blocks: list[tuple[dict[str, Any], str, list[str]]] = []  # (block, delta type, pieces)
    thinking = [d["reasoning_content"] for d in reply.deltas if "reasoning_content" in d]
    if thinking:
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, "thinking_delta", thinking))
    if reply.tool_call:
        blocks.append(({"type": "tool_use", "id": "toolu_" + reply.call_id[5:], "name": reply.tool_call["name"],
                        "input": {}}, "input_json_delta", slices(reply.tool_call["arguments"])))
    else:
        text = [d.get("content") or d.get("refusal") or "" for d in reply.deltas if "reasoning_content" not in d]
        blocks.append(({"type": "text", "text": ""}, "text_delta", text))
    generated = sum(len(pieces) for _, _, pieces in blocks)
    usage = {"input_tokens": prompt_tokens(body), "output_tokens": generated}
    field = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
    if not body.get("stream"):
        for _ in call.schedule(replace(config, tokens=generated)):
            pass
        content = []
        for block, kind, pieces in blocks:
            whole = "".join(pieces)
            content.append({**block, "input": json.loads(whole)} if kind == "input_json_delta" else
                           {**block, field[kind]: whole})
        call.json(200, {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
                        "stop_reason": reason, "stop_sequence": None, "usage": usage})
        return
    call.start_stream("text/event-stream; charset=utf-8")

    def send(payload: dict[str, Any]) -> None:
        call.wire.event(json.dumps(payload, separators=(",", ":")).encode(), payload["type"])

    send({"type": "message_start", "message": {"id": mid, "type": "message", "role": "assistant", "model": model,
                                               "content": [], "stop_reason": None, "stop_sequence": None,
                                               "usage": {**usage, "output_tokens": 1}}})
    send({"type": "ping"})
    deltas = [(index, kind, piece) for index, (_, kind, parts) in enumerate(blocks) for piece in parts]
    message_delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
                     "usage": {"output_tokens": generated}}
    usage_first = "usage_first" in call.dialect
    current = -1
    try:
        for number, ((index, kind, piece), _) in enumerate(call.timed(config, deltas)):
            if usage_first and number == len(deltas) - 1:
                send(message_delta)  # the usage before the last delta (dialect usage_first)
            if index != current:
                if current >= 0:
                    send({"type": "content_block_stop", "index": current})
                send({"type": "content_block_start", "index": index, "content_block": blocks[index][0]})
                current = index
            send({"type": "content_block_delta", "index": index, "delta": {"type": kind, field[kind]: piece}})
    except ErrorEvent:
        send({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        call.end()
        return
    if current >= 0:
        send({"type": "content_block_stop", "index": current})
    if not usage_first or not deltas:
        send(message_delta)
    send({"type": "message_stop"})
    call.end()


#: The handler of each generation endpoint, by its operation in ``adapters.endpoints.ANTHROPIC_ENDPOINTS``.
HANDLERS: dict[str, Callable[[Call], None]] = {"chat": messages}

#: A client's request to each route, by operation (``core.Sample``).
SAMPLES: dict[str, Sample] = {"chat": Sample(
    path="/v1/messages", whole_path="/v1/messages", provider="anthropic", model="claude-test",
    response_model="claude-test", stream_in_body=True, stream_error="overloaded_error",
    body={"model": "claude-test", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]})}

"""Cohere's v2 Chat API, as the mock LLM speaks it: ``/v2/chat``, one whole ``ChatResponse``, or
with ``"stream": true`` its typed SSE events (``message-start``, ``content-*``, ``tool-plan-delta``,
``tool-call-*``, ``message-end`` with the finish reason and usage)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .core import Call, ErrorEvent, Sample, answer, prompt_tokens

_FINISH = {"stop": "COMPLETE", "tool_calls": "TOOL_CALL", "length": "MAX_TOKENS", "content_filter": "ERROR"}


def error_body(status: int) -> dict[str, Any]:
    """Cohere's error body (any HTTP status)."""
    return {"id": str(uuid.uuid4()), "message": f"mock error {status}"}


def chat(call: Call) -> None:
    """``/v2/chat``: a whole answer, or its SSE events."""
    body, config = call.body, call.config
    limit = body.get("max_tokens")
    if isinstance(limit, int) and limit > 0:
        config = replace(config, tokens=min(config.tokens, limit))
    reply = answer(body, config.tokens)
    mid = str(uuid.uuid4())
    reason = _FINISH.get(reply.finish_reasons[0], reply.finish_reasons[0].upper())
    # (kind, piece): thinking and text are content; a tool call's plan, then its arguments
    plan = [d["reasoning_content"] for d in reply.deltas if "reasoning_content" in d]
    if reply.tool_call:
        pieces = [("tool-plan-delta", p) for p in plan] + [
            ("tool-call-delta", d["tool_calls"][0]["function"]["arguments"]) for d in reply.deltas
            if "tool_calls" in d and d["tool_calls"][0]["function"]["arguments"]]
    else:
        pieces = [("thinking", p) for p in plan] + [
            ("text", d.get("content") or d.get("refusal") or "") for d in reply.deltas if "reasoning_content" not in d]
    tokens = {"input_tokens": prompt_tokens(body), "output_tokens": len(pieces)}
    usage = {"billed_units": dict(tokens), "tokens": dict(tokens)}
    if not body.get("stream"):
        for _ in call.schedule(replace(config, tokens=len(pieces))):
            pass
        message: dict[str, Any] = {"role": "assistant"}
        if reply.tool_call:
            message["tool_plan"] = "".join(p for kind, p in pieces if kind == "tool-plan-delta")
            message["tool_calls"] = [{"id": reply.call_id, "type": "function", "function": {
                "name": reply.tool_call["name"], "arguments": reply.tool_call["arguments"]}}]
        else:
            message["content"] = [{"type": kind, kind: "".join(p for k, p in pieces if k == kind)}
                                  for kind in ("thinking", "text") if any(k == kind for k, _ in pieces)]
        call.json(200, {"id": mid, "finish_reason": reason, "message": message, "usage": usage})
        return
    call.start_sse()

    def send(payload: dict[str, Any]) -> None:
        call.wire.event(json.dumps(payload, separators=(",", ":")).encode(), payload["type"])

    send({"type": "message-start", "id": mid, "delta": {"message": {
        "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}})
    current: str | None = None  # the open block's kind
    index = -1

    def close() -> None:
        if current in ("text", "thinking"):
            send({"type": "content-end", "index": index})
        elif current == "tool-call-delta":
            send({"type": "tool-call-end", "index": 0})

    try:
        for kind, piece in (item for item, _ in call.timed(config, pieces)):
            if kind != current and kind != "tool-plan-delta":
                close()
                if kind == "tool-call-delta":
                    send({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
                        "id": reply.call_id, "type": "function",
                        "function": {"name": (reply.tool_call or {}).get("name"), "arguments": ""}}}}})
                else:
                    index += 1
                    send({"type": "content-start", "index": index,
                          "delta": {"message": {"content": {"type": kind, kind: ""}}}})
            current = kind
            if kind == "tool-plan-delta":
                send({"type": kind, "delta": {"message": {"tool_plan": piece}}})
            elif kind == "tool-call-delta":
                arguments = {"tool_calls": {"function": {"arguments": piece}}}
                send({"type": kind, "index": 0, "delta": {"message": arguments}})
            else:
                send({"type": "content-delta", "index": index, "delta": {"message": {"content": {kind: piece}}}})
    except ErrorEvent:
        send({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "internal server error"}})
        call.end()
        return
    close()
    send({"type": "message-end", "delta": {"finish_reason": reason, "usage": usage}})
    call.end()


#: The handler of each generation endpoint, by its operation in the protocol's routes.
HANDLERS: dict[str, Callable[[Call], None]] = {"chat": chat}

#: A client's request to each route, by operation (``core.Sample``).
SAMPLES: dict[str, Sample] = {"chat": Sample(
    path="/v2/chat", whole_path="/v2/chat", provider="cohere", model="command-test",
    response_model=None, stream_in_body=True, stream_error="stream_error",
    body={"model": "command-test", "messages": [{"role": "user", "content": "hello"}]})}

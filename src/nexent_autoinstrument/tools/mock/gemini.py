"""The Gemini API, as the mock LLM speaks it: ``:generateContent`` (one ``GenerateContentResponse``)
and ``:streamGenerateContent?alt=sse`` (one per token, CRLF-separated as Google sends them)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .core import Call, ErrorEvent, Sample, answer, prompt_tokens

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def error_body(status: int) -> dict[str, Any]:
    """Google's error body for an HTTP status."""
    return {"error": {"code": status, "message": f"mock error {status}", "status": _STATUS.get(status, "UNKNOWN")}}


def generate_content(call: Call) -> None:
    """A whole answer, or SSE events when the endpoint streams (``:streamGenerateContent``)."""
    body, config = call.body, call.config
    model = call.path.rsplit("/", 1)[-1].partition(":")[0]
    limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
    if isinstance(limit, int) and limit > 0:
        config = replace(config, tokens=min(config.tokens, limit))
    reply = answer(body, config.tokens)
    rid = f"resp_{uuid.uuid4().hex[:20]}"
    parts: list[dict[str, Any]] = [{"text": d["reasoning_content"], "thought": True} if "reasoning_content" in d
                                   else {"text": d.get("content") or d.get("refusal") or ""}
                                   for d in reply.deltas if "tool_calls" not in d]
    if reply.tool_call:
        parts.append({"functionCall": {"name": reply.tool_call["name"],
                                       "args": json.loads(reply.tool_call["arguments"])}})
    finish = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
    reason = finish.get(reply.finish_reasons[0], reply.finish_reasons[0])
    prompt = prompt_tokens(body)
    thoughts = sum(1 for part in parts if part.get("thought"))

    def response(pieces: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": pieces, "role": "model"}, "index": 0}
        usage: dict[str, Any] = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        if done:
            candidate["finishReason"] = reason
            usage = {"promptTokenCount": prompt, "candidatesTokenCount": len(parts) - thoughts,
                     "totalTokenCount": prompt + len(parts)}
            if thoughts:
                usage["thoughtsTokenCount"] = thoughts
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": rid}

    if not call.endpoint.streams:
        for _ in call.timed(config, parts):
            pass
        merged: list[dict[str, Any]] = []
        for part in parts:  # consecutive text parts of one kind come back as one
            same_kind = merged and "text" in merged[-1] and part.get("thought") == merged[-1].get("thought")
            if same_kind and "text" in part:
                merged[-1] = {**merged[-1], "text": merged[-1]["text"] + part["text"]}
            else:
                merged.append(part)
        call.json(200, response(merged, True))
        return
    call.start_stream("text/event-stream", newline=b"\r\n")
    try:
        for index, (part, _) in enumerate(call.timed(config, parts)):
            last = index == len(parts) - 1
            call.wire.event(json.dumps(response([part], last)).encode())
    except ErrorEvent:
        error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
        call.wire.event(json.dumps(error).encode())
    call.end()


#: The handler of each generation endpoint, by its operation in ``adapters.endpoints.GEMINI_ENDPOINTS``
#: (whether it streams is the endpoint's ``streams``).
HANDLERS: dict[str, Callable[[Call], None]] = {"generate_content": generate_content}

#: A client's request to each route, by operation (``core.Sample``).
SAMPLES: dict[str, Sample] = {"generate_content": Sample(
    path="/v1beta/models/gemini-test:streamGenerateContent?alt=sse",
    whole_path="/v1beta/models/gemini-test:generateContent", provider="gcp.gemini", model="gemini-test",
    response_model="gemini-test", stream_in_body=False, stream_error="UNAVAILABLE",
    body={"contents": [{"role": "user", "parts": [{"text": "hello"}]}]})}

"""Ollama's native API, as the mock LLM speaks it: ``/api/chat`` and ``/api/generate``, NDJSON
lines (the default) or one JSON object with ``"stream": false``; the last one with the counts and
the server's timings of this very request (``mock_load``: the load time it reports)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from .core import Call, ErrorEvent, Sample, answer, prompt_tokens


def error_body(status: int) -> dict[str, Any]:
    """Ollama's error body (any HTTP status)."""
    return {"error": f"mock error {status}"}


def generate(call: Call, chat: bool = False) -> None:
    """``/api/generate``, or ``/api/chat`` with ``chat``."""
    body, config, started = call.body, call.config, call.started
    reply = answer(body, config.tokens)
    model = body.get("model", "mock-llama")
    limit = (body.get("options") or {}).get("num_predict")
    if isinstance(limit, int) and limit > 0:
        config = replace(config, tokens=min(config.tokens, limit))
        reply = answer(body, config.tokens)
    key = "content" if chat else "response"
    pieces: list[dict[str, Any]] = [{"thinking": d["reasoning_content"], key: ""} if "reasoning_content" in d
                                    else {key: d.get("content") or d.get("refusal") or ""}
                                    for d in reply.deltas if "tool_calls" not in d]
    if reply.tool_call and chat:
        tool_call = {"name": reply.tool_call["name"], "arguments": json.loads(reply.tool_call["arguments"])}
        pieces.append({key: "", "tool_calls": [{"function": tool_call}]})

    def line(piece: dict[str, Any], **extra: Any) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        inner = {"message": {"role": "assistant", **piece}} if chat else piece
        return {"model": model, "created_at": stamp, **inner, **extra}

    def final(sent: list[float]) -> dict[str, Any]:
        ended = time.perf_counter()
        load = min(float(body.get("mock_load", 0.001)), config.ttft / 2)
        first, last = (sent[0], sent[-1]) if sent else (ended, ended)
        decode = (last - first) * len(sent) / (len(sent) - 1) if len(sent) > 1 else config.itl
        ns = lambda seconds: int(seconds * 1e9)  # noqa: E731
        return line({key: ""}, done=True, done_reason=finish, total_duration=ns(ended - started),
                    load_duration=ns(load), prompt_eval_count=prompt_tokens(body),
                    prompt_eval_duration=ns(max(0.0, first - started - load)), eval_count=len(sent),
                    eval_duration=ns(decode), **({} if chat else {"context": [1, 2, 3]}))

    finish = {"tool_calls": "stop"}.get(reply.finish_reasons[0], reply.finish_reasons[0])
    sent: list[float] = []
    if not body.get("stream", True):
        for _, when in call.timed(config, pieces):
            sent.append(when)
        whole = final(sent)
        text = "".join(p[key] for p in pieces)
        if chat:
            whole["message"] = {"role": "assistant", "content": text, **(
                {"tool_calls": pieces[-1]["tool_calls"]} if reply.tool_call else {})}
        else:
            whole["response"] = text
        call.json(200, whole)
        return
    call.start_stream("application/x-ndjson")
    try:
        for piece, when in call.timed(config, pieces):
            sent.append(when)
            call.wire.line(json.dumps(line(piece, done=False), separators=(",", ":")).encode())
    except ErrorEvent:
        call.wire.line(b'{"error":"an error was encountered while running the model"}')
        call.end()
        return
    call.wire.line(json.dumps(final(sent), separators=(",", ":")).encode())
    call.end()


#: The handler of each generation endpoint, by its operation in ``adapters.endpoints.OLLAMA_ENDPOINTS``.
HANDLERS: dict[str, Callable[[Call], None]] = {"chat": partial(generate, chat=True), "text_completion": generate}

#: A client's request to each route, by operation (``core.Sample``).
SAMPLES: dict[str, Sample] = {
    "chat": Sample(path="/api/chat", whole_path="/api/chat", provider="ollama", model="llama-test",
                   response_model="llama-test", stream_in_body=True, stream_error="stream_error",
                   body={"model": "llama-test", "messages": [{"role": "user", "content": "hello"}]}),
    "text_completion": Sample(path="/api/generate", whole_path="/api/generate", provider="ollama",
                              model="llama-test", response_model="llama-test", stream_in_body=True,
                              stream_error="stream_error",
                              body={"model": "llama-test", "prompt": "hello"}),
}

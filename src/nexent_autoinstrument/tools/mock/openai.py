"""The OpenAI API, as the mock LLM speaks it: chat completions, completions, embeddings and the
Responses API (whole or streamed), and the resources around them, with realistic shapes and no
state: stored chat completions and responses, models, moderations."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from .core import Call, answer, prompt_tokens

#: A resource's path pattern (segments after ``/v1``, ``*`` for any one) -> its answer.
Routes = dict[tuple[str, ...], Callable[[], Any]]

MODELS = ("mock-gpt", "mock-gpt-mini", "mock-embed")
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                         "sexual/minors", "violence", "violence/graphic")


def error_body(status: int) -> dict[str, Any]:
    """OpenAI's error body for an HTTP status."""
    return {"error": {"message": f"mock error {status}",
                      "type": "server_error" if status >= 500 else "invalid_request_error",
                      "param": None, "code": str(status)}}


# -- generation -----------------------------------------------------------------------------------


def completions(call: Call, chat: bool = False) -> None:
    """``/chat/completions`` (``chat``) and ``/completions``: a whole answer, or SSE chunks."""
    body, config = call.body, call.config
    model = body.get("model", "mock-gpt")
    cid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
    reply = answer(body, config.tokens)
    deltas = reply.deltas if chat else [{"content": d["content"]} for d in reply.deltas if "content" in d]
    config = replace(config, tokens=len(deltas))
    generated = len(deltas) * reply.n
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens(body), "completion_tokens": generated,
                             "total_tokens": prompt_tokens(body) + generated}
    cached = body.get("mock_cached_tokens")  # (of the prompt, read from the provider's prompt cache)
    if isinstance(cached, int):
        usage["prompt_tokens_details"] = {"cached_tokens": min(cached, usage["prompt_tokens"]), "audio_tokens": 0}
    obj = "chat.completion" if chat else "text_completion"
    if not body.get("stream"):
        for _ in call.schedule(config):
            pass
        choices = []
        for index in range(reply.n):
            if not chat:
                choices.append({"index": index, "text": reply.text("content") or "",
                                "finish_reason": reply.finish_reasons[index], "logprobs": None})
                continue
            content = reply.text("content")
            answered = reply.tool_call or reply.text("refusal") is not None
            message: dict[str, Any] = {"role": "assistant", "content": content if answered else content or ""}
            for key in ("refusal", "reasoning_content"):
                if reply.text(key) is not None:
                    message[key] = reply.text(key)
            if reply.tool_call:
                message["tool_calls"] = [{"id": reply.call_id, "type": "function",
                                          "function": dict(reply.tool_call)}]
            choices.append({"index": index, "message": message, "finish_reason": reply.finish_reasons[index],
                            "logprobs": None})
        call.json(200, {"id": cid, "object": obj, "created": int(time.time()), "model": model,
                        "choices": choices, "usage": usage})
        return
    created = int(time.time())
    call.start_sse()

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = ({"index": index, "delta": delta, "finish_reason": finish, "logprobs": None} if chat else
                  {"index": index, "text": delta.get("content", ""), "finish_reason": finish, "logprobs": None})
        return {"id": cid, "object": f"{obj}.chunk" if chat else obj, "created": created,
                "model": model, "choices": [choice]}

    if chat:
        for index in range(reply.n):
            call.event(chunk(index, {"role": "assistant", "content": ""}))
    for token in call.schedule(config):
        for index in range(reply.n):
            call.event(chunk(index, deltas[token]))
    usage_chunk = {"id": cid, "object": f"{obj}.chunk" if chat else obj, "created": created,
                   "model": model, "choices": [], "usage": usage}
    with_usage = (body.get("stream_options") or {}).get("include_usage") or body.get("mock_stream_usage")
    if with_usage and "usage_first" in call.dialect:
        call.event(usage_chunk)
    for index in range(reply.n):
        call.event(chunk(index, {}, reply.finish_reasons[index]))
    if with_usage and "usage_first" not in call.dialect:
        call.event(usage_chunk)
    call.event("[DONE]")
    call.end()


def embeddings(call: Call) -> None:
    """``/embeddings``: one short vector per input, after the time to first token."""
    body = call.body
    inputs = body.get("input") or [""]
    inputs = inputs if isinstance(inputs, list) else [inputs]
    time.sleep(max(0.0, call.started + call.config.ttft - time.perf_counter()))
    tokens = prompt_tokens(body)
    call.json(200, {"object": "list", "model": body.get("model", "mock-embed"),
                    "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]}
                             for i in range(len(inputs))],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def response_object(rid: str, status: str, text: str | None, model: str = "mock-gpt",
                    usage: dict[str, Any] | None = None, mid: str = "msg_stored1",
                    tool: dict[str, Any] | None = None, call_id: str = "") -> dict[str, Any]:
    """A Responses API ``response`` object with one message (or function call) output."""
    output: list[dict[str, Any]] = []
    if tool:
        output.append({"type": "function_call", "id": mid.replace("msg_", "fc_"), "call_id": call_id,
                       "name": tool["name"], "arguments": tool["arguments"], "status": "completed"})
    elif text is not None:
        output.append({"type": "message", "id": mid, "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
    return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
            "model": model, "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [], "usage": usage if status == "completed" else None}


def responses(call: Call) -> None:
    """``/responses``: a whole ``response``, or its typed SSE events (text or a function call)."""
    body, config = call.body, call.config
    model = body.get("model", "mock-gpt")
    rid = f"resp_{uuid.uuid4().hex[:16]}"
    mid = f"msg_{uuid.uuid4().hex[:16]}"
    reply = answer(body, config.tokens)
    tool = reply.tool_call
    words = [d.get("content") or d.get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
             for d in reply.deltas if "content" in d or "tool_calls" in d]
    if tool:
        words = words[1:]  # the first tool-call delta only names the function
    config = replace(config, tokens=len(words))
    usage = {"input_tokens": prompt_tokens(body), "output_tokens": len(words),
             "total_tokens": prompt_tokens(body) + len(words),
             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    text = "".join(words)

    def response(status: str, text: str | None) -> dict[str, Any]:
        return response_object(rid, status, text, model, usage, mid,
                               tool if status == "completed" else None, reply.call_id)

    if not body.get("stream"):
        for _ in call.schedule(config):
            pass
        call.json(200, response("completed", text))
        return
    call.start_sse()
    seq = iter(range(1_000_000))

    def send(event: dict[str, Any]) -> None:
        call.event({"type": event["type"], "sequence_number": next(seq), **event}, event["type"])

    send({"type": "response.created", "response": response("in_progress", None)})
    if tool:
        item = {"type": "function_call", "id": mid.replace("msg_", "fc_"), "call_id": reply.call_id,
                "name": tool["name"], "arguments": "", "status": "in_progress"}
        where = {"item_id": item["id"], "output_index": 0}
        send({"type": "response.output_item.added", "output_index": 0, "item": item})
        for index in call.schedule(config):
            send({"type": "response.function_call_arguments.delta", **where, "delta": words[index]})
        send({"type": "response.function_call_arguments.done", **where, "arguments": text})
        send({"type": "response.output_item.done", "output_index": 0,
              "item": {**item, "arguments": text, "status": "completed"}})
        send({"type": "response.completed", "response": response("completed", text)})
        call.end()
        return
    message = {"type": "message", "id": mid, "status": "in_progress", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    send({"type": "response.output_item.added", "output_index": 0, "item": message})
    send({"type": "response.content_part.added", **where, "part": part})
    for index in call.schedule(config):
        send({"type": "response.output_text.delta", **where, "delta": words[index], "logprobs": []})
    send({"type": "response.output_text.done", **where, "text": text, "logprobs": []})
    send({"type": "response.content_part.done", **where, "part": {**part, "text": text}})
    send({"type": "response.output_item.done", "output_index": 0,
          "item": {**message, "status": "completed", "content": [{**part, "text": text}]}})
    send({"type": "response.completed", "response": response("completed", text)})
    call.end()


#: The handler of each generation endpoint, by its operation in ``adapters.endpoints.OPENAI_ENDPOINTS``.
HANDLERS: dict[str, Callable[[Call], None]] = {
    "chat": partial(completions, chat=True),
    "text_completion": completions,
    "embeddings": embeddings,
    "generate_content": responses,
}


# -- the other resources --------------------------------------------------------------------------


def _list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": items, "first_id": items[0]["id"], "last_id": items[-1]["id"],
            "has_more": False}


def stored_completion(cid: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion", "created": 1700000000, "model": "mock-gpt",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "stored answer"},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            "metadata": metadata or {}}


def moderation(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input") or [""]
    result = {"flagged": False, "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
              "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 0.0001),
              "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES}}
    return {"id": f"modr-{uuid.uuid4().hex[:16]}", "model": body.get("model") or "omni-moderation-latest",
            "results": [result for _ in (inputs if isinstance(inputs, list) else [inputs])]}


def get_routes(parts: list[str]) -> Routes:
    """GET: stored completions and responses (list, retrieve, messages, input items), models."""
    return {("chat", "completions", "*"): lambda: stored_completion(parts[2]),
            ("chat", "completions", "*", "messages"): lambda: _list([{
                "id": f"{parts[2]}-0", "role": "user", "content": "hello", "name": None,
                "content_parts": None}]),
            ("chat", "completions"): lambda: _list([stored_completion("chatcmpl-stored1"),
                                                    stored_completion("chatcmpl-stored2")]),
            ("responses", "*"): lambda: response_object(parts[1], "completed", "stored answer"),
            ("responses", "*", "input_items"): lambda: _list([{
                "id": "msg_input1", "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_text", "text": "hello"}]}]),
            ("models",): lambda: {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in MODELS]},
            ("models", "*"): lambda: {"id": parts[1], "object": "model", "created": 0, "owned_by": "mock"}}


def delete_routes(parts: list[str]) -> Routes:
    """DELETE: a stored completion or response."""
    return {("chat", "completions", "*"): lambda: {"id": parts[2], "object": "chat.completion.deleted",
                                                   "deleted": True},
            ("responses", "*"): lambda: {"id": parts[1], "object": "response.deleted", "deleted": True}}


def post_routes(parts: list[str], body: dict[str, Any]) -> Routes:
    """POST that is no generation: update a stored completion, cancel a response, moderations."""
    return {("chat", "completions", "*"): lambda: stored_completion(parts[2], body.get("metadata")),
            ("responses", "*", "cancel"): lambda: response_object(parts[1], "cancelled", None),
            ("moderations",): lambda: moderation(body)}

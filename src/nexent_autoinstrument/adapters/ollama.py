"""Ollama's native API (``POST /api/chat``, ``/api/generate``) -> neutral facts for the call tracker.

A stream is NDJSON: one JSON object per line, the last one with ``"done": true``, the token
counts (``prompt_eval_count``, ``eval_count``) and the server's own timings in nanoseconds
(``load_duration``, ``prompt_eval_duration``, ``eval_duration``, ``total_duration``). Those
timings go on the span beside what the agent measured: the server's decode rate is a ground
truth to compare the client-side rate with. A whole answer (``"stream": false``) is that last
object with the complete text. The API streams unless the request says ``"stream": false``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import conventions as names
from .protocol import SDK, Protocol, Route
from .usage import token_count

if TYPE_CHECKING:
    from ..tracker import CallTracker

PROVIDER = "ollama"
#: Server timing field (nanoseconds) -> span attribute (seconds).
SERVER_TIMINGS = (("load_duration", names.LLM_SERVER_LOAD), ("prompt_eval_duration", names.LLM_SERVER_PROMPT_EVAL),
                  ("eval_duration", names.LLM_SERVER_EVAL), ("total_duration", names.LLM_SERVER_TOTAL))


def provider_for(host: str | None, azure: bool = False) -> str:
    """``gen_ai.provider.name`` of the native API."""
    return PROVIDER


def read_event(tracker: CallTracker, event: dict[str, Any]) -> None:
    """One streamed line: a piece of the answer (text, thinking or tool calls), or the last one."""
    message = event.get("message")
    piece = message if isinstance(message, dict) else event  # /api/chat, else /api/generate
    text = piece.get("content" if piece is message else "response")
    if text or piece.get("thinking") or piece.get("tool_calls"):
        tracker.content(text if isinstance(text, str) and text else None)
    if tracker.response_model is None:
        tracker.response(event.get("model"))
    if event.get("done") is True:
        _read_final(tracker, event)
    elif "error" in event:
        tracker.fail("stream_error")


def read_response(tracker: CallTracker, answer: Any) -> None:
    """A whole answer (``"stream": false``): model, counts, timings and, for capture, the text."""
    if not isinstance(answer, dict):
        return
    tracker.response(answer.get("model"))
    _read_final(tracker, answer)
    if tracker.texts is not None:
        message = answer.get("message")
        text = message.get("content") if isinstance(message, dict) else answer.get("response")
        tracker.whole_text(text if isinstance(text, str) else "")


def _read_final(tracker: CallTracker, event: dict[str, Any]) -> None:
    reason = event.get("done_reason")
    if reason:
        tracker.finish_reason(reason)
    output_tokens = token_count(event.get("eval_count"))
    tracker.usage(token_count(event.get("prompt_eval_count")), output_tokens)
    server: dict[str, Any] = {}
    for field, attribute in SERVER_TIMINGS:
        nanoseconds = token_count(event.get(field))
        if nanoseconds is not None:
            server[attribute] = nanoseconds / 1e9
    decode = server.get(names.LLM_SERVER_EVAL)
    if output_tokens and decode:
        server[names.LLM_SERVER_RATE] = output_tokens / decode
    if server:
        tracker.annotate(server)


PROTOCOL = Protocol(
    name="ollama",
    routes=(  # (its OpenAI-compatible ``/v1`` paths are the openai protocol's)
        Route(suffix="/api/chat", operation="chat", streams=None, read_item=None, read_event=read_event,
              read_response=read_response, skim=None, plain_key=b"", accepts_stream_options=False),
        Route(suffix="/api/generate", operation="text_completion", streams=None, read_item=None,
              read_event=read_event, read_response=read_response, skim=None, plain_key=b"",
              accepts_stream_options=False),
    ),
    provider=provider_for,
    framing="ndjson",
    stream_default=True,
    model_from_path=None,
    reports_usage=True,
    end_marker=None,
    end_key="done",
    end_values=frozenset({True}),
    usage_only_event=None,
    usage_only_item=None,
    request_fields=(
        (("options", "temperature"), "gen_ai.request.temperature"),
        (("options", "top_p"), "gen_ai.request.top_p"),
        (("options", "top_k"), "gen_ai.request.top_k"),
        (("options", "num_predict"), "gen_ai.request.max_tokens"),
        (("options", "seed"), "gen_ai.request.seed"),
    ),
    response_headers=(),
    sdk=SDK(package="ollama", supported=("ollama >= 0.4",), patched=False),
)

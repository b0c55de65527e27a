"""A mock OpenAI-compatible LLM server, for the demo, the tests and dashboards without an API key.

Serves ``/v1/chat/completions`` (streaming, with ``stream_options.include_usage``, and ``n``
choices), ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses`` (streaming and not) and
``/v1/models``. Timing is scheduled from the moment the request arrives, so the time to first
token and the gaps between tokens are what was configured, plus jitter. Next to them, with
realistic shapes and no state: stored chat completions (list, retrieve, update, delete, messages),
``/v1/responses/{id}`` (retrieve, delete, cancel, input_items), ``/v1/models/{id}`` and
``/v1/moderations``.

Per request, a JSON body may override the server's defaults with ``mock_ttft``,
``mock_itl`` (seconds between tokens), ``mock_tokens``, ``mock_error`` (an HTTP status to
answer with), ``mock_drop_after`` (cut the connection after that many content chunks),
``mock_stall_at`` with ``mock_stall`` (pause that many seconds before that token),
``mock_fail_attempts`` (answer ``mock_fail_status``, default 503, until the SDK's
``x-stainless-retry-count`` reaches it), and shape what is answered with ``mock_content``
(the exact text, or a list of the chunks), ``mock_n`` (choices, like ``n``),
``mock_finish_reason`` (one, or a list per choice), ``mock_tool_call`` (``true`` or
``{"name", "arguments"}``), ``mock_refusal`` and ``mock_reasoning`` (text; reasoning is sent as
``reasoning_content`` before the answer), ``mock_stream_usage`` (a usage chunk even when not
asked for) and ``mock_reject_stream_options`` (answer 400 when the body has ``stream_options``,
as some OpenAI-compatible servers do; ``MockConfig.reject_stream_options`` makes a whole
server do so).

A request's ``mock_label`` names it: its timeline (arrival, each token's send time) is kept for
in-process tests, and ``GET /mock/requests/<label>`` says how many requests carried it (what a
server received, for tests in other processes).

Wire dialects: ``mock_dialect`` (a name, a comma-separated string or a list; ``MockConfig.dialect``
and ``--dialect`` for a whole server, which a request's own replaces) changes how the same events
of every stream (OpenAI's and Anthropic's SSE, Gemini's SSE, Ollama's NDJSON) are written:
``crlf`` or ``cr`` line ends, ``nospace`` (``data:{...}``), ``fields`` (a comment, ``id:`` and
``retry:`` lines in each event, and ``event: message`` where it had no name), ``gzip`` or
``deflate`` (a compressed body, flushed after each event), ``bytewise`` (each byte its own HTTP
chunk), ``usage_first`` (OpenAI's usage chunk before the finish chunks; Anthropic's
``message_delta`` before the last content delta), ``no_done`` (no ``[DONE]``; Anthropic: no
``message_stop``). ``mock_cut_after`` (or ``cut_after=N`` in the dialect) closes the connection
right after the Nth event, without the chunked body's end. ``Wire`` writes them all.

The modules: ``server`` (the HTTP plumbing, and the routes: POST paths by the suffixes of the
agent's endpoint table), ``core`` (``MockConfig``, the answer every protocol reshapes, one request
being answered, its schedule, a client's ``Sample`` request), ``wire`` (the dialects), and one
module per protocol of the registry, named as the protocol (``openai``, ``anthropic``...).
``nexent-autoinstrument mock-llm`` runs ``main``.
"""

from .core import MockConfig
from .server import MockLLMHandler, MockLLMServer, main, start_in_thread
from .wire import DIALECTS, Dialect, Wire

__all__ = ["DIALECTS", "Dialect", "MockConfig", "MockLLMHandler", "MockLLMServer", "Wire", "main", "start_in_thread"]

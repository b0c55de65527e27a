"""Server dialects: the same answers written another way on the wire (the mock LLM's ``mock_dialect``),
read through the SDKs and raw, bare, under the agent, and (openai SDK calls) with usage injection.

The dialects: CRLF or CR line ends, ``data:`` without its space, comment, ``id:``, ``retry:`` and
``event:`` fields, gzip and deflate, a body sent one byte per HTTP chunk, the usage before the finish
(the caller's own ``include_usage``, or only the agent's), no ``[DONE]`` (Anthropic: no
``message_stop``), one mix of them, and the plain wire as the baseline; then a connection cut right
after each event in turn. The cases are made from a table, protocols x dialects x readers, and named
``dialect_<protocol>_<dialect>_<reader>``: the protocols are OpenAI's chat, completions and responses
streams, Anthropic's Messages SSE, Ollama's NDJSON and Gemini's SSE; the readers are each SDK's
stream (sync and async), openai's ``stream.response`` and ``with_streaming_response`` bodies, and
plain httpx and httpx2 ``client.stream("POST", ...)`` read with iter_lines, iter_bytes, iter_text,
iter_raw or read. A pair that does not exist (an API response has no iter_raw, NDJSON has no SSE
fields, Gemini has no end marker) makes no case. Three CRLF and three gzip cases (``_timing_``) also
note whether the first and the last item arrived while the server was still sending, or after.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cases_providers import ANTHROPIC_SPAN, gemini_config, message_args, sdk
from kit import (
    ANY,
    MESSAGES,
    MOCK_ROOT,
    MODEL,
    RAISED,
    TOKENS,
    Seen,
    _tls,
    aclient,
    case,
    chat_args,
    client,
    describe_error,
    version,
)

SSE = ("plain", "crlf", "cr", "nospace", "fields", "gzip", "deflate", "bytewise", "mixed")
SPECS = {"plain": "", "mixed": "crlf,nospace,fields,gzip,bytewise", "agent_usage_first": "usage_first"}
CUT_TOKENS = 3  # the answer's length in the cut cases: a case per event
TIMING = {"mock_tokens": 5, "mock_ttft": 0.01, "mock_itl": 0.06}  # the last token at ~0.25 s (not a slow call)
SERVER_SENDING = 0.12  # seconds after the request: the server is still sending (see TIMING)
#: openai 1.x reads the body to its end after ``[DONE]`` (so it gets a cut after it); 2.x and later stop there.
OPENAI_STOPS_AT_DONE = int(version().split(".")[0]) >= 2
#: google-genai reads only ``data: `` lines: a comment or ``data:{`` makes it raise (bare as well).
GENAI_UNREADABLE = ("nospace", "fields", "mixed")


@dataclass(frozen=True)
class Call:
    """A case's request: the mock LLM's overrides, and the caller's own extra arguments."""

    mock: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reader:
    fn: Callable[..., Any]  # (seen, call) -> None, or a coroutine function
    injects: bool | None = None  # an openai SDK stream the agent asks usage for (False: one it never does)
    sdk_span: bool = False  # an anthropic SDK call (its own span, adopted)
    stops_at_end: bool = False  # stops reading at the end marker, so a cut after it is never seen
    genai: bool = False  # google-genai's stream


@dataclass(frozen=True)
class Protocol:
    path: str  # the raw request's path (under the mock's root)
    body: Callable[[Call], dict[str, Any]]  # the raw request's JSON body
    expect: dict[str, Any]  # the telemetry of a stream read to its end
    dialects: tuple[str, ...]
    readers: dict[str, Reader]
    events: tuple[str, ...]  # what each event of a CUT_TOKENS-token answer carries: c content, f finish reason


# -- what the caller saw ------------------------------------------------------------------------------

def inflate(data: bytes, encoding: str | None) -> bytes:
    """The body as the server wrote it, from the compressed bytes iter_raw() gives (their exact
    bytes change with the answer's ids and times)."""
    return zlib.decompressobj(47).decompress(data) if encoding in ("gzip", "deflate") else data


def body_readers(response_of: Callable[[Seen, Call], Any], hows: Iterable[str], **flags: Any) -> dict[str, Reader]:
    """One reader per way of reading the body of the response that ``response_of`` opens (a context manager)."""

    def reader(how: str) -> Reader:
        def read(seen: Seen, call: Call) -> None:
            with response_of(seen, call) as response:
                if how == "lines":
                    seen.items("lines", response.iter_lines())
                elif how == "bytes":
                    seen.joined("bytes", response.iter_bytes())
                elif how == "text":
                    seen.joined("text", response.iter_text())
                elif how == "raw":
                    seen("raw", inflate(b"".join(response.iter_raw()), response.headers.get("content-encoding")))
                else:
                    seen("body", response.read())

        return Reader(read, **flags)

    return {how: reader(how) for how in hows}


def raw_readers(protocol: Protocol) -> dict[str, Reader]:
    """httpx and httpx2, ``client.stream("POST", ...)``: every way of reading the body; aiohttp's lines."""
    readers: dict[str, Reader] = {}
    for library in ("httpx", "httpx2"):
        def opened(seen: Seen, call: Call, library: str = library) -> Any:
            http = sdk(library).Client(verify=_tls())
            return _Opened(seen, http, http.stream("POST", MOCK_ROOT + protocol.path, json=protocol.body(call)))

        readers.update({f"{library}_{how}": reader for how, reader in
                        body_readers(opened, ("lines", "bytes", "text", "raw", "read")).items()})

    async def aiohttp_lines(seen: Seen, call: Call) -> None:
        """aiohttp's ``ClientSession``, ``async for line in response.content`` (aiohttp decodes the
        content encoding)."""
        import aiohttp

        async with aiohttp.ClientSession() as http, http.post(MOCK_ROOT + protocol.path,
                                                              json=protocol.body(call)) as response:
            seen("status and encoding", [response.status, response.headers.get("content-encoding")])
            await seen.ajoined("lines", response.content)

    readers["aiohttp_lines"] = Reader(aiohttp_lines)
    return readers


class _Opened:
    """A raw client's streamed response, with its status and encoding recorded, closed with its client."""

    def __init__(self, seen: Seen, http: Any, response: Any) -> None:
        self.seen, self.http, self.response = seen, http, response

    def __enter__(self) -> Any:
        response = self.response.__enter__()
        self.seen("status and encoding", [response.status_code, response.headers.get("content-encoding")])
        return response

    def __exit__(self, *exc: Any) -> None:
        self.response.__exit__(*exc)
        self.http.close()


def timed(seen: Seen, label: str, items: Iterable[Any]) -> None:
    """Read ``items`` to the end; note whether the first and the last arrived while the server was
    still sending (``TIMING``: coarse, so that the noise of timing does not matter)."""
    started = time.monotonic()
    arrivals = [time.monotonic() - started for _ in items]
    seen(label, len(arrivals))
    seen("first arrived while the server was sending", arrivals[0] < SERVER_SENDING)
    seen("last arrived while the server was sending", arrivals[-1] < SERVER_SENDING)


# -- openai -------------------------------------------------------------------------------------------

def openai_stream(call: Call) -> Any:
    return client().chat.completions.create(**chat_args(stream=True, mock=call.mock, **call.extra))


def openai_readers(protocol: Protocol) -> dict[str, Reader]:
    async def sdk_async(seen: Seen, call: Call) -> None:
        stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=call.mock, **call.extra))
        await seen.aitems("chunks", stream)

    @contextlib.contextmanager
    def stream_response(seen: Seen, call: Call) -> Any:
        stream = openai_stream(call)  # (held while its response is read, as callers do)
        with contextlib.closing(stream.response) as response:
            yield response

    def streaming_response(seen: Seen, call: Call) -> Any:
        return client().chat.completions.with_streaming_response.create(
            **chat_args(stream=True, mock=call.mock, **call.extra))

    return {
        "sdk": Reader(lambda seen, call: seen.items("chunks", openai_stream(call)), injects=True,
                      stops_at_end=OPENAI_STOPS_AT_DONE),
        "sdk_async": Reader(sdk_async, injects=True,
                      stops_at_end=OPENAI_STOPS_AT_DONE),
        **{f"response_{how}": reader for how, reader in body_readers(
            stream_response, ("lines", "bytes", "text", "raw", "read"), injects=True).items()},
        **{f"streaming_{how}": reader for how, reader in body_readers(
            streaming_response, ("lines", "bytes", "text", "read"), injects=False).items()},
        **raw_readers(protocol),
    }


def openai_body(call: Call) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, "stream": True, **call.extra, **call.mock}


def completions_readers(protocol: Protocol) -> dict[str, Reader]:
    def sdk_items(seen: Seen, call: Call) -> None:
        seen.items("chunks", client().completions.create(model=MODEL, prompt="Say hello", stream=True,
                                                         extra_body=call.mock))

    return {"sdk": Reader(sdk_items, injects=True)}


def responses_readers(protocol: Protocol) -> dict[str, Reader]:
    def sdk_items(seen: Seen, call: Call) -> None:
        seen.items("events", client().responses.create(model=MODEL, input="hello", stream=True, extra_body=call.mock))

    return {"sdk": Reader(sdk_items)}


# -- anthropic ----------------------------------------------------------------------------------------

def anthropic_client(asynchronous: bool = False) -> Any:
    """As cases_providers', with the shared TLS context (a client's own costs 50 ms)."""
    anthropic = sdk("anthropic")
    make, http = ((anthropic.AsyncAnthropic, anthropic.DefaultAsyncHttpxClient) if asynchronous else
                  (anthropic.Anthropic, anthropic.DefaultHttpxClient))
    return make(base_url=MOCK_ROOT, api_key="sk-ant-conformance", max_retries=0, http_client=http(verify=_tls()))


def anthropic_readers(protocol: Protocol) -> dict[str, Reader]:
    def sdk_items(seen: Seen, call: Call) -> None:
        seen.items("events", anthropic_client().messages.create(**message_args(stream=True, mock=call.mock)))

    async def sdk_async(seen: Seen, call: Call) -> None:
        anthropic = anthropic_client(asynchronous=True)
        await seen.aitems("events", await anthropic.messages.create(**message_args(stream=True, mock=call.mock)))

    def helper(seen: Seen, call: Call) -> None:
        with anthropic_client().messages.stream(**message_args(mock=call.mock)) as stream:
            seen.items("text", stream.text_stream)
            seen("final", stream.get_final_message())

    def streaming_response(seen: Seen, call: Call) -> Any:
        return anthropic_client().messages.with_streaming_response.create(**message_args(stream=True, mock=call.mock))

    return {"sdk": Reader(sdk_items, sdk_span=True), "sdk_async": Reader(sdk_async, sdk_span=True),
            "helper": Reader(helper, sdk_span=True),
            **{f"streaming_{how}": reader for how, reader in body_readers(
                streaming_response, ("lines", "bytes", "text", "read"), sdk_span=True).items()},
            **raw_readers(protocol)}


# -- ollama and gemini --------------------------------------------------------------------------------

def ollama_client(asynchronous: bool = False) -> Any:
    ollama = sdk("ollama")
    return (ollama.AsyncClient if asynchronous else ollama.Client)(host=MOCK_ROOT, verify=_tls())


def gemini_client() -> Any:
    genai, types = sdk("google.genai"), sdk("google.genai.types")
    tls = {"verify": _tls(), "ssl": _tls()}  # ("ssl": else each client loads the CA bundle for aiohttp)
    return genai.Client(api_key="conformance", http_options=types.HttpOptions(
        base_url=MOCK_ROOT, api_version="v1beta", client_args={"verify": _tls()}, async_client_args=tls))


def ollama_readers(protocol: Protocol) -> dict[str, Reader]:
    def sdk_items(seen: Seen, call: Call) -> None:
        seen.items("parts", ollama_client().chat(model="llama-test", messages=MESSAGES, stream=True, options=call.mock))

    async def sdk_async(seen: Seen, call: Call) -> None:
        ollama = ollama_client(asynchronous=True)
        await seen.aitems("parts", await ollama.chat(model="llama-test", messages=MESSAGES, stream=True,
                                                     options=call.mock))

    return {"sdk": Reader(sdk_items), "sdk_async": Reader(sdk_async), **raw_readers(protocol)}


def gemini_readers(protocol: Protocol) -> dict[str, Reader]:
    def sdk_items(seen: Seen, call: Call) -> None:
        gemini = gemini_client()  # (held: a dropped client closes its connections)
        stream = gemini.models.generate_content_stream(model="gemini-test", contents="hello",
                                                       config=gemini_config(**call.mock))
        try:  # (the SDK fails on some wires itself: what it raised is what the caller saw)
            seen.items("texts", (chunk.text for chunk in stream))
        except Exception as failed:
            if type(failed).__name__ != "UnknownApiResponseError":
                raise
            seen("raised", describe_error(failed))

    async def sdk_async(seen: Seen, call: Call) -> None:
        gemini = gemini_client()
        stream = await gemini.aio.models.generate_content_stream(model="gemini-test", contents="hello",
                                                                 config=gemini_config(**call.mock))
        try:
            await seen.aitems("texts", (chunk.text async for chunk in stream))
        except Exception as failed:
            if type(failed).__name__ != "UnknownApiResponseError":
                raise
            seen("raised", describe_error(failed))

    return {"sdk": Reader(sdk_items, genai=True), "sdk_async": Reader(sdk_async, genai=True),
            **raw_readers(protocol)}


OPENAI_STREAMED = {"outcome": "completed", "ttft": True, "usage": "estimated", "finish_reasons": ["stop"]}
USAGE = {"outcome": "completed", "ttft": True, "usage": "api", "output_tokens": TOKENS}
PROTOCOLS: dict[str, Protocol] = {
    "openai": Protocol("/v1/chat/completions", openai_body, OPENAI_STREAMED,
                       (*SSE, "usage_first", "agent_usage_first", "no_done"), {}, ("", "c", "c", "c", "f", "d")),
    # (completions and responses: the SDK's stream only, so no raw body and no cuts)
    "completions": Protocol("/v1/completions", lambda call: {}, {**OPENAI_STREAMED, "op": "text_completion"},
                            (*SSE, "no_done"), {}, ()),
    "responses": Protocol("/v1/responses", lambda call: {}, {**USAGE, "op": "generate_content"}, SSE, {}, ()),
    "anthropic": Protocol("/v1/messages", lambda call: {**message_args(stream=True), **call.mock},
                          {**USAGE, "finish_reasons": ["end_turn"]}, (*SSE, "usage_first", "no_done"), {},
                          ("", "", "", "c", "c", "c", "", "f", "d")),
    "ollama": Protocol("/api/chat", lambda call: {"model": "llama-test", "messages": MESSAGES, **call.mock},
                       {**USAGE, "finish_reasons": ["stop"]}, ("plain", "crlf", "cr", "gzip", "deflate", "bytewise"),
                       {}, ("c", "c", "c", "f")),
    "gemini": Protocol("/v1beta/models/gemini-test:streamGenerateContent?alt=sse",
                       lambda call: {"contents": [{"role": "user", "parts": [{"text": "hello"}]}], **call.mock},
                       {**USAGE, "op": "generate_content", "finish_reasons": ["STOP"]}, SSE, {}, ("c", "c", "cf")),
}
for _name, _readers in (("openai", openai_readers), ("completions", completions_readers),
                        ("responses", responses_readers), ("anthropic", anthropic_readers),
                        ("ollama", ollama_readers), ("gemini", gemini_readers)):
    PROTOCOLS[_name].readers.update(_readers(PROTOCOLS[_name]))


def timed_sdk(seen: Seen, call: Call) -> None:
    timed(seen, "chunks", openai_stream(call))


def timed_response_lines(seen: Seen, call: Call) -> None:
    stream = openai_stream(call)
    timed(seen, "lines", stream.response.iter_lines())


def timed_httpx2_lines(seen: Seen, call: Call) -> None:
    openai = PROTOCOLS["openai"]
    with sdk("httpx2").Client(verify=_tls()) as http, \
            http.stream("POST", MOCK_ROOT + openai.path, json=openai.body(call)) as response:
        timed(seen, "lines", response.iter_lines())


TIMED_READERS = {"sdk": Reader(timed_sdk, injects=True), "response_lines": Reader(timed_response_lines, injects=True),
                 "httpx2_lines": Reader(timed_httpx2_lines)}


# -- the cases ----------------------------------------------------------------------------------------

def register(name: str, doc: str, reader: Reader, call: Call, expect: dict[str, Any]) -> None:
    """A case named ``name`` that reads ``call`` with ``reader``."""
    if inspect.iscoroutinefunction(reader.fn):
        async def run_async(seen: Seen) -> None:
            await reader.fn(seen, call)

        fn: Callable[..., Any] = run_async
    else:
        def run(seen: Seen) -> None:
            reader.fn(seen, call)

        fn = run
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    case(**expect)(fn)


def dialect_expectation(protocol: str, dialect: str, reader: Reader) -> dict[str, Any]:
    """The telemetry of a stream in ``dialect`` read to its end: as on the plain wire. The usage is
    the API's where the caller asks for it; with injection on, where the agent asks for it."""
    expect = dict(PROTOCOLS[protocol].expect)
    if reader.sdk_span:
        expect["sdk_span"] = ANTHROPIC_SPAN
    if reader.genai and dialect in GENAI_UNREADABLE:
        # google-genai fails on this wire itself, and closes the body: the agent, which reads it at
        # the HTTP layer, sees a body closed before its end (it cannot tell the SDK's failure from
        # a caller that stopped reading), as the README says of raw responses closed early.
        # Its async calls go through aiohttp when installed, and there the SDK leaves its own generator
        # to be closed by asyncio.run's shutdown, which cancels that close: the body is released
        # inside a cancellation (cancelled) or before (closed_early), by when the loop ends.
        outcome = None if inspect.iscoroutinefunction(reader.fn) else "closed_early"
        expect.update(outcome=outcome, ttft=None, usage=None, output_tokens=None, finish_reasons=None)
    if reader.sdk_span and dialect == "no_done":
        # (anthropic's own span, which the agent adopts, calls a stream without its end event failed)
        expect["outcome"] = None
    if protocol in ("openai", "completions"):
        own = dialect == "usage_first"
        if own:
            expect.update(usage="api", output_tokens=TOKENS)
        if reader.injects is not None:
            expect.update(injected_usage="api" if own or reader.injects else "estimated", output_tokens=TOKENS)
    return expect


def cut_expectation(protocol: str, events: int, reader: Reader) -> dict[str, Any]:
    """The telemetry of a stream whose connection was cut right after ``events`` events: an error where
    the caller got one (everyone but a reader that stopped at the end marker), with the TTFT and finish
    reason of what did arrive."""
    arrived = "".join(PROTOCOLS[protocol].events[:events])
    expect = dict(PROTOCOLS[protocol].expect, ttft="c" in arrived, usage=None, output_tokens=None)
    if reader.sdk_span:
        expect["sdk_span"] = ANTHROPIC_SPAN
    if not (reader.stops_at_end and "d" in arrived):  # (an SDK's own span keeps its own error type)
        expect.update(outcome="error", error_type=ANY if reader.sdk_span else RAISED)
    if "f" not in arrived:
        expect["finish_reasons"] = None  # (none arrived: not checked)
    return expect


def make_cases() -> None:
    for protocol_name, protocol in PROTOCOLS.items():
        for dialect in protocol.dialects:
            spec = SPECS.get(dialect, dialect)
            for reader_name, reader in protocol.readers.items():
                if dialect == "agent_usage_first" and not reader.injects:
                    continue  # (only the agent would ask for the usage: the plain wire, for any other reader)
                own_usage = dialect == "usage_first" and protocol_name == "openai"
                call = Call({"mock_dialect": spec} if spec else {},
                            {"stream_options": {"include_usage": True}} if own_usage else {})
                register(f"dialect_{protocol_name}_{dialect}_{reader_name}",
                         f"{protocol_name} stream, dialect {spec or 'plain'}, read with {reader_name}.",
                         reader, call, dialect_expectation(protocol_name, dialect, reader))
        for reader_name in ("sdk", "httpx_lines", "aiohttp_lines"):
            reader = protocol.readers.get(reader_name)
            if reader is None or not protocol.events:
                continue
            for events in range(1, len(protocol.events) + 1):
                call = Call({"mock_cut_after": events, "mock_tokens": CUT_TOKENS})
                register(f"dialect_{protocol_name}_cut{events}_{reader_name}",
                         f"{protocol_name} stream of {CUT_TOKENS} tokens cut right after event {events} "
                         f"(of {len(protocol.events)}), read with {reader_name}.",
                         reader, call, cut_expectation(protocol_name, events, reader))
    for dialect in ("crlf", "gzip"):
        call = Call({**TIMING, "mock_dialect": dialect})
        for reader_name, reader in TIMED_READERS.items():
            expect = {**dialect_expectation("openai", dialect, reader), "output_tokens": TIMING["mock_tokens"]}
            register(f"dialect_openai_{dialect}_timing_{reader_name}",
                     f"openai stream, dialect {dialect}, read with {reader_name}: each line as the server sends it.",
                     reader, call, expect)


make_cases()


"""The conformance cases' toolkit: the ``@case`` registry, what a case records, and normalisation.

A case is a small function (sync or async) that takes a ``Seen`` and records in it what the
caller saw: values, types, reprs, exceptions, stream items, raw bytes. ``runner.py`` runs every
case once bare and once under the agent; ``test_conformance.py`` compares the two records and
checks the agent's telemetry against the case's declared expectations.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import ssl
import time
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

CASE_MODULES = ("cases_chat", "cases_completions", "cases_responses", "cases_raw", "cases_exits", "cases_errors",
                "cases_injection", "cases_nongen", "cases_recorded", "cases_providers", "cases_aiohttp",
                "cases_bedrock", "cases_dialects")

RAISED = "<raised>"  # error_type: the class name of the exception the caller got (it varies by SDK version)
ANY = "<any>"  # error_type: present, whatever its value (an SDK's own span keeps its own error type)


@dataclass(frozen=True)
class Expect:
    """The telemetry the agent must emit for a case (``None``: not checked)."""

    llm_spans: int = 1
    op: str | None = "chat"
    outcome: str | None = None
    ttft: bool | None = None
    usage: str | None = None  # llm.usage.source: "api", "estimated", or "absent" (no token counts at all)
    injected_usage: str | None = None  # also run with LLM_INJECT_STREAM_USAGE=true; the usage source then
    output_tokens: int | None = None  # checked where the usage source is "api"
    error_type: str | None = None
    finish_reasons: list[str] | None = None
    recorded: str | None = None  # cassette whose recorded model, id, usage and finish reasons the span carries
    ended_within: float | None = None  # seconds from the moment marked with seen.at("broke off") to the span's export
    sdk_span: str | None = None  # the name of the SDK's own span, which the agent adopts where the SDK traces
    response_model: bool = True  # the answer names its model (Cohere's do not): on the span where usage is "api"


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Any]
    doc: str
    expect: Expect


REGISTRY: dict[str, Case] = {}


def case(**expect: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a case function under its name, with its expected telemetry."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        assert fn.__name__ not in REGISTRY, f"duplicate case {fn.__name__}"
        assert fn.__doc__, f"case {fn.__name__} needs a docstring line"
        REGISTRY[fn.__name__] = Case(fn.__name__, fn, fn.__doc__.strip(), Expect(**expect))
        return fn

    return register


def load_cases() -> dict[str, Case]:
    for module in CASE_MODULES:
        importlib.import_module(module)
    return REGISTRY


class Unsupported(Exception):
    """This SDK version does not have what the case exercises: the case is skipped."""


def need(owner: Any, *attributes: str) -> None:
    for attribute in attributes:
        if not hasattr(owner, attribute):
            raise Unsupported(f"openai {version()} has no {getattr(owner, '__name__', type(owner).__name__)}"
                              f".{attribute}")


def version() -> str:
    import openai

    return openai.__version__


# -- where the servers are (set by the test for the child processes) ------------------------------

MOCK_URL = os.environ.get("CONFORMANCE_MOCK_URL", "")
MOCK_ROOT = MOCK_URL.removesuffix("/v1")  # the same mock, for the other providers' paths
REPLAY_URL = os.environ.get("CONFORMANCE_REPLAY_URL", "")
CLOSED_URL = os.environ.get("CONFORMANCE_CLOSED_URL", "")  # a port nobody listens on
REJECTING_URL = os.environ.get("CONFORMANCE_REJECTING_URL", "")  # a mock LLM that answers 400 to stream_options

MESSAGES = [{"role": "user", "content": "hello"}]
MODEL = "mock-gpt"
TOKENS = 8  # the mock LLM's answer length, unless a request says otherwise


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """One TLS context for all the clients: loading the CA bundle per client costs 20 ms."""
    return ssl.create_default_context()


def client(base_url: str = "", **options: Any) -> Any:
    """A fresh OpenAI client (its default httpx client), without retries unless asked."""
    import openai

    options.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=base_url or MOCK_URL, api_key="sk-conformance",
                         http_client=openai.DefaultHttpxClient(verify=_tls()), **options)


def aclient(base_url: str = "", **options: Any) -> Any:
    import openai

    options.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=base_url or MOCK_URL, api_key="sk-conformance",
                              http_client=openai.DefaultAsyncHttpxClient(verify=_tls()), **options)


def chat_args(stream: bool = False, mock: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Arguments of a chat completion; ``mock`` goes to the mock LLM through ``extra_body``."""
    args: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, **extra}
    if stream:
        args["stream"] = True
    if mock:
        args["extra_body"] = {**args.get("extra_body", {}), **mock}
    return args


# -- normalisation --------------------------------------------------------------------------------

_NORMALISE = [
    (re.compile(r"\b(chatcmpl|cmpl|resp|msg|req|call|fc|modr|toolu)([-_])[A-Za-z0-9]{8,}"), r"\1\2ID"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "UUID"),  # (Cohere's ids)
    (re.compile(r"0x[0-9a-fA-F]{4,}"), "0xADDR"),
    (re.compile(r"""((?:created|created_at|completed_at|duration)['"]?\s*[:=]\s*)\d+(?:\.\d+)?"""), r"\g<1>0"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?"), "ISOTIME"),
    (re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"), "DATE"),
    # An SSE event's number (``id:``): a server that numbers its events numbers the usage event the
    # agent asks for too, so a caller reading the raw bytes sees that number skipped (README).
    (re.compile(r"(^|\\[rn]|[\r\n])id:( ?)\d+"), r"\1id:\2N"),
]


TIMESTAMPS = ("created", "created_at", "completed_at", "total_duration", "load_duration", "prompt_eval_duration",
              "eval_duration")  # (and Ollama's server timings)


def norm(text: str) -> str:
    """Ids, timestamps and memory addresses replaced, so that two runs compare equal."""
    for pattern, replacement in _NORMALISE:
        text = pattern.sub(replacement, text)
    return text


ASYNCGEN_REPORT = "an error occurred during closing of asynchronous generator"


def tidy_stderr(text: str) -> list[str]:
    """Normalised stderr lines, without asyncio's reports of async generators that failed to close
    at loop shutdown. Those are the SDK's own (a stream left open): asyncio closes the live ones
    concurrently, in the order of a weak set, that is of their memory addresses, so whether one
    of them is "already running" then, and which, changes with any allocation in the process,
    bare as well (README, "What the agent changes in your process")."""
    lines: list[str] = []
    in_report = False
    for line in norm(text).splitlines():
        if line.startswith(ASYNCGEN_REPORT):
            in_report = True
        elif in_report and (line in ("", "GeneratorExit") or line.startswith(
                ("asyncgen:", "Traceback", " ", "During handling", "The above exception", "RuntimeError: aclose()"))):
            continue
        else:
            lines.append(line)
            in_report = False
    return lines


def qualname(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


@functools.lru_cache(maxsize=1)
def public_classes() -> tuple[tuple[str, type], ...]:
    """The SDK's public classes (and the protocols) a caller may test with isinstance."""
    import collections.abc as abc
    import contextlib

    import openai
    import pydantic
    from openai import _legacy_response
    from openai.lib.streaming import chat as chat_streaming
    from openai.lib.streaming import responses as responses_streaming

    classes: dict[str, Any] = {
        "openai.Stream": openai.Stream, "openai.AsyncStream": openai.AsyncStream,
        "openai.APIResponse": openai.APIResponse, "openai.AsyncAPIResponse": openai.AsyncAPIResponse,
        "LegacyAPIResponse": _legacy_response.LegacyAPIResponse, "openai.BaseModel": openai.BaseModel,
        "pydantic.BaseModel": pydantic.BaseModel,
        "ChatCompletionStream": chat_streaming.ChatCompletionStream,
        "AsyncChatCompletionStream": chat_streaming.AsyncChatCompletionStream,
        "ChatCompletionStreamManager": chat_streaming.ChatCompletionStreamManager,
        "ResponseStream": responses_streaming.ResponseStream,
        "AsyncResponseStream": responses_streaming.AsyncResponseStream,
        "Iterator": abc.Iterator, "Iterable": abc.Iterable, "Generator": abc.Generator,
        "AsyncIterator": abc.AsyncIterator, "AsyncIterable": abc.AsyncIterable,
        "AbstractContextManager": contextlib.AbstractContextManager,
        "AbstractAsyncContextManager": contextlib.AbstractAsyncContextManager,
    }
    for library in ("httpx", "httpx2"):
        with contextlib.suppress(ImportError):
            classes[f"{library}.Response"] = importlib.import_module(library).Response
    return tuple(classes.items())


def describe(value: Any) -> dict[str, Any]:
    """An object as the caller sees it: exact type, ``__class__``, repr, isinstance results."""
    return {"type": qualname(type(value)), "class": qualname(value.__class__), "repr": norm(repr(value)),
            "isinstance": [name for name, kind in public_classes() if isinstance(value, kind)]}


def describe_error(error: BaseException) -> dict[str, Any]:
    cause = error.__cause__
    return {"raised": qualname(type(error)), "message": norm(str(error)),
            "status_code": getattr(error, "status_code", None),
            "cause": qualname(type(cause)) if cause is not None else None}


def plain(value: Any) -> Any:
    """``value`` as comparable JSON data."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return norm(value)
    if isinstance(value, bytes):
        return {"bytes": norm(value.decode("utf-8", "backslashreplace"))}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): 0 if k in TIMESTAMPS and isinstance(v, (int, float)) else plain(v) for k, v in value.items()}
    if isinstance(value, BaseException):
        return describe_error(value)
    return {"type": qualname(type(value)), "repr": norm(repr(value))}


def headers(value: Any) -> list[list[str]]:
    return sorted([k.lower(), norm(v)] for k, v in value.items())


class Seen:
    """What the caller saw, in order: [label, comparable value] pairs."""

    def __init__(self) -> None:
        self.entries: list[list[Any]] = []
        self.times: dict[str, float] = {}  # wall-clock moments for the telemetry checks; not compared

    def at(self, moment: str) -> None:
        self.times[moment] = time.time()

    def __call__(self, label: str, value: Any) -> Any:
        self.entries.append([label, plain(value)])
        return value

    def obj(self, label: str, value: Any) -> Any:
        self.entries.append([label, describe(value)])
        return value

    def call(self, label: str, fn: Callable[[], Any]) -> Any:
        """Record what ``fn()`` returns, or the exception it raises."""
        try:
            result = fn()
        except Exception as error:
            self.entries.append([label, describe_error(error)])
            return None
        self.entries.append([label, plain(result)])
        return result

    def items(self, label: str, iterable: Iterable[Any], limit: int | None = None) -> list[Any]:
        """Iterate (as the caller's own ``for`` loop), recording each item; ``break`` after ``limit``."""
        got: list[Any] = []
        self.entries.append([label, got])
        for item in iterable:
            got.append(plain(item))
            if limit is not None and len(got) >= limit:
                break
        return got

    async def aitems(self, label: str, iterable: AsyncIterable[Any], limit: int | None = None) -> list[Any]:
        got: list[Any] = []
        self.entries.append([label, got])
        async for item in iterable:
            got.append(plain(item))
            if limit is not None and len(got) >= limit:
                break
        return got

    def joined(self, label: str, parts: Iterable[Any]) -> None:
        """Bytes or text read in pieces (piece boundaries depend on the network): recorded joined."""
        got = list(parts)
        self(label, (b"" if got and isinstance(got[0], bytes) else "").join(got))

    async def ajoined(self, label: str, parts: AsyncIterable[Any]) -> None:
        self.joined(label, [part async for part in parts])

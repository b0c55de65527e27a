"""What a provider's API is, as one declarative value: each ``adapters/<provider>.py`` ends with
its ``PROTOCOL``, and ``endpoints`` lists them. Every field is required, so a new provider says
everything about itself and inherits nothing from another's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..tracker import CallTracker

Reader = Callable[["CallTracker", Any], None]
#: Request body field (a path into nested settings) -> span attribute (GenAI semantic conventions).
RequestField = tuple[tuple[str, ...], str]
#: Response header -> span attribute of the call, and how to read its value.
ResponseHeader = tuple[str, str, type]


@dataclass(frozen=True, kw_only=True)
class Route:
    """One generation path of a protocol: what a request to it is, and how its answer is read."""

    #: The path's end (matched as a suffix: proxies, Azure and API versions add prefixes).
    suffix: str
    operation: str  # gen_ai.operation.name
    #: Whether the answer streams: fixed by the path, or None: the body says (``stream``).
    streams: bool | None
    #: Reads one parsed item of the SDK's stream; None where the SDK's items are not measured.
    read_item: Reader | None
    #: Reads one event decoded from the stream's framing (SSE data, an NDJSON line).
    read_event: Reader | None
    #: Reads a whole answer (an SDK object or decoded JSON).
    read_response: Reader
    #: From an event's raw bytes: True when it is a plain content delta that needs no parsing.
    skim: Callable[[bytes], bool] | None
    #: Where a plain delta's text begins in its bytes (``sse.PlainReads``); b"" for none.
    plain_key: bytes
    #: Streams take ``stream_options.include_usage`` (``LLM_INJECT_STREAM_USAGE``).
    accepts_stream_options: bool


@dataclass(frozen=True, kw_only=True)
class SDK:
    """A provider's own SDK: patched at its request method and stream classes (Stainless SDKs),
    or measured from what it sends with httpx, which any release that uses httpx is."""

    package: str  # the distribution's name (what ``doctor`` looks up)
    supported: tuple[str, ...]  # the releases supported, as requirement specifiers
    patched: bool


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """One provider's API: its routes, how its streams are framed and end, how its requests and
    answers are read, and which SDK releases are supported."""

    name: str
    routes: tuple[Route, ...]
    #: ``gen_ai.provider.name`` from the server's host (and whether an SDK client is Azure's).
    provider: Callable[[str | None, bool], str]
    #: How a streamed answer is framed, "sse" or "ndjson": what its body is read as when its
    #: content type does not say (``instrumentors.body.reader_for``).
    framing: str
    #: Whether a request streams when its body does not say.
    stream_default: bool
    #: Where the path names the model, not the body: the model from the path.
    model_from_path: Callable[[str], str | None] | None
    #: Every answer reports its token usage (no text needs keeping for an estimate).
    reports_usage: bool
    #: A stream's data that ends it without being an event (``[DONE]``), or None.
    end_marker: bytes | None
    #: A streamed event whose ``end_key`` has one of ``end_values`` is the last one.
    end_key: str
    end_values: frozenset[Any]
    #: The usage-only event the agent may ask for (from its data) and the SDK item it becomes,
    #: which the caller never sees; None where the agent asks for none.
    usage_only_event: Callable[[bytes], bool] | None
    usage_only_item: Callable[[Any], bool] | None
    request_fields: tuple[RequestField, ...]
    response_headers: tuple[ResponseHeader, ...]
    #: The provider's own SDK, patched or measured over httpx; None where there is none.
    sdk: SDK | None

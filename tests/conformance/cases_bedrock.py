"""Amazon Bedrock through boto3, against the mock LLM's Bedrock runtime: ``converse``,
``converse_stream``, ``invoke_model`` and ``invoke_model_with_response_stream`` (the Anthropic,
Nova and Llama bodies, and a model of another family), every way a caller leaves a stream, and the
errors botocore raises. What the caller sees must not change; botocore's own event-stream parser
decodes every frame, with the agent and without."""

from __future__ import annotations

import json
from typing import Any

from kit import CLOSED_URL, MOCK_ROOT, TOKENS, Seen, Unsupported, case

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "us.amazon.nova-lite-v1:0"  # (a cross-region inference profile)
LLAMA = "meta.llama3-8b-instruct-v1:0"
TITAN = "amazon.titan-text-express-v1"
MESSAGES = [{"role": "user", "content": [{"text": "hello"}]}]
#: A stream that pauses for 3 s after its third token: a caller that leaves by then leaves mid-stream.
LONG = {"mock_tokens": 12, "mock_stall_at": 3, "mock_stall": 3.0}
WHOLE = {"outcome": "completed", "usage": "api", "output_tokens": TOKENS, "response_model": False}
STREAMED = {**WHOLE, "ttft": True}


def client(url: str = MOCK_ROOT, attempts: int = 1) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as missing:
        raise Unsupported("boto3 is not installed") from missing
    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=url,
                        aws_access_key_id="AKIDCONFORMANCE", aws_secret_access_key="conformance",
                        config=Config(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=2))


def converse_args(**mock: Any) -> dict[str, Any]:
    return {"modelId": CLAUDE, "messages": MESSAGES, "inferenceConfig": {"maxTokens": 200, "temperature": 0.5},
            **({"additionalModelRequestFields": mock} if mock else {})}


def answer(seen: Seen, result: dict[str, Any], *keys: str) -> None:
    """The parts of botocore's result that do not vary from run to run (request ids, dates and the
    server's latency do)."""
    for key in keys:
        seen(key, result.get(key))
    seen("status", result["ResponseMetadata"]["HTTPStatusCode"])
    seen("content type", result["ResponseMetadata"]["HTTPHeaders"].get("content-type"))


def events(seen: Seen, stream: Any, limit: int | None = None) -> list[Any]:
    """A stream's events, without the server's timing (metadata.metrics) and padding."""
    got: list[Any] = []
    seen.entries.append(["events", got])
    for event in stream:
        metadata = event.get("metadata")
        got.append({**event, "metadata": {**metadata, "metrics": "<server's>"}} if metadata else event)
        if limit is not None and len(got) >= limit:
            break
    return got


def chunks(seen: Seen, stream: Any) -> None:
    got: list[Any] = []
    seen.entries.append(["chunks", got])
    for event in stream:
        decoded = json.loads(event["chunk"]["bytes"])
        decoded.pop("amazon-bedrock-invocationMetrics", None)  # (the server's timing)
        if decoded.get("type") == "message_start":
            decoded["message"]["id"] = "<the server's>"
        got.append(decoded)


# -- Converse ------------------------------------------------------------------------------------------

@case(**WHOLE, finish_reasons=["end_turn"])
def bedrock_converse(seen: Seen) -> None:
    """``converse``: one answer with usage and the server's latency."""
    answer(seen, client().converse(**converse_args()), "output", "stopReason", "usage")


@case(**STREAMED, finish_reasons=["end_turn"])
def bedrock_converse_stream(seen: Seen) -> None:
    """``converse_stream`` read to the end: usage from ``metadata``."""
    result = client().converse_stream(**converse_args())
    answer(seen, result)
    events(seen, result["stream"])


@case(outcome="closed_early", ttft=True)
def bedrock_converse_stream_break(seen: Seen) -> None:
    """``converse_stream``, the caller's loop breaks after three events and leaves the stream open."""
    result = client().converse_stream(**converse_args(**LONG))
    events(seen, result["stream"], limit=3)


@case(outcome="closed_early", ttft=True)
def bedrock_converse_stream_close(seen: Seen) -> None:
    """``converse_stream``: two events with ``next()``, then ``close()``."""
    stream = client().converse_stream(**converse_args(**LONG))["stream"]
    pulled = iter(stream)
    seen("first", next(pulled))
    seen("second", next(pulled))
    stream.close()


@case(outcome="abandoned", ttft=False, usage="absent")
def bedrock_converse_stream_dropped(seen: Seen) -> None:
    """``converse_stream`` whose stream the caller drops unread."""
    result = client().converse_stream(**converse_args(**LONG))
    seen("status", result["ResponseMetadata"]["HTTPStatusCode"])
    del result


@case(outcome="error", error_type="EventStreamError", ttft=True)
def bedrock_converse_stream_error_event(seen: Seen) -> None:
    """``converse_stream``: the server ends the stream with an exception frame after two tokens."""
    stream = client().converse_stream(**converse_args(mock_error_event=2))["stream"]
    seen.call("events", lambda: [event for event in stream])


@case(outcome="error", error_type="ChecksumMismatch", ttft=True)
def bedrock_converse_stream_bad_crc(seen: Seen) -> None:
    """``converse_stream``: a frame's checksum is wrong; botocore's parser raises."""
    stream = client().converse_stream(**converse_args(mock_bad_crc=4))["stream"]
    seen.call("events", lambda: [event for event in stream])


@case(outcome="error", error_type="ProtocolError", ttft=True)
def bedrock_converse_stream_truncated_frame(seen: Seen) -> None:
    """``converse_stream``: the connection is cut halfway through a frame."""
    stream = client().converse_stream(**converse_args(mock_truncate=4))["stream"]
    seen.call("events", lambda: [event for event in stream])


@case(**{**STREAMED, "output_tokens": 4}, finish_reasons=["end_turn"])
def bedrock_converse_stream_bytewise(seen: Seen) -> None:
    """``converse_stream`` whose every byte comes as its own HTTP chunk: frames split everywhere."""
    events(seen, client().converse_stream(**converse_args(mock_dialect="bytewise", mock_tokens=4))["stream"])


@case(outcome="error", error_type="ThrottlingException")
def bedrock_converse_throttled(seen: Seen) -> None:
    """``converse`` answered 429: botocore's ThrottlingException (retries off)."""
    seen.call("converse", lambda: client().converse(**converse_args(mock_error=429)))


@case(outcome="error", error_type="ValidationException")
def bedrock_converse_stream_rejected(seen: Seen) -> None:
    """``converse_stream`` answered 400 before any event: ValidationException."""
    seen.call("converse_stream", lambda: client().converse_stream(**converse_args(mock_error=400)))


@case(**WHOLE, finish_reasons=["end_turn"])
def bedrock_converse_retried(seen: Seen) -> None:
    """``converse``: two 503s, then an answer, retried by botocore: one call."""
    answer(seen, client(attempts=3).converse(**converse_args(mock_fail_attempts=2)), "output", "usage")


@case(outcome="error", error_type="EndpointConnectionError")
def bedrock_connection_refused(seen: Seen) -> None:
    """A port nobody listens on: botocore's EndpointConnectionError."""
    seen.call("converse", lambda: client(CLOSED_URL.removesuffix("/v1")).converse(**converse_args()))


# -- InvokeModel, by model family ------------------------------------------------------------------------

def invoke_body(model: str, **mock: Any) -> str:
    if model == CLAUDE:
        body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200,
                                "messages": [{"role": "user", "content": "hello"}]}
    elif model == NOVA:
        body = {"messages": MESSAGES, "inferenceConfig": {"max_new_tokens": 200}}
    elif model == LLAMA:
        body = {"prompt": "hello", "max_gen_len": 200, "temperature": 0.5}
    else:
        body = {"inputText": "hello"}
    return json.dumps({**body, **mock})


@case(**{**WHOLE, "response_model": True}, finish_reasons=["end_turn"])
def bedrock_invoke_claude(seen: Seen) -> None:
    """``invoke_model``, Anthropic's Messages body, read with ``read()``."""
    result = client().invoke_model(modelId=CLAUDE, body=invoke_body(CLAUDE))
    answer(seen, result, "contentType")
    seen("body", {k: v for k, v in json.loads(result["body"].read()).items() if k != "id"})


#: An application inference profile: its ARN names no model family; the request's body does.
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"


@case(**{**STREAMED, "response_model": True}, finish_reasons=["end_turn"])
def bedrock_invoke_stream_profile_arn(seen: Seen) -> None:
    """``invoke_model_with_response_stream`` through an application inference profile's ARN, with
    Anthropic's body: the family is told by the body."""
    chunks(seen, client().invoke_model_with_response_stream(modelId=PROFILE, body=invoke_body(CLAUDE))["body"])


@case(**WHOLE, op="text_completion", finish_reasons=["stop"])
def bedrock_invoke_llama_in_pieces(seen: Seen) -> None:
    """``invoke_model``, Llama's body, read 7 bytes at a time with ``iter_chunks``."""
    result = client().invoke_model(modelId=LLAMA, body=invoke_body(LLAMA))
    seen.joined("body", result["body"].iter_chunks(7))


@case(**WHOLE, op="text_completion")
def bedrock_invoke_other_family(seen: Seen) -> None:
    """``invoke_model`` of a family the agent does not read (Titan): usage from the headers."""
    result = client().invoke_model(modelId=TITAN, body=invoke_body(TITAN))
    seen("body", json.loads(result["body"].read()))


@case(outcome="closed_early", usage="api", response_model=False)
def bedrock_invoke_closed_unread(seen: Seen) -> None:
    """``invoke_model`` whose body the caller closes without reading it."""
    result = client().invoke_model(modelId=NOVA, body=invoke_body(NOVA))
    result["body"].close()
    seen("closed", True)


# -- InvokeModelWithResponseStream ----------------------------------------------------------------------

@case(**{**STREAMED, "response_model": True}, finish_reasons=["end_turn"])
def bedrock_invoke_stream_claude(seen: Seen) -> None:
    """``invoke_model_with_response_stream``, Anthropic's events in ``chunk`` frames."""
    result = client().invoke_model_with_response_stream(modelId=CLAUDE, body=invoke_body(CLAUDE))
    answer(seen, result, "contentType")
    chunks(seen, result["body"])


@case(**STREAMED, finish_reasons=["end_turn"])
def bedrock_invoke_stream_nova(seen: Seen) -> None:
    """``invoke_model_with_response_stream``, Nova's events (a cross-region inference profile)."""
    chunks(seen, client().invoke_model_with_response_stream(modelId=NOVA, body=invoke_body(NOVA))["body"])


@case(**STREAMED, op="text_completion", finish_reasons=["stop"])
def bedrock_invoke_stream_llama(seen: Seen) -> None:
    """``invoke_model_with_response_stream``, Llama's ``generation`` pieces."""
    chunks(seen, client().invoke_model_with_response_stream(modelId=LLAMA, body=invoke_body(LLAMA))["body"])


@case(**{**STREAMED, "ttft": False}, op="text_completion")
def bedrock_invoke_stream_other_family(seen: Seen) -> None:
    """``invoke_model_with_response_stream`` of a family the agent does not read: counted, usage
    from the last chunk's invocation metrics, no content to time."""
    chunks(seen, client().invoke_model_with_response_stream(modelId=TITAN, body=invoke_body(TITAN))["body"])


@case(outcome="closed_early", ttft=True, op="text_completion")
def bedrock_invoke_stream_break(seen: Seen) -> None:
    """``invoke_model_with_response_stream``, the loop breaks after three chunks."""
    body = client().invoke_model_with_response_stream(modelId=LLAMA, body=invoke_body(LLAMA, **LONG))["body"]
    for index, _ in enumerate(body):
        if index == 2:
            break
    body.close()
    seen("left", True)


@case(outcome="error", error_type="EventStreamError", ttft=True)
def bedrock_invoke_stream_error_event(seen: Seen) -> None:
    """``invoke_model_with_response_stream`` ended by an exception frame after two tokens."""
    body = client().invoke_model_with_response_stream(modelId=CLAUDE, body=invoke_body(CLAUDE, mock_error_event=2))
    seen.call("chunks", lambda: [event for event in body["body"]])

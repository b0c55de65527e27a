"""Every way a caller leaves a stream: to the end, break, close, with, exceptions, drops, cancellation."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

from kit import RAISED, Seen, aclient, case, chat_args, client, need, plain

LONG = {"mock_tokens": 30}
SLOW = {"mock_tokens": 40, "mock_itl": 0.05}  # about 2 s of tokens: time to cancel or time out mid-stream
EARLY = {"outcome": "closed_early", "ttft": True}
KEPT: list[Any] = []  # streams the caller holds on to until the process exits


# -- sync -------------------------------------------------------------------------------------------

@case(**EARLY)
def exit_break_then_close(seen: Seen) -> None:
    """break after three chunks, then close()."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock=LONG))
    seen.items("chunks", stream, limit=3)
    stream.close()
    seen("closed", stream.response.is_closed)


@case(**EARLY)
def exit_break_inside_with(seen: Seen) -> None:
    """break inside the stream's with block."""
    with client().chat.completions.create(**chat_args(stream=True, mock=LONG)) as stream:
        seen.items("chunks", stream, limit=3)
    seen("closed", stream.response.is_closed)


@case(**EARLY)
def exit_break_then_drop(seen: Seen) -> None:
    """break after three chunks, and the stream goes out of scope."""
    seen.items("chunks", client().chat.completions.create(**chat_args(stream=True, mock=LONG)), limit=3)


@case(**EARLY, ended_within=2.5)
def exit_break_keep_reference(seen: Seen) -> None:
    """break without close() while the stream stays referenced: the call still ends, in about a second."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock=LONG))
    seen.items("chunks", stream, limit=3)
    seen.at("broke off")
    KEPT.append(stream)


@case(**EARLY)
def exit_break_then_resume_later(seen: Seen) -> None:
    """break without close(), then, well over a second later, the same stream iterated to its end."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock=LONG))
    seen.items("first", stream, limit=3)
    time.sleep(1.5)
    seen.items("rest", stream)
    seen("closed", stream.response.is_closed)


@case(**EARLY)
def exit_break_twice(seen: Seen) -> None:
    """Two for loops over one stream, each left with break, then close()."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock=LONG))
    seen.items("first", stream, limit=2)
    seen.items("second", stream, limit=2)
    stream.close()


@case(outcome="closed_early", ttft=False)
def exit_close_before_iterating(seen: Seen) -> None:
    """close() before reading anything, then a for loop over the closed stream."""
    stream = client().chat.completions.create(**chat_args(stream=True))
    stream.close()
    seen.call("iterate after close", lambda: [plain(chunk) for chunk in stream])


@case(outcome="closed_early", ttft=False)
def exit_with_block_unread(seen: Seen) -> None:
    """A with block over a stream that is left without reading."""
    with client().chat.completions.create(**chat_args(stream=True)) as stream:
        seen.obj("stream", stream)


@case(**EARLY)
def exit_exception_in_loop(seen: Seen) -> None:
    """An exception raised in the caller's own loop body, caught outside the loop."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock=LONG))
    try:
        for index, _ in enumerate(stream):
            if index == 2:
                raise ValueError("the caller's own bug")
    except ValueError as error:
        seen("caught", error)


@case(**EARLY)
def exit_exception_in_with(seen: Seen) -> None:
    """An exception raised in the loop body inside the stream's with block."""
    try:
        with client().chat.completions.create(**chat_args(stream=True, mock=LONG)) as stream:
            for index, _ in enumerate(stream):
                if index == 2:
                    raise KeyError("the caller's own bug")
    except KeyError as error:
        seen("caught", error)
    seen("closed", stream.response.is_closed)


@case(outcome="abandoned", ttft=True)
def exit_abandoned(seen: Seen) -> None:
    """Two next() calls, then the stream is dropped and garbage-collected."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock=LONG))
    seen("first", next(stream))
    seen("second", next(stream))
    del stream
    gc.collect()


@case(outcome="abandoned", ttft=False)
def exit_abandoned_unread(seen: Seen) -> None:
    """A stream dropped before reading anything."""
    seen.obj("stream", client().chat.completions.create(**chat_args(stream=True)))
    gc.collect()


@case(outcome="interrupted", ttft=True)
def exit_interrupted(seen: Seen) -> None:
    """Two next() calls, then the stream is held, unfinished, until the process exits."""
    stream = client().chat.completions.create(**chat_args(stream=True, mock=LONG))
    seen("first", next(stream))
    seen("second", next(stream))
    KEPT.append(stream)


@case(outcome="error", error_type=RAISED, ttft=True)
def exit_server_drops_connection(seen: Seen) -> None:
    """The server cuts the connection after three tokens: what the caller gets, and when."""
    seen.items("chunks", client().chat.completions.create(**chat_args(stream=True, mock={"mock_drop_after": 3})))


@case(outcome="closed_early", ttft=True)
def exit_helper_stream_break(seen: Seen) -> None:
    """chat.completions.stream(): break inside the with block."""
    with client().chat.completions.stream(**chat_args(mock=LONG)) as stream:
        seen.items("events", stream, limit=4)


@case(outcome="closed_early", ttft=True)
def exit_helper_stream_close(seen: Seen) -> None:
    """chat.completions.stream(): a few events, then close() on the helper stream. (Slow: the rest
    of the stream must not have arrived with the fourth event, or the final completion is whole.)"""
    with client().chat.completions.stream(**chat_args(mock=SLOW)) as stream:
        seen.items("events", stream, limit=4)
        stream.close()
        seen.call("final after close", stream.get_final_completion)


# -- async ------------------------------------------------------------------------------------------

@case(**EARLY)
async def aexit_break_then_close(seen: Seen) -> None:
    """async for, break after three chunks, then await close()."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=LONG))
    await seen.aitems("chunks", stream, limit=3)
    await stream.close()
    seen("closed", stream.response.is_closed)


@case(**EARLY)
async def aexit_break_then_aclose(seen: Seen) -> None:
    """async for, break, then await aclose() (where the SDK has it)."""
    need(__import__("openai").AsyncStream, "aclose")
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=LONG))
    await seen.aitems("chunks", stream, limit=3)
    await stream.aclose()
    seen("closed", stream.response.is_closed)


@case(**EARLY)
async def aexit_break_inside_async_with(seen: Seen) -> None:
    """break inside async with."""
    async with await aclient().chat.completions.create(**chat_args(stream=True, mock=LONG)) as stream:
        await seen.aitems("chunks", stream, limit=3)
    seen("closed", stream.response.is_closed)


@case(**EARLY, ended_within=2.5)
async def aexit_break_keep_reference(seen: Seen) -> None:
    """async for + break without close(), the stream still referenced: the call ends in about a second."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=LONG))
    await seen.aitems("chunks", stream, limit=3)
    seen.at("broke off")
    KEPT.append(stream)


@case(**EARLY)
async def aexit_break_then_resume_later(seen: Seen) -> None:
    """async for + break, then, well over a second later, the rest of the same stream."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=LONG))
    await seen.aitems("first", stream, limit=3)
    await asyncio.sleep(1.5)
    await seen.aitems("rest", stream)


@case(outcome="closed_early", ttft=False)
async def aexit_close_before_iterating(seen: Seen) -> None:
    """await close() before reading anything."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True))
    await stream.close()
    seen("closed", stream.response.is_closed)


@case(**EARLY)
async def aexit_exception_in_loop(seen: Seen) -> None:
    """An exception in the caller's own async for body."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=LONG))
    try:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                raise ValueError("the caller's own bug")
    except ValueError as error:
        seen("caught", error)


@case(**EARLY)
async def aexit_exception_in_async_with(seen: Seen) -> None:
    """An exception in the loop body inside async with."""
    try:
        async with await aclient().chat.completions.create(**chat_args(stream=True, mock=LONG)) as stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    raise ValueError("the caller's own bug")
    except ValueError as error:
        seen("caught", error)


@case(outcome="abandoned", ttft=True)
async def aexit_abandoned(seen: Seen) -> None:
    """Two __anext__() calls, then the async stream is dropped and garbage-collected."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=LONG))
    seen("first", await stream.__anext__())
    seen("second", await stream.__anext__())
    del stream
    gc.collect()


@case(outcome="cancelled", ttft=True)
async def aexit_task_cancelled(seen: Seen) -> None:
    """A task consuming a stream is cancelled mid-stream: the caller sees CancelledError."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=SLOW))
    got: list[Any] = []

    async def consume() -> None:
        async for chunk in stream:
            got.append(chunk)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError as error:
        seen("cancelled", error)
    seen("got some chunks", bool(got))


@case(outcome="cancelled", ttft=False, op="chat")
async def aexit_cancelled_during_request(seen: Seen) -> None:
    """A task awaiting a non-streamed answer is cancelled before it arrives."""
    task = asyncio.create_task(aclient().chat.completions.create(**chat_args(mock={"mock_ttft": 2})))
    await asyncio.sleep(0.3)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError as error:
        seen("cancelled", error)


@case(outcome="error", error_type="TimeoutError", ttft=True)
async def aexit_asyncio_timeout(seen: Seen) -> None:
    """async for under asyncio.timeout() that expires mid-stream: the caller sees TimeoutError."""
    need(asyncio, "timeout")
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=SLOW))
    async with asyncio.timeout(0.3):  # type: ignore[attr-defined]
        async for _ in stream:
            pass


# From Python 3.12 wait_for is asyncio.timeout() inside the caller's task; on 3.11 it cancels a
# separate task, which cannot tell that a timeout asked for it: the documented rule.
@case(outcome="error" if sys.version_info >= (3, 12) else "cancelled",
      error_type="TimeoutError" if sys.version_info >= (3, 12) else None, ttft=True)
async def aexit_wait_for(seen: Seen) -> None:
    """asyncio.wait_for() around consuming a stream, expiring mid-stream."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock=SLOW))

    async def consume() -> None:
        async for _ in stream:
            pass

    try:
        await asyncio.wait_for(consume(), 0.3)
    except TimeoutError as error:  # (asyncio.TimeoutError, the builtin from 3.11)
        seen("timed out", error)


@case(outcome="error", error_type=RAISED, ttft=True)
async def aexit_server_drops_connection(seen: Seen) -> None:
    """The server cuts the connection of an async stream after three tokens."""
    stream = await aclient().chat.completions.create(**chat_args(stream=True, mock={"mock_drop_after": 3}))
    await seen.aitems("chunks", stream)


@case(outcome="closed_early", ttft=True)
async def aexit_helper_stream_break(seen: Seen) -> None:
    """chat.completions.stream() async: break inside async with."""
    async with aclient().chat.completions.stream(**chat_args(mock=LONG)) as stream:
        await seen.aitems("events", stream, limit=4)

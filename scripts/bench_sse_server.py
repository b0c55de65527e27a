#!/usr/bin/env python3
"""A minimal OpenAI-compatible SSE chat server on loopback, for the concurrency row of
scripts/bench_overhead.py: one asyncio process, HTTP/1.1 keep-alive, chunked transfer.

Every ``POST`` is answered with a streamed chat completion of ``--chunks`` content chunks
(``bench_chunks`` in the request body overrides it), the first at least ``--ttft`` seconds
after the request arrived and the others ``--itl`` seconds apart, each written when it is due
(TCP_NODELAY: one chunk, one segment), as an LLM server sends tokens. The streams keep an even
spread whenever their requests arrive: the n-th request's chunks are due at times
``n / --spread`` of an ``--itl`` after the ticks of one clock, so that concurrent streams take
turns, as independent users' streams do, instead of arriving in bursts whose size would depend
on when the client happened to send each request. Prints its port, then serves until killed.

    python scripts/bench_sse_server.py [--chunks 200] [--ttft 0.05] [--itl 0.08] [--spread 200]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import time

from bench_workloads import CONTENT, DONE, ROLE, STOP

HEADERS = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
           b"transfer-encoding: chunked\r\n\r\n")


def frame(data: bytes) -> bytes:
    """One piece of a chunked HTTP body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


async def answer(writer: asyncio.StreamWriter, chunks: int, ttft: float, itl: float, phase: float) -> None:
    """The stream, its chunks due at ``phase`` past the ticks of ``itl`` (on the perf_counter clock)."""
    first = math.ceil((time.perf_counter() + ttft - phase) / itl)
    writer.write(HEADERS + frame(ROLE))
    content = frame(CONTENT)
    for index in range(chunks):
        delay = phase + (first + index) * itl - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        writer.write(content)
        await writer.drain()
    writer.write(frame(STOP + DONE) + b"0\r\n\r\n")
    await writer.drain()


async def serve(args: argparse.Namespace) -> asyncio.Server:
    requests = itertools.count()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: requests one after another on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length) or b"{}")
                phase = next(requests) % args.spread / args.spread * args.itl
                await answer(writer, int(body.get("bench_chunks", args.chunks)), args.ttft, args.itl, phase)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(connection, "127.0.0.1", args.port, backlog=1024)


async def main(args: argparse.Namespace) -> None:
    server = await serve(args)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--itl", type=float, default=0.08)
    parser.add_argument("--spread", type=int, default=200, help="streams whose chunks take turns")
    asyncio.run(main(parser.parse_args()))

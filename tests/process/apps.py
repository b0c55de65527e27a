"""Small applications that exercise a process model, run by ``test_guest.py`` bare and under the
agent: ``python apps.py CASE``. Each prints what its caller saw; ``MOCK_URL`` is the mock LLM.
Every call is short (a few tokens, milliseconds apart), so a case takes about a second."""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MESSAGES = [{"role": "user", "content": "hello"}]
TOKENS = 6
CASES: dict[str, Callable[[], None]] = {}


def case(fn: Callable[[], None]) -> Callable[[], None]:
    CASES[fn.__name__] = fn
    return fn


def client(**options: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-process", max_retries=0, **options)


def aclient() -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-process", max_retries=0)


def body(tokens: int = TOKENS, itl: float = 0.005, label: str = "") -> dict[str, Any]:
    return {"mock_tokens": tokens, "mock_itl": itl, "mock_ttft": 0.005, "mock_content": None,
            **({"mock_label": label} if label else {})}


def stream(openai_client: Any, **kwargs: Any) -> Any:
    return openai_client.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True,
                                                 extra_body=body(**kwargs))


def read(chunks: Any, stop_after: int | None = None) -> int:
    """Read a stream to its end, or break after ``stop_after`` chunks; the number read."""
    count = 0
    for _ in chunks:
        count += 1
        if count == stop_after:
            break
    return count


async def aread(chunks: Any, stop_after: int | None = None) -> int:
    count = 0
    async for _ in chunks:
        count += 1
        if count == stop_after:
            break
    return count


# -- concurrency models ------------------------------------------------------------------------------

@case
def threads() -> None:
    """8 threads, one stream each; the odd ones break off after two chunks, and close it. (Left
    to the garbage collector, httpx's close of a broken-off stream can run inside a collection on
    a thread that holds httpcore's pool lock, and the bare app hangs: seen once in a clean-clone
    run on openai 1.x. The agent's side of abandoned streams is the ``abandoned`` case's.)"""
    with client() as shared:
        counts = [0] * 8

        def work(index: int) -> None:
            chunks = stream(shared)
            counts[index] = read(chunks, 2 if index % 2 else None)
            chunks.close()

        workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    print(counts)


async def _tasks() -> list[int]:
    import asyncio

    async with aclient() as shared:
        async def work(index: int) -> int:
            return await aread(await shared.chat.completions.create(
                model="mock-gpt", messages=MESSAGES, stream=True, extra_body=body()), 2 if index % 2 else None)

        return list(await asyncio.gather(*(work(i) for i in range(8))))


@case
def asyncio_tasks() -> None:
    """asyncio: 8 tasks, one stream each; the odd ones break off after two chunks."""
    import asyncio

    print(asyncio.run(_tasks()))


async def _aiohttp_stream(session: Any, stop_after: int | None = None, **kwargs: Any) -> int:
    """An OpenAI chat stream read with aiohttp's lines (no SDK): the data lines read. One the caller
    leaves early pauses after its first tokens, so that it is still being sent when the caller
    leaves, however late a loaded machine runs the caller (aiohttp reads ahead: a stream whose
    every byte has arrived is complete)."""
    pause = {"mock_stall_at": stop_after, "mock_stall": 3.0} if stop_after else {}
    request = {"model": "mock-gpt", "messages": MESSAGES, "stream": True, **body(**kwargs), **pause}
    async with session.post(os.environ["MOCK_URL"] + "/chat/completions", json=request) as response:
        return await aread((line async for line in response.content if line.startswith(b"data: {")), stop_after)


@case
def aiohttp_tasks() -> None:
    """asyncio and aiohttp, no SDK: 8 tasks, one stream each; the odd ones leave after two chunks,
    which releases their response; one session, closed at the end."""
    import asyncio

    import aiohttp

    async def main() -> list[int]:
        async with aiohttp.ClientSession() as session:
            return list(await asyncio.gather(*(_aiohttp_stream(session, 2 if i % 2 else None) for i in range(8))))

    print(asyncio.run(main()))


@case
def uvloop_tasks() -> None:
    """The same on uvloop's event loop."""
    import uvloop

    print(uvloop.run(_tasks()))


async def _cancellations(backend: str) -> list[str]:
    """Under trio or anyio: one stream read to its end; one whose scope another task cancels
    while the reader waits for a chunk; one past a ``move_on_after`` deadline; one to its end."""
    import anyio

    seen = []
    async with aclient() as shared:
        async def open_stream() -> Any:
            return await shared.chat.completions.create(model="mock-gpt", messages=MESSAGES, stream=True,
                                                        extra_body=body(tokens=20, itl=0.02))

        seen.append(f"read {await aread(await open_stream())}")
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as scope:
                async def cancel_soon() -> None:
                    await anyio.sleep(0.1)
                    scope.cancel()

                group.start_soon(cancel_soon)
                await aread(await open_stream())
        seen.append(f"cancelled {scope.cancelled_caught}")
        late = await open_stream()
        with anyio.move_on_after(0.1) as deadline:
            await aread(late)
        seen.append(f"moved on {deadline.cancelled_caught}")
        seen.append(f"read {await aread(await open_stream())}")
    return seen


@case
def trio_cancel() -> None:
    """trio, through anyio (openai's async client runs on it): two streams cancelled, two not."""
    import trio

    print(trio.run(_cancellations, "trio"))


@case
def anyio_cancel() -> None:
    """The same cancellations on anyio's asyncio backend."""
    import anyio

    print(anyio.run(_cancellations, "asyncio"))


@case
def gevent_greenlets() -> None:
    """gevent's patch_all, then 10 greenlets, one stream each; the odd ones break off."""
    from gevent import monkey

    monkey.patch_all()
    import gevent

    shared = client()
    jobs = [gevent.spawn(lambda i=i: read(stream(shared), 2 if i % 2 else None)) for i in range(10)]
    gevent.joinall(jobs)
    shared.close()
    print([job.value for job in jobs])


def bedrock_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("bedrock-runtime", region_name="us-east-1",
                        endpoint_url=os.environ["MOCK_URL"].removesuffix("/v1"), aws_access_key_id="AKIDPROCESS",
                        aws_secret_access_key="process",
                        config=Config(retries={"max_attempts": 1}))


def bedrock_stream(bedrock: Any, tokens: int = TOKENS, stall_at: int | None = None) -> Any:
    """A Bedrock ``converse_stream``'s events (botocore's EventStream); with ``stall_at``, the
    server pauses 5 s before that token."""
    stall = {"mock_stall_at": stall_at, "mock_stall": 5.0} if stall_at is not None else {}
    messages = [{"role": "user", "content": [{"text": "hello"}]}]
    return bedrock.converse_stream(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=messages,
                                   additionalModelRequestFields={**body(tokens), **stall})["stream"]


@case
def bedrock_gevent() -> None:
    """gevent's patch_all, then boto3: 6 greenlets, one Bedrock stream each on a shared client; the
    odd ones break off after two events, and close it. A seventh is killed while it waits for its
    stream's third event (the server pauses there)."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import gevent.event

    def job(index: int) -> int:
        events = bedrock_stream(shared)
        count = read(events, 2 if index % 2 else None)
        events.close()  # (a connection left open would warn at exit, wherever the collector runs then)
        return count

    waiting = gevent.event.Event()

    def killed() -> None:
        events = bedrock_stream(shared, stall_at=1)
        try:
            for number, _ in enumerate(events, 1):
                if number == 2:  # (messageStart and the first token)
                    waiting.set()
        finally:
            events.close()

    shared = bedrock_client()
    jobs = [gevent.spawn(job, i) for i in range(6)]
    victim = gevent.spawn(killed)
    waiting.wait()
    victim.kill()
    gevent.joinall(jobs)
    print([job.value for job in jobs], type(victim.exception).__name__)


# -- servers: the application is a server; this driver runs it and sends it requests ---------------

WSGI_APP = '''
import os
import openai

client = openai.OpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-process", max_retries=0)


def app(environ, start_response):
    broken = environ.get("PATH_INFO") == "/break"
    stream = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, extra_body={"mock_tokens": 6, "mock_itl": 0.005})
    start_response("200 OK", [("Content-Type", "text/plain")])

    def relay():
        # A stream left unclosed is closed by the garbage collector, which under gevent can block on
        # httpcore's pool lock held by the greenlet it interrupted: the bare app then hangs now and
        # then (seen on openai 1.x). Breaking off, the app closes what it opened.
        with stream:
            for index, chunk in enumerate(stream):
                if broken and index == 2:
                    break
                yield (chunk.choices[0].delta.content or "").encode() if chunk.choices else b""
    return relay()
'''

ASGI_APP = '''
import os
import openai

client = openai.AsyncOpenAI(base_url=os.environ["MOCK_URL"], api_key="sk-process", max_retries=0)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    stream = await client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}],
                                                  stream=True, extra_body={"mock_tokens": 6, "mock_itl": 0.005})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    async for index, chunk in _enumerate(stream):
        if scope["path"] == "/break" and index == 2:
            await stream.close()
            break
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _enumerate(items):
    index = 0
    async for item in items:
        yield index, item
        index += 1
'''


def _serve_and_ask(worker_class: str, source: str) -> None:
    """Run gunicorn with 2 workers of ``worker_class`` on the app, send 6 requests (3 break off
    mid-stream), stop it with SIGTERM, and print what the clients got and gunicorn's exit code."""
    import socket
    import subprocess
    import urllib.request

    here = os.path.dirname(os.path.abspath(__file__))
    app_dir = os.path.join(os.environ.get("APP_TMP", here), f"app_{os.getpid()}")
    os.makedirs(app_dir, exist_ok=True)
    with open(os.path.join(app_dir, "served.py"), "w") as module:
        module.write(source)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    server = subprocess.Popen([gunicorn, "--workers", "2", "--worker-class", worker_class, "--bind",
                               f"127.0.0.1:{port}", "--chdir", app_dir, "--graceful-timeout", "5",
                               "--log-level", "warning", "served:app"], stderr=subprocess.PIPE, text=True)
    replies = []
    try:
        deadline = time.monotonic() + 45  # (generous: two cores busy with the rest of the suite)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
                    replies.append(len(response.read()))
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        for path in ("/break", "/", "/break", "/", "/break"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
                replies.append(len(response.read()))
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    print(replies, server.returncode)
    # gunicorn's own lines carry times and pids: only the errors are passed on
    for line in stderr.splitlines():
        if "Traceback" in line or "Error" in line:
            print(line, file=sys.stderr)


@case
def gunicorn_gevent() -> None:
    """gunicorn -k gevent serving a WSGI app that relays a stream (half the requests break off)."""
    _serve_and_ask("gevent", WSGI_APP)


@case
def gunicorn_sync() -> None:
    """gunicorn's sync workers serving the same WSGI app."""
    _serve_and_ask("sync", WSGI_APP)


@case
def gunicorn_uvicorn() -> None:
    """gunicorn with uvicorn workers serving an ASGI app that relays a stream."""
    _serve_and_ask("uvicorn_worker.UvicornWorker", ASGI_APP)


# -- fork and multiprocessing ------------------------------------------------------------------------

def _work(index: int) -> int:
    with client() as own:
        return read(stream(own))


def _fork_and_wait(in_child: Callable[[], None]) -> int:
    """Fork; the child runs ``in_child`` and exits as a program does (atexit handlers run)."""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        in_child()
        # (A collection before the exit, bare and under the agent alike. The child's copy of the
        # parent's half-read connection outlives the unwinding in a reference cycle of the
        # client's own (botocore's connection and urllib3's response; none of the agent's
        # objects), and warns as an unclosed socket if a full collection finds it before the
        # interpreter's teardown: the agent's exit work, exporting the child's spans, allocates
        # enough to run one where the counts stood near it, while bare allocates nothing at exit.
        # This collection resets the counts.)
        gc.collect()
        sys.exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@case
def fork_mid_stream() -> None:
    """os.fork while a stream is half read: the child makes a call of its own and exits (its copy
    of the parent's stream unread), the parent reads on."""
    with client() as shared:
        chunks = iter(stream(shared, tokens=10))
        first = [next(chunks) for _ in range(3)]
        status = _fork_and_wait(lambda: print("child read", _work(0)))
        print("parent read", len(first) + sum(1 for _ in chunks), "child exit", status)


@case
def fork_mid_aiohttp_stream() -> None:
    """os.fork while an aiohttp stream is half read, on a running event loop: the child makes a
    call of its own (httpx, through the SDK) and exits without running the loop it inherited
    (whose selector would read the parent's socket): its exit handlers run, then ``os._exit``, as
    multiprocessing's fork children do. The parent reads on."""
    import asyncio
    import atexit

    import aiohttp

    def child() -> None:
        print("child read", _work(0))
        atexit._run_exitfuncs()
        sys.stdout.flush()
        os._exit(0)

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            request = {"model": "mock-gpt", "messages": MESSAGES, "stream": True, **body(tokens=10)}
            async with session.post(os.environ["MOCK_URL"] + "/chat/completions", json=request) as response:
                first = [await response.content.readline() for _ in range(3)]
                status = _fork_and_wait(child)
                rest = [line async for line in response.content]
        print("parent read", len(first) + len(rest), "child exit", status)

    asyncio.run(main())


@case
def fork_mid_bedrock_stream() -> None:
    """os.fork while a Bedrock stream is half read: the child makes a Bedrock call of its own and
    exits, the parent reads on."""
    bedrock = bedrock_client()
    events = iter(bedrock_stream(bedrock, tokens=10))
    first = [next(events) for _ in range(3)]
    status = _fork_and_wait(lambda: print("child read", read(bedrock_stream(bedrock_client()))))
    print("parent read", len(first) + sum(1 for _ in events), "child exit", status)


@case
def fork_after_break() -> None:
    """os.fork right after a break out of a stream; the child makes a call of its own."""
    with client() as shared:
        kept = stream(shared, tokens=10)
        print("parent read", read(kept, 2))
        status = _fork_and_wait(lambda: print("child read", _work(0)))
        time.sleep(0.8)  # (past the grace of a break: the parent's call ends as closed early)
        print("child exit", status)


def _sigterm_handler(_: int) -> str:
    """What a worker does on SIGTERM (a pool's ``terminate()`` sends it): as without the agent."""
    return repr(signal.getsignal(signal.SIGTERM))


def _pool_case(method: str, as_context: bool) -> None:
    import multiprocessing

    context = multiprocessing.get_context(method)
    if as_context:
        with context.Pool(2) as pool:
            counts = pool.map(_work, range(4))
            handlers = pool.map(_sigterm_handler, range(2))
    else:
        pool = context.Pool(2)
        counts = pool.map(_work, range(4))
        handlers = pool.map(_sigterm_handler, range(2))
        pool.close()
        pool.join()
    print(method, counts, handlers)


for _method in ("fork", "spawn", "forkserver"):
    for _as_context in (True, False):
        def _pool(method: str = _method, as_context: bool = _as_context) -> None:
            _pool_case(method, as_context)

        _pool.__name__ = f"pool_{_method}_{'with' if _as_context else 'close_join'}"
        _pool.__doc__ = f"multiprocessing {_method} Pool(2), 4 calls ({'with' if _as_context else 'close/join'})."
        case(_pool)


@case
def pool_made_mid_stream() -> None:
    """A fork Pool(2) made while the parent is half-way through a stream: its workers own none of it."""
    import multiprocessing

    with client() as shared:
        chunks = iter(stream(shared, tokens=10))
        first = [next(chunks) for _ in range(3)]
        with multiprocessing.get_context("fork").Pool(2) as pool:
            counts = pool.map(_work, range(2))
        print("parent read", len(first) + sum(1 for _ in chunks), counts)


# -- signals and exit ----------------------------------------------------------------------------------

def _open_then_signal(signum: int) -> None:
    """One call read to its end, then a stream half read when ``signum`` arrives."""
    with client() as shared:
        print("read", read(stream(shared)), flush=True)
        chunks = iter(stream(shared, tokens=50, itl=0.01))
        for index, _ in enumerate(chunks):
            if index == 3:
                os.kill(os.getpid(), signum)
                time.sleep(1)
        print("not reached")


@case
def sigterm_default() -> None:
    """SIGTERM with the default handler, mid-stream: the process dies of the signal."""
    _open_then_signal(signal.SIGTERM)


@case
def sigterm_own_handler() -> None:
    """An application handler that does not chain: it prints and exits with 3."""
    def on_term(signum: int, frame: Any) -> None:
        print("handled", flush=True)
        sys.exit(3)

    signal.signal(signal.SIGTERM, on_term)
    _open_then_signal(signal.SIGTERM)


@case
def sigterm_chained_handler() -> None:
    """An application handler that chains to the previous one if it is callable, then exits 0."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        print("cleaned up", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    _open_then_signal(signal.SIGTERM)


@case
def sigint_mid_stream() -> None:
    """Ctrl-C (SIGINT, KeyboardInterrupt) mid-stream, not caught."""
    _open_then_signal(signal.SIGINT)


@case
def exit_in_stream() -> None:
    """sys.exit(4) inside the loop over a stream."""
    with client() as shared:
        for index, _ in enumerate(stream(shared)):
            if index == 2:
                sys.exit(4)


@case
def atexit_calls() -> None:
    """An application's own atexit handler makes a call, after the main code made one."""
    shared = client()

    def last_words() -> None:
        print("at exit read", read(stream(shared)))
        shared.close()

    atexit.register(last_words)
    print("read", read(stream(shared)))


@case
def abandoned_at_exit() -> None:
    """200 streams dropped after their first chunk, a collection every 50, then exit."""
    with client() as shared:
        for index in range(200):
            chunks = stream(shared, tokens=3, itl=0.0)
            next(iter(chunks))
            del chunks
            if index % 50 == 49:
                gc.collect()
    print("dropped 200")


@case
def held_after_break() -> None:
    """A relay generator that keeps the SDK's stream alive after the caller's break, for 1 s."""
    def relay(chunks: Any) -> Any:
        yield from chunks

    with client() as shared:
        held = relay(stream(shared, tokens=20))
        for index, _ in enumerate(held):
            if index == 2:
                break
        time.sleep(1.0)
        del held
        print("released")


if __name__ == "__main__":
    CASES[sys.argv[1]]()

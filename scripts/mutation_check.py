#!/usr/bin/env python3
"""Does the suite bite? Apply realistic bugs to the core, one at a time, and see which survive.

Each mutation replaces one exact piece of source with a plausible mistake (TTFT from the role
chunk, the decode rate over the prefill, p99 as p50, an outcome swapped, injection despite the
user's stream_options, ...). It is applied to a copy of the working tree in a temporary folder,
never to the tree itself, and the tests that should notice it run against the copy (the copy's
``src`` comes first on ``PYTHONPATH``, also in the tests' child processes). A mutation whose
tests still pass *survives*: a behaviour the suite does not pin. The figure to keep is the
share killed (goal: at least 90 %).

    python scripts/mutation_check.py [--only NAME ...] [--list] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/nexent_autoinstrument/"


@dataclass(frozen=True)
class Mutation:
    """Replace ``before`` (which must occur exactly once in ``path``) by ``after``; ``tests`` are
    the pytest arguments that should then fail."""

    name: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...]


STREAMS = ("tests/test_openai_streams.py", "tests/test_lifecycle.py")
AIOHTTP = ("tests/test_aiohttp.py", "tests/test_fuzz.py", "tests/conformance", "-k", "aiohttp")
BEDROCK = ("tests/test_bedrock.py", "tests/test_fuzz.py", "tests/conformance", "-k", "bedrock")
UNIT = ("tests/test_lifecycle.py", "tests/test_metrics_exposition.py", "tests/test_adapters.py")

MUTATIONS: tuple[Mutation, ...] = (
    # -- what is measured -------------------------------------------------------------------------
    Mutation("TTFT from the first chunk, role-only included", PKG + "adapters/openai.py",
             "if text or delta.tool_calls or delta.refusal or delta.function_call or _reasoning(delta):",
             "if True:", ("tests/test_openai_streams.py", "tests/test_adapters.py")),
    Mutation("decode rate over the prefill too", PKG + "tracker.py",
             "rate = output_tokens / self.content_chunks * self._gap_count / self._gap_sum",
             "rate = output_tokens / self.content_chunks * self._gap_count / (self._gap_sum + ttft)",
             ("tests/test_metrics_exposition.py", "tests/test_openai_streams.py")),
    Mutation("p99 computed as p50", PKG + "tracker.py",
             "itl_p99=percentile(gaps, 0.99) if gaps else None", "itl_p99=percentile(gaps, 0.50) if gaps else None",
             ("tests/test_result.py",)),
    Mutation("ITL max ignores gaps past the offsets cap", PKG + "tracker.py",
             "itl_max=max(self._max_gap, gaps[-1]) if gaps else None", "itl_max=gaps[-1] if gaps else None",
             ("tests/test_result.py",)),
    Mutation("a stall after a bundled chunk is lost", PKG + "tracker.py",
             "elif self._read_at is not None:", "elif False:", ("tests/test_result.py",)),
    Mutation("offsets truncation flag off by one", PKG + "tracker.py",
             "offsets_truncated=self.content_chunks > len(self._times),",
             "offsets_truncated=self.content_chunks >= len(self._times),", ("tests/test_result.py",)),
    Mutation("usage source swapped", PKG + "tracker.py",
             'usage_source=None if output_tokens is None else "api" if api_usage else "estimated",',
             'usage_source=None if output_tokens is None else "estimated" if api_usage else "api",',
             ("tests/test_openai_streams.py", "tests/test_token_estimate.py")),
    Mutation("slow-duration comparison inverted", PKG + "tracker.py",
             "if duration > settings.slow_request_threshold_seconds:",
             "if duration < settings.slow_request_threshold_seconds:", ("tests/test_openai_streams.py",)),
    Mutation("stall events not capped", PKG + "tracker.py",
             "if gap > self._stall_after and len(self._stalls) < _MAX_STALL_EVENTS:", "if gap > self._stall_after:",
             ("tests/test_result.py",)),
    Mutation("waiting chunks timed as arrivals", PKG + "tracker.py",
             "            # wrong arrival time.\n"
             "            fresh = waited > WAITED_READ_SECONDS and waited * 8 > asked - timing.previous_read_time \\\n"
             "                and now != self._arrival_at",
             "            # wrong arrival time.\n            fresh = now != self._arrival_at",
             ("tests/test_measurement_truth.py",)),
    Mutation("contents of one read: data that waited taken as an arrival", PKG + "tracker.py",
             "        waited = now - asked\n"
             "        fresh = waited > WAITED_READ_SECONDS and waited * 8 > asked - timing.previous_read_time \\\n"
             "            and now != self._arrival_at",
             "        waited = now - asked\n        fresh = now != self._arrival_at", ("tests/test_result.py",)),
    Mutation("client time not recorded", PKG + "instrumentors/exchange.py",
             "self.timing.request_sent = _clock()", "pass", ("tests/test_measurement_truth.py",)),
    Mutation("finish reasons deduplicated, not one per choice", PKG + "tracker.py",
             "self._finish_reasons[index if isinstance(index, int) else len(self._finish_reasons)] = reason",
             "self._finish_reasons[0] = reason", ("tests/conformance",)),
    Mutation("gaps added to the histogram twice", PKG + "metrics.py",
             "            value.inc(count)", "            value.inc(2 * count)", ("tests/test_metrics_exposition.py",)),
    # -- readers -------------------------------------------------------------------------------------
    Mutation("response.failed handling removed", PKG + "adapters/openai.py",
             '        if kind == "response.failed":\n            tracker.fail("response.failed")',
             "        pass", ("tests/test_openai_streams.py",)),
    Mutation("skim lets a finish-reason chunk through", PKG + "adapters/openai.py",
             """    return (find(b'"finish_reason":null') >= 0 and data.count(b'"finish_reason"') == 1
            and data.count(b'"delta"') == 1 and find(b'"content":"') >= 0""",
             """    return (data.count(b'"delta"') == 1 and find(b'"content":"') >= 0""",
             ("tests/test_fuzz.py", "tests/test_adapters.py")),
    Mutation("skim lets a chunk of two choices through", PKG + "adapters/openai.py",
             """data.count(b'"delta"') == 1 and find(b'"content":"') >= 0""", """find(b'"content":"') >= 0""",
             ("tests/test_fuzz.py", "tests/test_adapters.py")),
    Mutation("an event's template takes other bytes around the text", PKG + "adapters/sse.py",
             "        if not text or len(text) != len(data) - self._data_around:", "        if not text:",
             ("tests/test_fuzz.py", "tests/test_adapters.py")),
    Mutation("an event's template takes a text with a quote", PKG + "adapters/sse.py",
             "is not None\n        return _QUOTE not in text and _LF not in text and _CR not in text\n\n    def learn",
             "is not None\n        return True\n\n    def learn", ("tests/test_fuzz.py", "tests/test_adapters.py")),
    Mutation("an event's template from a read is cut one byte off", PKG + "adapters/sse.py",
             "self._learn_data(self.prefix[value:], self.suffix[:-2])",
             "self._learn_data(self.prefix[value + 1:], self.suffix[:-2])",
             ("tests/test_fuzz.py", "tests/test_adapters.py")),
    Mutation("a read of one event learns no read template once an event's is known", PKG + "instrumentors/body.py",
             "if known is not None and (plain is not None or not recognised):",
             "if known is not None and not recognised:", ("tests/test_httpx.py",)),
    Mutation("a burst whose first content was parsed learns no template", PKG + "instrumentors/body.py",
             '                        known.learn(b"", data)', "                        pass", ("tests/test_httpx.py",)),
    Mutation("a read of many events takes a plain-looking text with a quote", PKG + "adapters/sse.py",
             "else _QUOTE not in text and _LF not in text and _CR not in text):",
             "else _LF not in text and _CR not in text):", ("tests/test_fuzz.py", "tests/test_adapters.py")),
    Mutation("a read of many events drops those that are no plain delta", PKG + "adapters/sse.py",
             '                others.append(event + b"\\n\\n")', "                pass",
             ("tests/test_fuzz.py", "tests/test_httpx.py")),
    Mutation("a read's whole events are taken with what follows them", PKG + "adapters/sse.py",
             "        self._buffer, self.idle = buffer[end:], False", '        self._buffer, self.idle = b"", True',
             ("tests/test_adapters.py",)),
    Mutation("a piece of a line read alone is dropped", PKG + "adapters/sse.py",
             "                self._buffer += chunk\n", "                pass\n", ("tests/test_adapters.py",)),
    Mutation("a read of many events gives its first content no arrival", PKG + "instrumentors/body.py",
             "            tracker.contents(count)\n        else:", "            tracker.waited_contents(count)\n        else:",
             ("tests/test_httpx.py", "tests/test_result.py", "tests/test_fuzz.py")),
    Mutation("events skimmed as plain deltas where every text is kept", PKG + "instrumentors/body.py",
             "tracker.response_id is not None and tracker.texts is None and (",
             "tracker.response_id is not None and (", ("tests/test_httpx.py",)),
    Mutation("a read's events looked at one by one fail at an odd run of line ends", PKG + "instrumentors/body.py",
             '            end = region.find(b"\\n\\n", start) + 2', '            end = region.index(b"\\n\\n", start) + 2',
             ("tests/test_fuzz.py",)),
    Mutation("a template of several data lines tells a read's events apart", PKG + "adapters/sse.py",
             "one_line = _LF not in prefix and _LF not in suffix", "one_line = True", ("tests/test_httpx.py",)),
    Mutation("a chunk that waited ends no run of timed arrivals", PKG + "tracker.py",
             "            if self._previous is not None:\n                self._end_run(index - 1)\n            self._read_at",
             "            self._read_at", ("tests/test_result.py", "tests/test_fuzz.py")),
    Mutation("a chunk that waited is not counted as waiting", PKG + "tracker.py",
             "            self.waiting_chunks += 1\n", "", ("tests/test_result.py", "tests/test_httpx.py")),
    Mutation("many events checked together take a text with a quote", PKG + "adapters/sse.py",
             "        return _QUOTE not in joined and _LF not in joined and _CR not in joined",
             "        return True", ("tests/test_fuzz.py",)),
    Mutation("many events checked together take an escaped text with an unescaped quote", PKG + "adapters/sse.py",
             "            return all(map(_NON_EMPTY_TEXT.fullmatch, texts))", "            return True",
             ("tests/test_fuzz.py",)),
    Mutation("many events checked together take an empty text", PKG + "adapters/sse.py",
             "        if not all(texts) or sum(", "        if sum(", ("tests/test_fuzz.py",)),
    Mutation("many events checked together take other bytes around a text", PKG + "adapters/sse.py",
             " or sum(map(len, texts)) != sum(map(len, events)) - self._event_around * len(events):", ":",
             ("tests/test_fuzz.py",)),
    Mutation("many events: those set aside at the start are dropped", PKG + "adapters/sse.py",
             "for event in events[:first] + events[last:]]", "for event in events[last:]]", ("tests/test_fuzz.py",)),
    Mutation("a read of many events counts an event with an empty text", PKG + "adapters/sse.py",
             "            if text and len(text) == len(event) - around and (",
             "            if len(text) == len(event) - around and (", ("tests/test_fuzz.py", "tests/test_adapters.py")),
    Mutation("a read of many events takes other bytes around the text", PKG + "adapters/sse.py",
             "            if text and len(text) == len(event) - around and (", "            if text and (",
             ("tests/test_fuzz.py", "tests/test_adapters.py")),
    Mutation("a read of many events takes an escaped text with an unescaped quote", PKG + "adapters/sse.py",
             "_NON_EMPTY_TEXT.fullmatch(text) is not None if _BACKSLASH in text\n                    else",
             "True if _BACKSLASH in text\n                    else", ("tests/test_fuzz.py", "tests/test_adapters.py")),
    Mutation("a read of several plain deltas is counted as one", PKG + "adapters/sse.py",
             "            return len(texts) if _QUOTE not in joined", "            return 1 if _QUOTE not in joined",
             ("tests/test_adapters.py", "tests/test_httpx.py")),
    Mutation("a read of several events is counted whole with one that is no plain delta", PKG + "adapters/sse.py",
             "            if not all(texts) or _LF in joined:", "            if not all(texts):",
             ("tests/test_adapters.py", "tests/test_fuzz.py")),
    Mutation("a read of several events is counted whole with an empty text", PKG + "adapters/sse.py",
             "            if not all(texts) or _LF in joined:", "            if _LF in joined:",
             ("tests/test_adapters.py", "tests/test_fuzz.py")),
    Mutation("a read of several events is counted whole with a broken escape", PKG + "adapters/sse.py",
             "                return len(texts) if all(map(_NON_EMPTY_TEXT.fullmatch, texts)) else 0",
             "                return len(texts)", ("tests/test_adapters.py", "tests/test_fuzz.py")),
    Mutation("no read's template comes from an event's data", PKG + "adapters/sse.py",
             '                    self._learn_read(self._event_prefix, self.data_suffix + b"\\n\\n")',
             "                    pass", ("tests/test_adapters.py", "tests/test_httpx.py")),
    Mutation("contents of one read: the first one that arrived is taken as waiting", PKG + "tracker.py",
             "range(index + 1 if fresh else index, index + room)", "range(index, index + room)",
             ("tests/test_result.py",)),
    Mutation("contents of one read: the run of arrivals before them goes on", PKG + "tracker.py",
             "                self._gap_count += index - self._run_first_index\n                self._previous = None\n",
             "                self._gap_count += index - self._run_first_index\n", ("tests/test_result.py",)),
    Mutation("SSE decoder drops multi-line data", PKG + "adapters/sse.py",
             '    return b"\\n".join(data) if data else None', "    return data[-1] if data else None",
             ("tests/test_adapters.py",)),
    Mutation("SSE fast path takes a read with CR line ends as one event", PKG + "adapters/sse.py",
             'and chunk.endswith(b"\\n\\n") and _CR not in chunk:', 'and chunk.endswith(b"\\n\\n"):',
             ("tests/test_adapters.py",)),
    Mutation("a raw read is recognised as a plain delta despite a quote in its text", PKG + "adapters/sse.py",
             "return 1 if _QUOTE not in text and _CR not in text else 0\n\n    def matches_data",
             "return 1 if _CR not in text else 0\n\n    def matches_data",
             ("tests/test_adapters.py", "tests/test_fuzz.py")),
    Mutation("fields an SDK model did not declare are not found (reasoning, usage)", PKG + "adapters/usage.py",
             "        if isinstance(extra, dict) and key in extra:", "        if False:",
             ("tests/test_adapters.py",)),
    Mutation("a field an SDK model lacks is asked of the model (an exception inside pydantic)",
             PKG + "adapters/usage.py", "        if key not in names:", "        if False:",
             ("tests/test_adapters.py",)),
    Mutation("a model with a lookup of its own is read from its fields alone", PKG + "adapters/usage.py",
             "if model is not None and lookup is model else None", "if model is not None else None",
             ("tests/test_adapters.py",)),
    Mutation("a model's property or method is taken for a missing field", PKG + "adapters/usage.py",
             "        if key not in names:", "        if True:", ("tests/test_adapters.py",)),
    Mutation("an escaped text is recognised despite an unescaped quote", PKG + "adapters/sse.py",
             """_TEXT = rb'(?:[^"\\\\\\r\\n]|""", """_TEXT = rb'(?:[^\\\\\\r\\n]|""", ("tests/test_adapters.py", "tests/test_fuzz.py")),
    Mutation("token offsets in milliseconds", PKG + "tracker.py",
             "repeat(started)), repeat(1e6))", "repeat(started)), repeat(1e3))", ("tests/test_result.py",)),
    Mutation("each gap measured from the chunk itself", PKG + "tracker.py",
             "map(sub, itertools.islice(times, 1, None), times)", "map(sub, times, times)", ("tests/test_result.py",)),
    Mutation("the offsets' text counts the first from the call's start plus one", PKG + "conventions.py",
             "chain((0,), offsets)", "chain((1,), offsets)", ("tests/test_result.py",)),
    Mutation("a gap counted where the chunk after it waited", PKG + "tracker.py",
             "timed.intersection(map((1).__rsub__, timed))", "timed.intersection(map((1).__add__, timed))",
             ("tests/test_result.py",)),
    Mutation("a run of timed gaps counted one too many", PKG + "tracker.py",
             "self._gap_count += last_index - self._run_first_index",
             "self._gap_count += last_index - self._run_first_index + 1",
             ("tests/test_result.py", "tests/test_measurement_truth.py", "tests/test_metrics_exposition.py")),
    Mutation("content timed when the SDK parsed it, not when its read returned", PKG + "tracker.py",
             "            now, asked = timing.read_time, timing.asked",
             "            now, asked = clock(), timing.asked",
             ("tests/test_result.py", "tests/test_measurement_truth.py")),
    Mutation("chunks recorded together are not counted as waiting", PKG + "tracker.py",
             "        self.waiting_chunks += count\n        self._last_content = now",
             "        self._last_content = now", ("tests/test_result.py", "tests/test_httpx.py")),
    Mutation("offsets encoded absolute, not as gaps", PKG + "conventions.py",
             "map(str, map(sub, offsets, chain((0,), offsets)))", "map(str, offsets)",
             ("tests/test_result.py", "tests/test_metrics_exposition.py")),
    Mutation("offsets cut inside a number at a length limit", PKG + "conventions.py",
             'return text[:text.rfind(",", 0, max_length + 1)] if "," in text[:max_length + 1] else "", True',
             "return text[:max_length], True", ("tests/test_result.py",)),
    # -- configuration and export -------------------------------------------------------------------
    Mutation("a signal path in the base endpoint is kept", PKG + "settings.py",
             "                             value[:-len(path)])", "                             value)",
             ("tests/test_settings.py", "tests/test_pipeline_e2e.py")),
    Mutation("the exporters read a rejected endpoint themselves", PKG + "pipeline.py",
             "    if not _signal_has_its_own_endpoint(signal):",
             "    if False:", ("tests/test_pipeline_e2e.py",)),
    Mutation("spans nobody takes are retried at exit", PKG + "pipeline.py",
             "                self._drop_spans_nobody_takes()\n", "", ("tests/test_pipeline_e2e.py",)),
    Mutation("the export ignores the environment's proxies", PKG + "exporting.py",
             'return {**merged, "proxies": dict(merged["proxies"])}', 'return {**merged, "proxies": {}}',
             ("tests/test_pipeline_e2e.py", "-k", "proxy")),
    Mutation("a named credential provider is ignored", PKG + "pipeline.py",
             "    if any(os.environ.get(name) for name in named):", "    if False:",
             ("tests/test_pipeline_e2e.py", "-k", "credential")),
    # -- how calls end ----------------------------------------------------------------------------------
    Mutation("finish guard removed (a call can emit twice)", PKG + "tracker.py",
             "        try:\n            self._finish_token.pop()\n        except IndexError:\n            return None",
             "        self._finish_token.clear()", ("tests/test_metrics_exposition.py", "tests/test_openai_streams.py")),
    Mutation("break recorded as abandoned", PKG + "streams.py",
             "        lifecycle.suspend(tracker, names.CLOSED_EARLY)", "        lifecycle.suspend(tracker, names.ABANDONED)",
             STREAMS),
    Mutation("dropped stream recorded as closed early", PKG + "instrumentors/stainless.py",
             "lifecycle.suspend(tracker, names.ABANDONED, by_caller=not tracker.progress.pulling)",
             "lifecycle.suspend(tracker, names.CLOSED_EARLY, by_caller=not tracker.progress.pulling)", STREAMS),
    Mutation("close() recorded as completed", PKG + "lifecycle.py",
             "    try:\n        return close(*args)\n    finally:\n        end(tracker, outcome=names.CLOSED_EARLY)",
             "    try:\n        return close(*args)\n    finally:\n        end(tracker, outcome=names.COMPLETED)", STREAMS),
    Mutation("raw body closed early recorded as completed", PKG + "instrumentors/exchange.py",
             "outcome or (names.COMPLETED if complete else names.CLOSED_EARLY)", "outcome or names.COMPLETED",
             ("tests/conformance",)),
    Mutation("an async body's reader left early does not close what it reads", PKG + "instrumentors/body.py",
             "        self._done = True\n        if isinstance(self._inner, AsyncGenerator):\n            await self._inner.aclose()",
             "        self._done = True", ("tests/test_httpx.py",)),
    Mutation("an error thrown into an async body's reader skips what it reads", PKG + "instrumentors/body.py",
             "            return await self._inner.athrow(error, value, traceback)",
             "            raise error", ("tests/test_httpx.py",)),
    Mutation("exit outcome swapped", PKG + "lifecycle.py",
             "_finish(tracker, names.INTERRUPTED, *stopped_at(tracker, now))",
             "_finish(tracker, names.CLOSED_EARLY, *stopped_at(tracker, now))",
             ("tests/test_lifecycle.py",)),
    Mutation("calls open at exit not ended", PKG + "pipeline.py",
             "        end_unfinished()  # before the providers flush", "        pass  # before the providers flush",
             ("tests/test_lifecycle.py",)),
    Mutation("timeout recorded as cancelled", PKG + "lifecycle.py",
             '            tracker.fail("TimeoutError")\n            _finish(tracker, names.ERROR, when)',
             "            _finish(tracker, names.CANCELLED, when)", ("tests/test_lifecycle.py",)),
    Mutation("a break is never resumed", PKG + "lifecycle.py",
             "    if tracker.progress.suspended is not None and not tracker.finished:\n        tracker.progress.suspended = None",
             "    pass", ("tests/test_lifecycle.py",)),
    Mutation("no grace after a break", PKG + "lifecycle.py",
             "RESUME_GRACE_SECONDS = 0.5", "RESUME_GRACE_SECONDS = 0.0", ("tests/test_lifecycle.py",)),
    Mutation("a suspended call does not wake the agent's thread", PKG + "lifecycle.py",
             "    _pending.append(tracker)\n    guest.wake()\n", "    _pending.append(tracker)\n", STREAMS),
    Mutation("the agent's thread does not tick through a grace", PKG + "lifecycle.py",
             "    return REAPER_TICK_SECONDS if _pending else None", "    return None", ("tests/test_lifecycle.py",)),
    Mutation("the agent's thread polls while nothing waits", PKG + "lifecycle.py",
             "    return REAPER_TICK_SECONDS if _pending else None", "    return REAPER_TICK_SECONDS",
             ("tests/test_lifecycle.py",)),
    # -- the agent as a guest in the process ------------------------------------------------------------
    Mutation("a call ended inside the collector takes locks there", PKG + "lifecycle.py",
             "    if guest.in_collector():\n        guest.post(end, tracker, exc, outcome, clock() if at is None else at)",
             "    if False:\n        guest.post(end, tracker, exc, outcome, clock() if at is None else at)",
             ("tests/test_guest_rules.py",)),
    Mutation("an exchange ended inside the collector takes locks there", PKG + "instrumentors/exchange.py",
             "        if guest.in_collector():\n            guest.post(self.end",
             "        if False:\n            guest.post(self.end", ("tests/test_guest_rules.py",)),
    Mutation("a fork child keeps its parent's calls", PKG + "lifecycle.py",
             "guest.on_fork(_disown_inherited)", "", ("tests/process/test_guest.py", "-k", "fork")),
    Mutation("a fork child ends its parent's HTTP exchanges", PKG + "instrumentors/exchange.py",
             "        if self.generation != guest.generation:\n            return",
             "        if False:\n            return", ("tests/test_guest_rules.py",)),
    Mutation("the SIGTERM handler kills even when an application chains to it", PKG + "pipeline.py",
             "        elif signal.getsignal(signal.SIGTERM) is not on_sigterm:",
             "        elif False:", ("tests/process/test_guest.py", "-k", "sigterm")),
    Mutation("pool workers keep the parent's SIGTERM handler", PKG + "pipeline.py",
             "    signal.signal(signal.SIGTERM, on_sigterm)\n    guest.on_fork(default_in_fork_child)",
             "    signal.signal(signal.SIGTERM, on_sigterm)", ("tests/process/test_guest.py", "-k", "pool")),
    Mutation("pool workers report results before their calls are exported", PKG + "instrumentors/pools.py",
             "        try:\n            flush()", "        try:\n            pass", ("tests/process/test_guest.py", "-k", "pool")),
    Mutation("the transport's reader is finalized by the collector", PKG + "instrumentors/body.py",
             "            _reading[key] = reads\n", "", ("tests/test_guest_rules.py",)),
    Mutation("any collection makes every thread post its ends", PKG + "guest.py",
             "    return collecting is not None and collecting == threading.get_ident()",
             "    return collecting is not None", ("tests/test_guest_rules.py",)),
    Mutation("a fork child re-detects its resource on a thread pool", PKG + "pipeline.py",
             "        self._tracers_lock = threading.Lock()\n        self._update_resource(fork_child_identity())",
             "        super()._handle_fork()", ("tests/test_guest_rules.py",)),
    # -- what a server may do: dialects, errors, secrets, series ------------------------------------------
    Mutation("a request is sent again on any 400", PKG + "instrumentors/stream_options.py",
             "    if response.status_code != 400 or not any(name in body for name in _NAMES):",
             "    if response.status_code != 400:", ("tests/conformance", "-k", "inject_unrelated_400")),
    Mutation("the retry is made above the client's event hooks", PKG + "instrumentors/stream_options.py",
             'for owner, hop in (("Client", _hop), ("AsyncClient", _async_hop)):',
             'for owner, hop in ():', ("tests/conformance", "-k", "inject_refused_once or inject_server_rejects")),
    Mutation("an exception event quotes the server's error body", PKG + "conventions.py",
             '    span.add_event("exception", {"exception.type": type(error).__qualname__})',
             "    span.record_exception(error)", ("tests/test_leaks.py", "-k", "capture-off")),
    Mutation("the injected usage event is only found between \\n\\n", PKG + "adapters/sse.py",
             "        if _CR in buffer:\n            return self._general(buffer)\n        end = buffer.rfind",
             "        end = buffer.rfind", ("tests/test_adapters.py",)),
    Mutation("a plain delta recognised from its bytes is not counted as a chunk", PKG + "instrumentors/body.py",
             "tracker.content(None, 1, 1)  # (one event per read", "tracker.content(None, 1, 0)  # (one event per read",
             ("tests/test_httpx.py", "tests/test_measurement_truth.py", "tests/test_providers.py")),
    Mutation("an NDJSON body's last line without its line end is lost", PKG + "instrumentors/body.py",
             '            self.feed(b"\\n")', "            pass", ("tests/test_providers.py", "tests/test_fuzz.py")),
    Mutation("a streamed body whose type says nothing is read as JSON", PKG + "instrumentors/body.py",
             "        framing = endpoint.protocol.framing", '        framing = "json"', ("tests/test_httpx.py",)),
    Mutation("a compressed body is not measured", PKG + "instrumentors/body.py",
             "        inflate = Inflate(encoding)  #",
             "        return None, None", ("tests/conformance", "-k", "dialect_ollama_gzip or dialect_openai_gzip_httpx")),
    Mutation("a gzip header's optional fields are not skipped", PKG + "instrumentors/body.py",
             "            end = zero + 1", "            pass", ("tests/test_httpx.py", "-k", "gzip or zlib")),
    Mutation("a gzip header's extra field is not skipped", PKG + "instrumentors/body.py",
             '        end += 2 + int.from_bytes(data[end:end + 2], "little")', "        end += 2",
             ("tests/test_httpx.py", "-k", "gzip or zlib")),
    Mutation("a gzip header cut by a read is taken as whole", PKG + "instrumentors/body.py",
             "    return end if len(data) >= end else None", "    return end",
             ("tests/test_httpx.py", "-k", "gzip or zlib")),
    Mutation("a gzip member is inflated with its CRC-32 checked", PKG + "instrumentors/body.py",
             "        self.decompress = zlib.decompressobj(-15).decompress\n        return self.decompress(data[end:])",
             "        self.decompress = zlib.decompressobj(31).decompress\n        return self.decompress(data)",
             ("tests/test_httpx.py", "-k", "gzip or zlib")),
    Mutation("an outsize gzip header is kept without bound", PKG + "instrumentors/body.py",
             "        if end is None and len(data) <= MAX_GZIP_HEADER:", "        if end is None:",
             ("tests/test_httpx.py", "-k", "gzip or zlib")),
    Mutation("response models share the request models' budget", PKG + "metrics.py",
             "        self.response_model_label = BoundedLabel(max_model_labels)",
             "        self.response_model_label = self.model_label", ("tests/test_metrics_exposition.py",)),
    Mutation("a percent-encoded query key is not decoded", PKG + "redaction.py",
             "        name = unquote_plus(raw_key)", "        name = raw_key", ("tests/test_redaction.py",)),
    Mutation("custom HTTP methods are label values", PKG + "instrumentors/exchange.py",
             '"http.request.method": method if method in names.HTTP_METHODS else "_OTHER",',
             '"http.request.method": method,', ("tests/test_httpx.py", "-k", "custom_method")),
    Mutation("a stream collected while pulled counts as abandoned", PKG + "instrumentors/stainless.py",
             "by_caller=not tracker.progress.pulling)", "by_caller=True)", ("tests/test_guest_rules.py",)),
    Mutation("a request that fails is not ended by the SDK layer", PKG + "lifecycle.py",
             "            if exc is not None:\n                end(self._call.tracker, exc)",
             "            pass", ("tests/test_openai_calls.py", "tests/conformance")),
    Mutation("an error after the caller stopped overrides the outcome", PKG + "lifecycle.py",
             "        if exc is not None and stop is not None and stop.by_caller:",
             "        if False:", ("tests/conformance",)),
    # -- calls, and what is counted -----------------------------------------------------------------
    Mutation("usage injected although the user set stream_options", PKG + "instrumentors/stainless.py",
             "              and stream_options.OPTION not in body and not _is_raw_response(options)",
             "              and not _is_raw_response(options)", ("tests/test_openai_streams.py", "tests/conformance")),
    Mutation("injected usage chunk handed to the user", PKG + "streams.py",
             "stream.read, stream.drop\n    progress = tracker.progress\n    try:\n        for item in inner:",
             "stream.read, None\n    progress = tracker.progress\n    try:\n        for item in inner:",
             ("tests/test_openai_streams.py", "tests/conformance")),
    Mutation("a refusing server is not retried without the option", PKG + "instrumentors/stream_options.py",
             '    retried = _retry(args[0] if args else kwargs["request"], response, response.read())',
             "    retried = None",
             ("tests/conformance", "-k", "inject_server_rejects or inject_refused")),
    Mutation("non-generation requests measured as LLM calls", PKG + "adapters/endpoints.py",
             '    if method.upper() != "POST":\n        return None', "    pass", ("tests/conformance",)),
    Mutation("the httpx layer counts a call the openai layer counts", PKG + "instrumentors/httpx.py",
             "    call = lifecycle.current_llm_call.get()", "    call = None",
             ("tests/test_httpx.py", "tests/test_openai_calls.py")),
    Mutation("telemetry-off check removed", PKG + "bootstrap.py",
             "        if not settings.enabled:\n            return None", "        pass",
             ("tests/test_lifecycle.py", "tests/test_manual_api.py")),
    Mutation("URL redaction off", PKG + "instrumentors/exchange.py",
             '"url.full": redact_url(str(self.url)),', '"url.full": str(self.url),',
             ("tests/test_httpx.py", "tests/test_leaks.py")),
    Mutation("the agent's own attributes skip the value-length limit", PKG + "report.py",
             " or not _unchanged(attributes, longest)", "", ("tests/test_metrics_exposition.py",)),
    Mutation("a reader-bound call's rate and gaps reach the histograms", PKG + "report.py",
             "    timed = not result.reader_bound", "    timed = True",
             ("tests/test_measurement_truth.py", "tests/test_result.py", "tests/test_metrics_exposition.py")),
    Mutation("a delegated call records its metrics twice", PKG + "tracker.py",
             "None if delegated else self._telemetry.metrics", "self._telemetry.metrics",
             ("tests/test_manual_api.py", "tests/test_lifecycle.py")),
    Mutation("the server's share of the TTFT counted from the call's start", PKG + "tracker.py",
             "server_ttft=ttft - sent if", "server_ttft=ttft if", ("tests/test_result.py", "tests/test_measurement_truth.py")),
    Mutation("a text over the span's length limit is set uncut", PKG + "report.py",
             "and str in kinds and max(", "and str in kinds and False and max(",
             ("tests/test_metrics_exposition.py",)),
    Mutation("a length limit always sends the end's attributes through the SDK's checks", PKG + "report.py",
             "or not _unchanged(attributes, longest)", "or longest is not None",
             ("tests/test_metrics_exposition.py",)),
    Mutation("an attribute of another type is set without the SDK's checks", PKG + "report.py",
             "    if not kinds <= _KINDS:\n        return False", "    if False:\n        return False",
             ("tests/test_metrics_exposition.py",)),
    Mutation("a name set again keeps its old place among the span's attributes", PKG + "report.py",
             "            del store[name]\n", "            pass\n", ("tests/test_metrics_exposition.py",)),
    Mutation("a tuple of mixed types is set without the SDK's checks", PKG + "report.py",
             " or any(type(item) is not first for item in value)", "", ("tests/test_metrics_exposition.py",)),
    Mutation("a text in a tuple over the length limit is set uncut", PKG + "report.py",
             "            if first is str and longest is not None", "            if False", ("tests/test_metrics_exposition.py",)),
    Mutation("attributes reported during the call are lost", PKG + "report.py",
             "            if annotations:  # (set first", "            if False:  # (set first", ("tests/test_httpx.py",)),
    Mutation("a name the call reported keeps its place when the end's value replaces it", PKG + "report.py",
             "attributes = {**{k: v for k, v in annotations.items() if k not in attributes}, **attributes}",
             "attributes = {**annotations, **attributes}", ("tests/test_result.py",)),
    Mutation("an adopted span takes the end's value of a name the call reported", PKG + "report.py",
             "                writer.set_attributes(annotations)\n            writer.set_attributes(attributes)",
             "                pass\n            writer.set_attributes(attributes)\n            writer.set_attributes(annotations or {})",
             ("tests/test_result.py",)),
    Mutation("a NaN latency counted in the first bucket", PKG + "metrics.py",
             "    if parts is None or value != value:", "    if parts is None:", ("tests/test_metrics_exposition.py",)),
    Mutation("one Prometheus child cache for every metric", PKG + "metrics.py",
             "        key = (name, *values)", "        key = values", ("tests/test_metrics_exposition.py",)),
    Mutation("an observation on a bound counted in the bucket above", PKG + "metrics.py",
             "    index = bisect_left(bounds, value)", "    index = bisect_right(bounds, value)",
             ("tests/test_metrics_exposition.py",)),
    Mutation("a call's latencies carry no exemplar", PKG + "metrics.py",
             "        buckets[index].set_exemplar(", "        (lambda exemplar: None)(", ("tests/test_metrics_exposition.py",)),
    Mutation("gaps above the last bound not counted", PKG + "metrics.py",
             "    counts.append(total - below)", "    counts.append(0)", ("tests/test_metrics_exposition.py",)),
    Mutation("response headers matched by their case", PKG + "instrumentors/exchange.py",
             "        name = raw_name.lower()", "        name = raw_name", ("tests/test_httpx.py",)),
    Mutation("SSE decoder forgets a CR that ended the last read", PKG + "adapters/sse.py",
             "self.idle = not self._buffer and not self._cr", "self.idle = not self._buffer", ("tests/test_adapters.py",)),
    Mutation("model label cap removed", PKG + "metrics.py",
             "        if next(self._tickets) < self.cap:", "        if True:",
             ("tests/test_reliability.py", "tests/test_openai_streams.py")),
    Mutation("a body re-read the SDK swallows (StreamConsumed) fails the attempt", PKG + "instrumentors/exchange.py",
             'if type(exc).__name__ == "StreamConsumed":', "if False:", ("tests/test_httpx.py",)),
    Mutation("traceparent not injected", PKG + "instrumentors/exchange.py",
             "                propagate.inject(headers, context=trace.set_span_in_context(span))",
             "                pass", ("tests/test_httpx.py",)),
    Mutation("a raw call that gets no response ends as closed early", PKG + "instrumentors/exchange.py",
             "        if self.owns_call and self.tracker is not None:\n            lifecycle.end(self.tracker, exc)",
             "        if False:\n            lifecycle.end(self.tracker, exc)", AIOHTTP),
    # -- aiohttp: reads timed as the data arrive ----------------------------------------------------
    Mutation("aiohttp's reads all look like data that waited", PKG + "instrumentors/aiohttp.py",
             "        timing.asked = timing.previous_read_time = self._last\n        timing.read_time = self._last = now",
             "        timing.asked = timing.previous_read_time = now\n        timing.read_time = self._last = now", AIOHTTP),
    Mutation("aiohttp's bytes that came with the headers are dropped", PKG + "instrumentors/aiohttp.py",
             "        for at, chunk in held:", "        for at, chunk in ():", AIOHTTP),
    Mutation("an aiohttp response released early ends as an error", PKG + "instrumentors/aiohttp.py",
             "        elif _closed_by_caller(exc):", "        elif False:", AIOHTTP),
    Mutation("an aiohttp read cancelled is closed early", PKG + "instrumentors/aiohttp.py",
             "names.CANCELLED if at is None and _cancelling() else", "names.CANCELLED if False else", AIOHTTP),
    Mutation("aiohttp's decoded body is decoded again", PKG + "instrumentors/aiohttp.py",
             "decoded=getattr(session, \"auto_decompress\", True) if decode is None else bool(decode))",
             "decoded=False)", AIOHTTP),
    Mutation("an SDK's call sent through aiohttp is measured twice", PKG + "instrumentors/aiohttp.py",
             "    if not _State.active or lifecycle.current_llm_call.get() is not None:",
             "    if not _State.active:", AIOHTTP),
    Mutation("a request made inside an LLM request is taken for its hop", PKG + "instrumentors/aiohttp.py",
             "        if _sending.get() is None:\n            return await wrapped(*args, **kwargs)",
             "        if True:\n            return await wrapped(*args, **kwargs)", AIOHTTP),
    # -- Bedrock through botocore ------------------------------------------------------------------------
    Mutation("a Bedrock event that waited for the caller looks like an arrival", PKG + "instrumentors/botocore.py",
             "        timing.asked, timing.previous_read_time = asked, returned",
             "        timing.asked, timing.previous_read_time = asked - 1.0, asked - 1.0", BEDROCK),
    Mutation("Bedrock's usage in the metadata event ignored", PKG + "adapters/bedrock.py",
             "        _read_usage(tracker, metadata.get(\"usage\"))", "        pass", BEDROCK),
    Mutation("Bedrock's latency in milliseconds taken for seconds", PKG + "adapters/bedrock.py",
             "        tracker.annotate({names.LLM_SERVER_TOTAL: latency / 1000})\n\n\ndef read_invocation_metrics",
             "        tracker.annotate({names.LLM_SERVER_TOTAL: latency})\n\n\ndef read_invocation_metrics", BEDROCK),
    Mutation("an InvokeModel body's family not recognised", PKG + "adapters/bedrock.py",
             "        if any(marker in model_id for marker in family.markers):", "        if False:", BEDROCK),
    Mutation("an InvokeModel body ends its call at its first read", PKG + "instrumentors/botocore.py",
             "    if (asked is None or asked < 0 or (not chunk and asked != 0)",
             "    if (True or asked is None or asked < 0 or (not chunk and asked != 0)", BEDROCK),
    Mutation("an application inference profile's family not told by the body", PKG + "adapters/bedrock.py",
             "            if any(key in body for key in family.body_keys):", "            if False:", BEDROCK),
    Mutation("Bedrock's prompt-cache reads left out of the input", PKG + "adapters/bedrock.py",
             "    tracker.usage(None if fresh is None else fresh + (read or 0) + (written or 0),",
             "    tracker.usage(fresh,", ("tests/test_bedrock.py",)),
    Mutation("an InvokeModel call ends when the caller reads its body", PKG + "instrumentors/botocore.py",
             "    lifecycle.end(tracker, at=body.returned_at)", "    lifecycle.end(tracker)", ("tests/test_bedrock.py",)),
    Mutation("the official botocore instrumentation still traces the operations measured", PKG + "instrumentors/botocore.py",
             "                return self._call_context.operation not in bedrock.OPERATIONS",
             "                return True", ("tests/test_bedrock.py",)),
    Mutation("a Bedrock stream dropped unread never ends", PKG + "instrumentors/botocore.py",
             "        _streams.pop(key, None)\n        lifecycle.suspend(tracker, names.ABANDONED",
             "        _streams.pop(key, None)\n        return\n        lifecycle.suspend(tracker, names.ABANDONED",
             ("tests/test_bedrock.py",)),
    Mutation("a botocore error's code and status not noted", PKG + "instrumentors/botocore.py",
             "            _guarded(_note_error, call.tracker, exc)", "            pass", ("tests/test_bedrock.py",)),
    Mutation("another instrumentation's wrapper taken for the layer's own", PKG + "instrumentors/patching.py",
             "        if current._self_wrapper is wrapper:\n            return True",
             "        if True:\n            return True", ("tests/test_bedrock.py",)),
    Mutation("the official botocore instrumentation's Bedrock spans kept", PKG + "instrumentors/botocore.py",
             "    when_imported(_OFFICIAL_EXTENSIONS, _take_over_from_official)", "    pass", ("tests/test_bedrock.py",)),
    Mutation("manual generator loses the thrown exception's handling", PKG + "manual.py",
             "            item = self.gen.throw(exc)", "            item = self.gen.send(None)",
             ("tests/test_manual_api.py",)),
    Mutation("monitor_llm_call injects a tracker argument", PKG + "manual.py",
             "                value = fn(*args, **kwargs)\n            if scope is not None:\n                _safely(scope.result, value)",
             "                value = fn(*args, **{**kwargs, '_tracker': scope})\n            if scope is not None:\n"
             "                _safely(scope.result, value)", ("tests/test_manual_api.py",)),
    # -- cost and exemplars ---------------------------------------------------------------------------
    Mutation("cost from the linear form's input and output rates swapped", PKG + "cost.py",
             "        return _Linear(float(base), float(per_input), float(per_output), float(per_read), float(per_write))",
             "        return _Linear(float(base), float(per_output), float(per_input), float(per_read), float(per_write))",
             ("tests/test_cost.py",)),
    Mutation("tiered prices taken as linear", PKG + "cost.py",
             "        if any(isinstance(value, self._library.types.TieredPrices) for value in vars(model_price).values()):\n"
             "            return None", "        if False:\n            return None", ("tests/test_cost.py",)),
    Mutation("cache counts beyond the input priced below zero", PKG + "cost.py",
             "        tokens = (max(input_tokens, cached), output_tokens or 0,", "        tokens = (input_tokens, output_tokens or 0,",
             ("tests/test_cost.py",)),
    Mutation("cache reads priced as plain input", PKG + "cost.py",
             "        per_read = (total(_MILLION, 0, _MILLION) - inputs) / _MILLION", "        per_read = 0",
             ("tests/test_cost.py",)),
    Mutation("the request model priced before the response's", PKG + "report.py",
             "(result.response_model, result.model)", "(result.model, result.response_model)", ("tests/test_cost.py",)),
    Mutation("an unpriced model costs zero", PKG + "report.py",
             "        return {names.LLM_COST_MATCHED: False}",
             "        return {names.LLM_COST_MATCHED: False, names.LLM_COST_USD: 0.0}", ("tests/test_cost.py",)),
    Mutation("the user's prices do not win", PKG + "cost.py",
             "            own = self._user.get(model.lower())", "            own = None", ("tests/test_cost.py",)),
    Mutation("a compatible server priced by any provider's model", PKG + "cost.py",
             'PROVIDER_IDS = {"openai": "openai", "openai_compatible": "openai",',
             'PROVIDER_IDS = {"openai": "openai", "openai_compatible": None,', ("tests/test_cost.py",)),
    Mutation("lookups unbounded", PKG + "cost.py",
             "        if self._snapshot is None or len(self._found) >= MAX_LOOKUPS:",
             "        if self._snapshot is None:", ("tests/test_cost.py",)),
    Mutation("exemplars from unsampled spans", PKG + "metrics.py",
             "        if not ids.trace_flags.sampled:\n            return None", "        if False:\n            return None",
             ("tests/test_exemplars.py",)),
    Mutation("the gaps' exemplar on the smallest gap", PKG + "metrics.py",
             "        largest = ordered[-1]", "        largest = ordered[0]", ("tests/test_exemplars.py",)),
    Mutation("OTLP points without the call's context", PKG + "metrics.py",
             "            otel.record(value, attributes, context=None if exemplar is None else exemplar.context)",
             "            otel.record(value, attributes)", ("tests/test_exemplars.py",)),
    Mutation("/metrics always in the classic format", PKG + "metrics.py",
             '    encoder, content_type = choose_encoder(accept or "")',
             '    encoder, content_type = choose_encoder("")', ("tests/test_processes.py", "tests/test_monitoring_stack.py")),
)


def copy_tree(destination: Path) -> None:
    """The working tree (what git tracks, as it is now, plus untracked files it does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def run(mutation: Mutation, python: str) -> tuple[str, str, float]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutant-") as folder:
        tree = Path(folder)
        copy_tree(tree)
        target = tree / mutation.path
        text = target.read_text()
        if text.count(mutation.before) != 1:
            return "stale", f"the text to mutate occurs {text.count(mutation.before)} times", 0.0
        target.write_text(text.replace(mutation.before, mutation.after))
        env = {**os.environ, "PYTHONPATH": str(tree / "src"), "NEXENT_MUTANT": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        result = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                                 *mutation.tests], cwd=tree, env=env, capture_output=True, text=True, timeout=900)
        verdict = {0: "SURVIVED", 1: "killed"}.get(result.returncode, f"error ({result.returncode})")
        summary = (result.stdout.strip().splitlines() or [""])[-1]
    return verdict, summary, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="run only mutations whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or any(o in m.name for o in args.only)]
    if args.list:
        for mutation in chosen:
            print(f"{mutation.name:60} {mutation.path.removeprefix(PKG)}")
        return 0
    python = str(ROOT / ".venv" / "bin" / "python")
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda m: (m, run(m, python)), chosen))
    killed = survived = 0
    for mutation, (verdict, summary, seconds) in results:
        killed += verdict == "killed"
        survived += verdict == "SURVIVED"
        print(f"{verdict:9} {seconds:5.0f}s  {mutation.name}  [{summary}]")
    counted = killed + survived
    print(f"\n{killed} of {counted} mutations killed ({100 * killed / max(counted, 1):.0f} %);"
          f" {len(results) - counted} could not run")
    for mutation, (verdict, _, _) in results:
        if verdict != "killed":
            print(f"  {verdict}: {mutation.name} ({mutation.path.removeprefix(PKG)})")
    return 0 if counted and killed == counted else 1


if __name__ == "__main__":
    sys.exit(main())

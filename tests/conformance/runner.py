"""Runs conformance cases in this process, one after the other, and writes what each caller saw.

Usage: ``python runner.py OUT.jsonl [CASE ...]`` (all cases when none is named). Run it bare and
with ``ENABLE_TELEMETRY=true`` (the agent then loads through its ``.pth`` hook): everything else
is identical. Each case runs inside a span ``case:<name>``, a no-op bare, the parent of the
case's LLM spans under the agent. One JSON line per case: ``{"name", "skip", "seen", "raised",
"stderr", "times", "seconds"}``; a line ``{"started": name}`` before each, so a crash points at
its case.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import inspect
import io
import json
import logging
import sys
import time
from typing import Any

import kit
from opentelemetry import trace

CASE_TIMEOUT = 30  # seconds: a case that hangs this long ends the process (the test resumes after it)


class _Logs(logging.Handler):
    """OpenTelemetry's own warnings (e.g. an event added to an ended span), attributed to the case."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")
        print(f"[{record.name}] {record.getMessage()}", file=sys.__stderr__)


def run(case: kit.Case, logs: _Logs) -> dict[str, Any]:
    seen = kit.Seen()
    stderr = io.StringIO()
    result: dict[str, Any] = {"name": case.name, "skip": None, "raised": None}
    logs.lines = []
    with contextlib.redirect_stderr(stderr):
        try:
            if inspect.iscoroutinefunction(case.fn):
                asyncio.run(case.fn(seen))
            else:
                case.fn(seen)
        except kit.Unsupported as reason:
            result["skip"] = str(reason)
        except (Exception, asyncio.CancelledError) as error:
            result["raised"] = kit.describe_error(error)
        gc.collect()  # what the case dropped is collected now, in both runs alike
    gc.freeze()  # and what is left (lazily loaded SDK types, kept streams) is not scanned again
    result["seen"] = seen.entries
    result["times"] = seen.times
    result["stderr"] = kit.tidy_stderr(stderr.getvalue()) + logs.lines
    return result


def main() -> None:
    out_path, names = sys.argv[1], sys.argv[2:]
    cases = kit.load_cases()
    kit.public_classes()
    gc.collect()
    gc.freeze()  # what is loaded by now stays: the collection after each case need not scan it again
    logs = _Logs()
    logging.getLogger("opentelemetry").addHandler(logs)
    tracer = trace.get_tracer("conformance")
    with open(out_path, "a", encoding="utf-8") as out:
        for name in names or list(cases):
            out.write(json.dumps({"started": name}) + "\n")
            out.flush()
            print(f"== case:{name}", file=sys.__stderr__, flush=True)
            faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
            started = time.perf_counter()
            with tracer.start_as_current_span(f"case:{name}"):
                result = run(cases[name], logs)
            result["seconds"] = round(time.perf_counter() - started, 3)  # for the curious; not compared
            faulthandler.cancel_dump_traceback_later()
            out.write(json.dumps(result) + "\n")
            out.flush()


if __name__ == "__main__":
    main()

"""Keeping our own bugs out of the host application: log once per kind, count, never raise."""

from __future__ import annotations

import logging
from collections import Counter

from . import guest

logger = logging.getLogger("nexent_autoinstrument")

#: How often each kind of internal error happened in this process (exposed on /metrics).
internal_errors: Counter[str] = Counter()
#: Warnings from exporters (an unreachable collector): only the first is logged, all are counted.
export_warnings: Counter[str] = Counter()


def report_internal_error(where: str, exc: BaseException) -> None:
    """Record a failure inside the agent; the first of each kind is logged with its traceback
    (by the agent's thread when this runs inside the garbage collector: logging takes locks)."""
    try:
        internal_errors[where] += 1
        if internal_errors[where] == 1:
            if guest.in_collector():
                guest.post(_log, where, exc)
            else:
                _log(where, exc)
    except Exception:  # pragma: no cover - logging itself failed; nothing more we can do safely
        pass


def _log(where: str, exc: BaseException) -> None:
    logger.warning("nexent-autoinstrument: internal error in %s (reported once, counted after)", where, exc_info=exc)

"""What clients send, in the log: throttled, and (in the text format) escaped.

A client can send thousands of refused requests a second. Each is refused and
counted, but :class:`ThrottledLog` writes only the first line of each (sender,
reason) every :data:`LOG_EVERY` seconds; the next line it writes for that pair
says how many it left out, and :attr:`ThrottledLog.suppressed` counts them all
for the metrics. Topics, client ids and user names come from clients and may
hold line breaks or terminal escapes: :func:`printable` is what the text log
format applies to every message, so a forged line cannot appear (JSON logs are
escaped by the encoder).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter

LOG_EVERY = 10.0
_MOST_KEYS = 10_000  # many senders: forget, rather than grow


def printable(text: str) -> str:
    """``text`` with every character that is not printable written as its escape (``\\n``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class ThrottledLog:
    """Warnings about a sender, at most one per (sender, reason) every ``every`` seconds."""

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY) -> None:
        self._logger = logger
        self._every = every
        self._last: dict[tuple[str, str], float] = {}
        self._left_out: Counter[tuple[str, str]] = Counter()
        self.suppressed = 0
        """Lines not written, all senders and reasons."""

    def write(self, sender: str, reason: str, message: str, *args: object) -> None:
        now = time.monotonic()
        key = (sender, reason)
        if len(self._last) > _MOST_KEYS:
            self._last.clear()
            self._left_out.clear()
        if now - self._last.get(key, -math.inf) < self._every:
            self._left_out[key] += 1
            self.suppressed += 1
            return
        self._last[key] = now
        left_out = self._left_out.pop(key, 0)
        if left_out:
            message, args = f"{message} (and %d more like it not logged)", (*args, left_out)
        self._logger.warning(message, *args)
